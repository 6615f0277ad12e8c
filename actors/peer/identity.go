package peer

import (
	"crypto/ed25519"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"os"

	"github.com/google/uuid"

	"github.com/fangd/fangd/store"
	"github.com/fangd/fangd/transport/ofp"
)

// identityName is the vault entry holding the node's identity, the same
// fields as LibreFang's data/peer_keypair.json. The private key is a
// secret, so it lives in the vault (encrypted at rest), not in a file.
const identityName = "network/identity"

type storedIdentity struct {
	PublicKey  string `json:"public_key"`  // base64, 32 bytes
	PrivateKey string `json:"private_key"` // base64 of the 32-byte seed
	NodeID     string `json:"node_id"`
}

// LoadIdentity reads the node identity from the vault, creating it (a
// fresh Ed25519 key and a UUID node id) on first start. A restart keeps
// the same id and key, so peers' pins of this node stay valid. nodeName
// is the name peers see: LibreFang uses the host name; "" means that.
func LoadIdentity(vault *store.Vault, nodeName string) (ofp.Identity, error) {
	if nodeName == "" {
		if h, err := os.Hostname(); err == nil {
			nodeName = h
		} else {
			nodeName = "fangd"
		}
	}
	var id ofp.Identity
	err := vault.With(identityName, func(raw []byte) error {
		var s storedIdentity
		if err := json.Unmarshal(raw, &s); err != nil {
			return fmt.Errorf("node identity in the vault does not decode: %w", err)
		}
		seed, err := base64.StdEncoding.DecodeString(s.PrivateKey)
		if err != nil || len(seed) != ed25519.SeedSize {
			return errors.New("node identity in the vault has no usable private key")
		}
		id = ofp.Identity{NodeID: s.NodeID, NodeName: nodeName, Key: ed25519.NewKeyFromSeed(seed)}
		store.Wipe(seed)
		return nil
	})
	if err == nil {
		return id, nil
	}
	if !errors.Is(err, store.ErrNotFound) {
		return id, err
	}
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return id, err
	}
	s := storedIdentity{PublicKey: base64.StdEncoding.EncodeToString(pub),
		PrivateKey: base64.StdEncoding.EncodeToString(priv.Seed()), NodeID: uuid.NewString()}
	raw, err := json.Marshal(s)
	if err != nil {
		return id, err
	}
	// Called once at start-up, before any actor runs: a synced write here
	// holds up nothing but the start.
	if err := vault.Put(identityName, raw); err != nil {
		return id, fmt.Errorf("store the node identity: %w", err)
	}
	return ofp.Identity{NodeID: s.NodeID, NodeName: nodeName, Key: priv}, nil
}
