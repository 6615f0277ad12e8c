// Package store is fangd's only door to disk: an embedded Badger database
// with typed collections, the audit log's storage and the secret vault.
//
// Every write that a caller may acknowledge is synced before it returns:
// the database is opened with SyncWrites, so a committed transaction is on
// disk when Commit returns.
package store

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	badger "github.com/dgraph-io/badger/v4"
	"github.com/rs/zerolog"
)

// ErrNotFound is returned by reads of a key that does not exist.
var ErrNotFound = errors.New("not found")

// Options sizes Badger for a daemon. Badger's defaults grow RSS to hundreds
// of MiB under write load, so every cache is set explicitly.
type Options struct {
	Dir            string
	MemTableSize   int64
	BlockCacheSize int64
	IndexCacheSize int64
	Logger         zerolog.Logger
}

// DefaultOptions returns daemon-sized options for the data directory dir.
func DefaultOptions(dir string) Options {
	return Options{
		Dir:            dir,
		MemTableSize:   8 << 20,
		BlockCacheSize: 16 << 20,
		IndexCacheSize: 8 << 20,
		Logger:         zerolog.Nop(),
	}
}

// ErrClosed is returned by every operation on a store that was closed.
var ErrClosed = errors.New("store is closed")

// DB is the open store.
type DB struct {
	bdb      *badger.DB
	dir      string
	memtable int64
	// Close waits for running transactions, and later ones fail with
	// ErrClosed: Badger itself panics when an iterator is opened on a closed
	// database, which a late goroutine (a supervisor's delayed restart, an
	// adapter loop) could otherwise do during shutdown. A counter rather
	// than a RWMutex, so that a transaction opened inside another's callback
	// cannot deadlock against a waiting Close.
	closed   atomic.Bool
	inflight atomic.Int64
	closeMu  sync.Mutex
}

// enter registers a running operation; false when the store is closed.
func (db *DB) enter() bool {
	db.inflight.Add(1)
	if db.closed.Load() {
		db.inflight.Add(-1)
		return false
	}
	return true
}

func (db *DB) leave() { db.inflight.Add(-1) }

// Open opens (creating if needed) the store in opts.Dir.
func Open(opts Options) (*DB, error) {
	if err := os.MkdirAll(opts.Dir, 0o700); err != nil {
		return nil, fmt.Errorf("create data dir: %w", err)
	}
	bo := badger.DefaultOptions(opts.Dir).
		WithSyncWrites(true).
		WithMemTableSize(opts.MemTableSize).
		WithNumMemtables(2).
		WithNumLevelZeroTables(2).
		WithNumLevelZeroTablesStall(8).
		WithBlockCacheSize(opts.BlockCacheSize).
		WithIndexCacheSize(opts.IndexCacheSize).
		WithValueLogFileSize(64 << 20).
		WithBaseTableSize(2 << 20).
		WithNumCompactors(2).
		WithNumGoroutines(4).
		WithMetricsEnabled(false).
		WithLogger(badgerLogger{opts.Logger})
	bdb, err := badger.Open(bo)
	if err != nil {
		return nil, fmt.Errorf("open badger in %s: %w", opts.Dir, err)
	}
	return &DB{bdb: bdb, dir: opts.Dir, memtable: opts.MemTableSize}, nil
}

// MaxBatchBytes is how many bytes of keys and values one transaction may
// safely carry: Badger refuses a transaction over 15% of a memtable, and
// counts some overhead per entry on top of the data.
func (db *DB) MaxBatchBytes() int { return int(db.memtable / 10) }

// Close flushes and closes the database.
func (db *DB) Close() error {
	db.closeMu.Lock()
	defer db.closeMu.Unlock()
	if db.closed.Swap(true) {
		return nil
	}
	for deadline := time.Now().Add(10 * time.Second); db.inflight.Load() > 0 && time.Now().Before(deadline); {
		time.Sleep(time.Millisecond)
	}
	return db.bdb.Close()
}

// Dir is the data directory.
func (db *DB) Dir() string { return db.dir }

// Size is the disk space the data directory uses in bytes, measured now:
// allocated blocks, since Badger preallocates sparse value-log files and
// refreshes its own Size only once a minute.
func (db *DB) Size() int64 {
	var total int64
	entries, err := os.ReadDir(db.dir)
	if err != nil {
		return 0
	}
	for _, e := range entries {
		if info, err := e.Info(); err == nil && info.Mode().IsRegular() {
			if st, ok := info.Sys().(*syscall.Stat_t); ok {
				total += st.Blocks * 512
			} else {
				total += info.Size()
			}
		}
	}
	return total
}

// Update runs fn in one synced read-write transaction.
func (db *DB) Update(fn func(txn *Txn) error) error {
	if !db.enter() {
		return ErrClosed
	}
	defer db.leave()
	return db.bdb.Update(func(t *badger.Txn) error { return fn(&Txn{t: t}) })
}

// UpdateAsync runs fn in a read-write transaction and hands it to the
// store's writer without waiting for the sync: when it returns, the
// transaction is ordered after every transaction handed over before it (a
// later write of the same key wins, and is never durable before an earlier
// one), and done is called from another goroutine once the transaction is
// synced (nil) or has failed. Callers that pipeline several writes use it
// so that the store syncs them together instead of one after another.
func (db *DB) UpdateAsync(fn func(txn *Txn) error, done func(error)) {
	if !db.enter() {
		done(ErrClosed)
		return
	}
	t := db.bdb.NewTransaction(true)
	if err := fn(&Txn{t: t}); err != nil {
		t.Discard()
		db.leave()
		done(err)
		return
	}
	t.CommitWith(func(err error) {
		db.leave()
		done(err)
	})
}

// View runs fn in a read-only transaction.
func (db *DB) View(fn func(txn *Txn) error) error {
	if !db.enter() {
		return ErrClosed
	}
	defer db.leave()
	return db.bdb.View(func(t *badger.Txn) error { return fn(&Txn{t: t}) })
}

// Txn is a transaction handed to Update or View callbacks.
type Txn struct{ t *badger.Txn }

// Get reads a raw value; ErrNotFound when absent.
func (tx *Txn) Get(key []byte) ([]byte, error) {
	item, err := tx.t.Get(key)
	if errors.Is(err, badger.ErrKeyNotFound) {
		return nil, ErrNotFound
	}
	if err != nil {
		return nil, err
	}
	return item.ValueCopy(nil)
}

// Set writes a raw value.
func (tx *Txn) Set(key, value []byte) error { return tx.t.Set(key, value) }

// Delete removes a key.
func (tx *Txn) Delete(key []byte) error { return tx.t.Delete(key) }

// Iterate calls fn for each key with prefix, starting at start (inclusive),
// in key order (or reverse order), until fn returns false.
func (tx *Txn) Iterate(prefix, start []byte, reverse bool, fn func(key, value []byte) (bool, error)) error {
	io := badger.DefaultIteratorOptions
	io.Prefix = prefix
	io.Reverse = reverse
	io.PrefetchValues = false
	it := tx.t.NewIterator(io)
	defer it.Close()
	seek := start
	if seek == nil {
		seek = prefix
		if reverse {
			seek = append(append([]byte{}, prefix...), 0xFF)
		}
	}
	for it.Seek(seek); it.ValidForPrefix(prefix); it.Next() {
		item := it.Item()
		val, err := item.ValueCopy(nil)
		if err != nil {
			return err
		}
		more, err := fn(item.KeyCopy(nil), val)
		if err != nil || !more {
			return err
		}
	}
	return nil
}

// Scan is Iterate without the copies: key and value are Badger's own
// buffers, valid only until fn returns (decode them, or copy what you
// keep). For start-up loads of many records, where a copy of every key and
// value would only be garbage for the collector.
func (tx *Txn) Scan(prefix []byte, fn func(key, value []byte) (bool, error)) error {
	io := badger.DefaultIteratorOptions
	io.Prefix = prefix
	io.PrefetchValues = false
	it := tx.t.NewIterator(io)
	defer it.Close()
	for it.Seek(prefix); it.ValidForPrefix(prefix); it.Next() {
		item := it.Item()
		var more bool
		err := item.Value(func(val []byte) error {
			var err error
			more, err = fn(item.Key(), val)
			return err
		})
		if err != nil || !more {
			return err
		}
	}
	return nil
}

// DataDir is where the store lives under a fangd home.
func DataDir(home string) string { return filepath.Join(home, "data") }

type badgerLogger struct{ l zerolog.Logger }

func (b badgerLogger) Errorf(f string, a ...interface{})   { b.l.Error().Msgf(trim(f), a...) }
func (b badgerLogger) Warningf(f string, a ...interface{}) { b.l.Warn().Msgf(trim(f), a...) }
func (b badgerLogger) Infof(f string, a ...interface{})    { b.l.Debug().Msgf(trim(f), a...) }
func (b badgerLogger) Debugf(f string, a ...interface{})   { b.l.Trace().Msgf(trim(f), a...) }

func trim(f string) string {
	if n := len(f); n > 0 && f[n-1] == '\n' {
		return f[:n-1]
	}
	return f
}
