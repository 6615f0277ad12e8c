package store

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"

	badger "github.com/dgraph-io/badger/v4"
	"github.com/dgraph-io/badger/v4/options"
	"github.com/dgraph-io/badger/v4/table"
	"github.com/dgraph-io/ristretto/v2/z"
)

// checkTables opens every table the MANIFEST lists, as Badger will, and
// verifies each block's checksum, before Badger opens the directory.
// Badger opens tables in goroutines of its own, where a damaged table (a
// truncated file) panics beyond any recover of the caller's; and a table
// whose checksum fails it logs and then ignores, serving the store without
// it. Here each failure is an error naming the file.
func checkTables(dir string, bo badger.Options) error {
	mf, err := os.Open(filepath.Join(dir, "MANIFEST"))
	if os.IsNotExist(err) {
		return nil // a new store
	}
	if err != nil {
		return err
	}
	manifest, _, err := badger.ReplayManifestFile(mf, bo.ExternalMagicVersion, bo)
	mf.Close()
	if err != nil {
		return fmt.Errorf("MANIFEST: %w", err)
	}
	for id, tm := range manifest.Tables {
		name := table.NewFilename(id, dir)
		if err := checkTable(name, tm, bo); err != nil {
			return fmt.Errorf("table %s: %w", filepath.Base(name), err)
		}
	}
	return nil
}

func checkTable(name string, tm badger.TableManifest, bo badger.Options) (err error) {
	f, err := os.Open(name)
	if err != nil {
		return err
	}
	defer f.Close()
	data, err := os.ReadFile(name)
	if err != nil {
		return err
	}
	if tm.KeyID != 0 {
		return nil // encrypted tables: fangd does not use Badger's encryption
	}
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("unreadable (%v)", r)
		}
	}()
	t, err := table.OpenTable(&z.MmapFile{Data: data, Fd: f}, table.Options{
		ReadOnly:    true,
		TableSize:   uint64(bo.BaseTableSize),
		BlockSize:   bo.BlockSize,
		ChkMode:     options.OnTableAndBlockRead,
		Compression: tm.Compression,
	})
	if err != nil {
		return err
	}
	_ = t // the data is ours, not a mapping: nothing to release
	return nil
}

// openErrors collects what Badger logs as errors while it opens: it
// reports some damage (a table whose checksum fails, which it then leaves
// out) only in its log.
type openErrors struct {
	mu   sync.Mutex
	msgs []string
	on   bool
}

func (o *openErrors) add(msg string) {
	o.mu.Lock()
	if o.on {
		o.msgs = append(o.msgs, msg)
	}
	o.mu.Unlock()
}

// stop ends collection and returns the damage reported, if any.
func (o *openErrors) stop() error {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.on = false
	for _, m := range o.msgs {
		if strings.Contains(m, "CHECKSUM_MISMATCH") || strings.Contains(m, "Ignoring table") {
			return fmt.Errorf("%s", strings.Join(o.msgs, "; "))
		}
	}
	return nil
}
