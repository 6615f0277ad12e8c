package peer

import (
	"crypto/ed25519"
	"strings"
	"testing"

	"github.com/fangd/fangd/store"
	"github.com/fangd/fangd/transport/ofp"
)

func openTestDB(t *testing.T, dir string) *store.DB {
	t.Helper()
	db, err := store.Open(store.DefaultOptions(dir))
	if err != nil {
		t.Fatal(err)
	}
	return db
}

func pubB64(t *testing.T) string {
	t.Helper()
	_, priv, err := ed25519.GenerateKey(nil)
	if err != nil {
		t.Fatal(err)
	}
	return ofp.PublicKeyB64(priv)
}

// A pin survives a restart (it is durable when Check returns), refuses
// another key or none for the pinned id, and Forget lets the next key in.
func TestPinsPersistAndRefuse(t *testing.T) {
	dir := t.TempDir()
	db := openTestDB(t, dir)
	pins, err := OpenPins(db)
	if err != nil {
		t.Fatal(err)
	}
	k1, k2 := pubB64(t), pubB64(t)
	if err := pins.Check("node-1", k1); err != nil {
		t.Fatal(err)
	}
	if err := pins.Check("node-2", ""); err != nil || pins.Len() != 1 {
		t.Fatalf("a node with no key is not pinned: %v, %d pins", err, pins.Len())
	}
	db.Close()

	db = openTestDB(t, dir)
	defer db.Close()
	pins, err = OpenPins(db)
	if err != nil {
		t.Fatal(err)
	}
	if err := pins.Check("node-1", k1); err != nil {
		t.Fatalf("the pinned key after a restart: %v", err)
	}
	if err := pins.Check("node-1", k2); err == nil || !strings.Contains(err.Error(), "different identity key") {
		t.Fatalf("another key for a pinned id: %v", err)
	}
	if err := pins.Check("node-1", ""); err == nil || !strings.Contains(err.Error(), "sent none") {
		t.Fatalf("no key for a pinned id: %v", err)
	}
	list := pins.List()
	if len(list) != 1 || list[0].NodeID != "node-1" || list[0].Fingerprint != ofp.Fingerprint(k1) || list[0].PublicKey != k1 {
		t.Fatalf("list %+v", list)
	}
	if _, err := pins.Forget(t.Context(), "node-9"); err == nil {
		t.Fatal("forgetting an unknown pin succeeded")
	}
	if _, err := pins.Forget(t.Context(), "node-1"); err != nil {
		t.Fatal(err)
	}
	db.Close()
	db = openTestDB(t, dir)
	defer db.Close()
	pins, _ = OpenPins(db)
	if err := pins.Check("node-1", k2); err != nil || pins.List()[0].PublicKey != k2 {
		t.Fatalf("after forget the new key is pinned: %v", err)
	}
}

// The identity is created once and the same on the next start.
func TestIdentityKeptInTheVault(t *testing.T) {
	home := t.TempDir()
	db := openTestDB(t, store.DataDir(home))
	defer db.Close()
	vault, err := store.OpenVault(db, home)
	if err != nil {
		t.Fatal(err)
	}
	a, err := LoadIdentity(vault, "node-a")
	if err != nil {
		t.Fatal(err)
	}
	b, err := LoadIdentity(vault, "")
	if err != nil {
		t.Fatal(err)
	}
	if a.NodeID == "" || a.NodeID != b.NodeID || !a.Key.Equal(b.Key) || a.NodeName != "node-a" || b.NodeName == "" {
		t.Fatalf("identities differ: %s/%s %s/%s", a.NodeID, a.NodeName, b.NodeID, b.NodeName)
	}
}
