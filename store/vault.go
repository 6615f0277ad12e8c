package store

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// VaultKeyEnv names the environment variable that may hold the vault key
// (64 hex characters or base64 of 32 bytes).
const VaultKeyEnv = "FANGD_VAULT_KEY"

const vaultPrefix = "vault/"

// Vault keeps secrets (tokens, passwords, TOTP seeds) encrypted at rest with
// AES-256-GCM. The secret's name is the additional authenticated data, so a
// ciphertext moved to another name fails to open. Plaintext handed to Put
// and shown to With callbacks is wiped after use.
type Vault struct {
	db   *DB
	aead cipher.AEAD
}

// OpenVault loads the vault key from FANGD_VAULT_KEY, or from the 0600 key
// file in home (created on first start).
func OpenVault(db *DB, home string) (*Vault, error) {
	key, err := vaultKey(home)
	if err != nil {
		return nil, err
	}
	defer Wipe(key)
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, err
	}
	aead, err := cipher.NewGCM(block)
	if err != nil {
		return nil, err
	}
	return &Vault{db: db, aead: aead}, nil
}

func vaultKey(home string) ([]byte, error) {
	if env := strings.TrimSpace(os.Getenv(VaultKeyEnv)); env != "" {
		return decodeVaultKey(env)
	}
	path := filepath.Join(home, "vault.key")
	raw, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return createVaultKey(path)
	}
	if err != nil {
		return nil, fmt.Errorf("read vault key: %w", err)
	}
	if fi, err := os.Stat(path); err == nil && fi.Mode().Perm()&0o077 != 0 {
		return nil, fmt.Errorf("vault key %s is readable by others (mode %v); chmod 600 it", path, fi.Mode().Perm())
	}
	defer Wipe(raw)
	return decodeVaultKey(strings.TrimSpace(string(raw)))
}

func decodeVaultKey(s string) ([]byte, error) {
	if k, err := hex.DecodeString(s); err == nil && len(k) == 32 {
		return k, nil
	}
	if k, err := base64.StdEncoding.DecodeString(s); err == nil && len(k) == 32 {
		return k, nil
	}
	return nil, errors.New("vault key must be 32 bytes as 64 hex characters or base64")
}

func createVaultKey(path string) ([]byte, error) {
	key := make([]byte, 32)
	if _, err := rand.Read(key); err != nil {
		return nil, err
	}
	text := []byte(hex.EncodeToString(key) + "\n")
	defer Wipe(text)
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return nil, fmt.Errorf("create vault key: %w", err)
	}
	if _, err := f.Write(text); err != nil {
		f.Close()
		return nil, err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return nil, err
	}
	return key, f.Close()
}

// Put encrypts plaintext under name and wipes plaintext.
func (v *Vault) Put(name string, plaintext []byte) error {
	sealed, err := v.Seal(name, plaintext)
	if err != nil {
		return err
	}
	return v.db.Update(func(tx *Txn) error { return tx.Set([]byte(vaultPrefix+name), sealed) })
}

// Seal encrypts plaintext under name without storing it and wipes
// plaintext: cluster mode keeps channel secrets sealed in etcd, readable
// only by nodes that share this vault key (docs/cluster.md).
func (v *Vault) Seal(name string, plaintext []byte) ([]byte, error) {
	defer Wipe(plaintext)
	nonce := make([]byte, v.aead.NonceSize())
	if _, err := rand.Read(nonce); err != nil {
		return nil, err
	}
	return v.aead.Seal(nonce, nonce, plaintext, []byte(name)), nil
}

// With decrypts the secret name, passes it to fn and wipes it when fn returns.
// fn must not keep the slice.
func (v *Vault) With(name string, fn func(secret []byte) error) error {
	var sealed []byte
	err := v.db.View(func(tx *Txn) error {
		var err error
		sealed, err = tx.Get([]byte(vaultPrefix + name))
		return err
	})
	if err != nil {
		return err
	}
	return v.Open(name, sealed, fn)
}

// Open decrypts what Seal sealed under name, passes it to fn and wipes it
// when fn returns. fn must not keep the slice.
func (v *Vault) Open(name string, sealed []byte, fn func(secret []byte) error) error {
	ns := v.aead.NonceSize()
	if len(sealed) < ns {
		return fmt.Errorf("vault entry %q is corrupt", name)
	}
	plain, err := v.aead.Open(nil, sealed[:ns], sealed[ns:], []byte(name))
	if err != nil {
		return fmt.Errorf("vault entry %q does not decrypt with this key", name)
	}
	defer Wipe(plain)
	return fn(plain)
}

// Has reports whether a secret named name is stored.
func (v *Vault) Has(name string) (bool, error) {
	err := v.db.View(func(tx *Txn) error {
		_, err := tx.Get([]byte(vaultPrefix + name))
		return err
	})
	if errors.Is(err, ErrNotFound) {
		return false, nil
	}
	return err == nil, err
}

// Delete removes the secret name.
func (v *Vault) Delete(name string) error {
	return v.db.Update(func(tx *Txn) error { return tx.Delete([]byte(vaultPrefix + name)) })
}

// Wipe overwrites b with zeros.
func Wipe(b []byte) {
	clear(b)
}
