// Package storetest opens a fangd home's store (and vault) for tests, as
// the daemon lays them out, failing the test on error. The caller closes
// the store: often before something else opens the same home (Badger
// takes a directory lock), so it is not left to the test's cleanup.
package storetest

import (
	"testing"

	"github.com/fangd/fangd/store"
)

// Open opens home's store (store.DataDir(home)) with the default options.
func Open(t testing.TB, home string) *store.DB {
	t.Helper()
	db, err := store.Open(store.DefaultOptions(store.DataDir(home)))
	if err != nil {
		t.Fatal(err)
	}
	return db
}

// OpenWithVault is Open and the home's secrets vault.
func OpenWithVault(t testing.TB, home string) (*store.DB, *store.Vault) {
	t.Helper()
	db := Open(t, home)
	vault, err := store.OpenVault(db, home)
	if err != nil {
		db.Close()
		t.Fatal(err)
	}
	return db, vault
}
