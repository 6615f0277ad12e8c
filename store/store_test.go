package store

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

type widget struct {
	Name  string `json:"name"`
	Count int    `json:"count"`
}

func openTemp(t *testing.T) (*DB, string) {
	t.Helper()
	home := t.TempDir()
	db, err := Open(DefaultOptions(DataDir(home)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return db, home
}

func TestCollectionCRUDAndPaging(t *testing.T) {
	db, _ := openTemp(t)
	c := NewCollection[widget](db, "widgets")
	other := NewCollection[widget](db, "widgetsx") // a prefix of a prefix must not leak
	other.Put("a", widget{Name: "intruder"})
	if _, err := c.Get("missing"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("missing get: %v", err)
	}
	for i := range 25 {
		if err := c.Put(fmt.Sprintf("w%02d", i), widget{Name: fmt.Sprint(i), Count: i}); err != nil {
			t.Fatal(err)
		}
	}
	got, err := c.Get("w07")
	if err != nil || got.Count != 7 {
		t.Fatalf("get w07 = %+v %v", got, err)
	}
	var all []string
	after := ""
	for pages := 0; ; pages++ {
		p, err := c.List("", after, 10)
		if err != nil {
			t.Fatal(err)
		}
		all = append(all, p.IDs...)
		if p.Next == "" {
			if pages != 2 {
				t.Fatalf("%d pages, want 3", pages+1)
			}
			break
		}
		after = p.Next
	}
	if len(all) != 25 || all[0] != "w00" || all[24] != "w24" {
		t.Fatalf("paged ids = %v", all)
	}
	p, _ := c.List("w1", "", 100)
	if len(p.Items) != 10 || p.Items[0].Count != 10 {
		t.Fatalf("prefix list = %+v", p.IDs)
	}
	if err := c.Delete("w07"); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Get("w07"); !errors.Is(err, ErrNotFound) {
		t.Fatal("deleted value still there")
	}
	if _, err := c.List("", "", 0); err == nil {
		t.Fatal("limit 0 accepted")
	}
}

func TestWritesSurviveReopen(t *testing.T) {
	home := t.TempDir()
	db, _ := Open(DefaultOptions(DataDir(home)))
	NewCollection[widget](db, "w").Put("x", widget{Count: 42})
	db.Close()
	db, err := Open(DefaultOptions(DataDir(home)))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if w, err := NewCollection[widget](db, "w").Get("x"); err != nil || w.Count != 42 {
		t.Fatalf("after reopen: %+v %v", w, err)
	}
}

func TestVaultRoundTripAndWipe(t *testing.T) {
	db, home := openTemp(t)
	t.Setenv(VaultKeyEnv, "")
	v, err := OpenVault(db, home)
	if err != nil {
		t.Fatal(err)
	}
	secret := []byte("xoxb-very-secret-token")
	if err := v.Put("channel/slack/token", secret); err != nil {
		t.Fatal(err)
	}
	if strings.Trim(string(secret), "\x00") != "" {
		t.Fatal("Put did not wipe the plaintext it was handed")
	}
	var seen []byte
	err = v.With("channel/slack/token", func(s []byte) error {
		if string(s) != "xoxb-very-secret-token" {
			t.Fatalf("decrypted %q", s)
		}
		seen = s
		return nil
	})
	if err != nil || strings.Trim(string(seen), "\x00") != "" {
		t.Fatalf("With: %v, buffer after use %q", err, seen)
	}
	// The ciphertext at rest does not contain the secret.
	db.View(func(tx *Txn) error {
		raw, _ := tx.Get([]byte("vault/channel/slack/token"))
		if strings.Contains(string(raw), "very-secret") {
			t.Fatal("secret stored in plaintext")
		}
		return nil
	})
	if ok, _ := v.Has("channel/slack/token"); !ok {
		t.Fatal("Has = false")
	}
	v.Delete("channel/slack/token")
	if ok, _ := v.Has("channel/slack/token"); ok {
		t.Fatal("Has after delete")
	}
	fi, err := os.Stat(filepath.Join(home, "vault.key"))
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("key file: %v %v", err, fi)
	}
}

func TestVaultRefusesSwappedCiphertextAndWrongKey(t *testing.T) {
	db, home := openTemp(t)
	t.Setenv(VaultKeyEnv, strings.Repeat("ab", 32))
	v, err := OpenVault(db, home)
	if err != nil {
		t.Fatal(err)
	}
	v.Put("a", []byte("alpha"))
	// Move a's ciphertext under name b: the name is authenticated data.
	db.Update(func(tx *Txn) error {
		raw, _ := tx.Get([]byte("vault/a"))
		return tx.Set([]byte("vault/b"), raw)
	})
	if err := v.With("b", func([]byte) error { return nil }); err == nil {
		t.Fatal("swapped ciphertext decrypted")
	}
	t.Setenv(VaultKeyEnv, strings.Repeat("cd", 32))
	other, _ := OpenVault(db, home)
	err = other.With("a", func([]byte) error { return nil })
	if err == nil || strings.Contains(err.Error(), "alpha") {
		t.Fatalf("wrong key: %v", err)
	}
}

func TestVaultKeyValidation(t *testing.T) {
	db, home := openTemp(t)
	t.Setenv(VaultKeyEnv, "too-short")
	if _, err := OpenVault(db, home); err == nil {
		t.Fatal("short env key accepted")
	}
	t.Setenv(VaultKeyEnv, "")
	os.WriteFile(filepath.Join(home, "vault.key"), []byte(strings.Repeat("ab", 32)), 0o644)
	if _, err := OpenVault(db, home); err == nil || !strings.Contains(err.Error(), "chmod 600") {
		t.Fatalf("world-readable key file: %v", err)
	}
}

func TestAuditLogScanOrder(t *testing.T) {
	db, _ := openTemp(t)
	al := db.AuditLog()
	if _, err := al.Last(); !errors.Is(err, ErrNotFound) {
		t.Fatalf("empty Last: %v", err)
	}
	var batch []AuditRecord
	for i := uint64(1); i <= 300; i++ { // crosses a byte boundary in the key
		batch = append(batch, AuditRecord{ID: i, Raw: []byte(fmt.Sprint(i))})
	}
	al.Append(batch)
	last, _ := al.Last()
	if last.ID != 300 {
		t.Fatalf("Last = %d", last.ID)
	}
	var ids []uint64
	al.Scan(255, false, func(r AuditRecord) (bool, error) { ids = append(ids, r.ID); return len(ids) < 3, nil })
	if fmt.Sprint(ids) != "[255 256 257]" {
		t.Fatalf("forward scan = %v", ids)
	}
	ids = nil
	al.Scan(0, true, func(r AuditRecord) (bool, error) { ids = append(ids, r.ID); return len(ids) < 2, nil })
	if fmt.Sprint(ids) != "[300 299]" {
		t.Fatalf("reverse scan = %v", ids)
	}
}

func TestOperationsAfterCloseFailInsteadOfPanicking(t *testing.T) {
	db, err := Open(DefaultOptions(t.TempDir()))
	if err != nil {
		t.Fatal(err)
	}
	c := NewCollection[widget](db, "w")
	c.Put("a", widget{})
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	if err := db.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	if _, err := c.List("", "", 10); !errors.Is(err, ErrClosed) {
		t.Fatalf("List after close: %v", err)
	}
	if err := c.Put("b", widget{}); !errors.Is(err, ErrClosed) {
		t.Fatalf("Put after close: %v", err)
	}
	if err := db.AuditLog().Scan(0, false, func(AuditRecord) (bool, error) { return true, nil }); !errors.Is(err, ErrClosed) {
		t.Fatalf("Scan after close: %v", err)
	}
}
