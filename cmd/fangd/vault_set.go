package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/fangd/fangd/store"
)

// vaultSetCommand stores a config secret (one that config.toml names as
// "vault:NAME") in a stopped daemon's vault, read from stdin so that it
// never appears in a command line or a shell history.
type vaultSetCommand struct {
	home string
	in   io.Reader
}

func (c *vaultSetCommand) Run(_ context.Context, args []string) error {
	if len(args) != 1 || !validVaultName(args[0]) {
		return errors.New("vault set: want one NAME (letters, digits, '-', '_', '.'); the secret is read from stdin")
	}
	name := args[0]
	line, err := bufio.NewReader(c.in).ReadString('\n')
	if err != nil && !errors.Is(err, io.EOF) {
		return err
	}
	secret := []byte(strings.TrimRight(line, "\r\n"))
	if len(secret) == 0 {
		return errors.New("vault set: stdin held no secret")
	}
	home, err := resolveHome(c.home)
	if err != nil {
		return err
	}
	lock, err := lockHome(home)
	if err != nil {
		return err
	}
	defer lock.release()
	db, err := store.Open(store.DefaultOptions(store.DataDir(home)))
	if err != nil {
		return err
	}
	defer db.Close()
	vault, err := store.OpenVault(db, home)
	if err != nil {
		return err
	}
	if err := vault.Put(configSecretName(name), secret); err != nil { // wipes secret
		return err
	}
	fmt.Fprintf(os.Stderr, "fangd: stored vault:%s\n", name)
	return nil
}

func validVaultName(s string) bool {
	if s == "" || len(s) > 128 {
		return false
	}
	for _, r := range s {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '_' || r == '.') {
			return false
		}
	}
	return true
}
