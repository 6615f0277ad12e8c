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
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	badger "github.com/dgraph-io/badger/v4"
	"github.com/dgraph-io/badger/v4/options"
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
	// MinFreeBytes is the free-space reserve (min_free_disk_bytes): below
	// it writes fail with ErrInsufficientStorage and Open refuses. On a
	// filesystem smaller than four times it, a quarter of the filesystem
	// is kept instead. 0 turns the guard off.
	MinFreeBytes uint64
	// StatFS measures free space; nil is statfs(2). Tests inject one.
	StatFS StatFS
	// OnSpaceChange hears the store go below the reserve and back. It is
	// called while a write is being admitted: it must not write to the
	// store itself before returning (hand the work to a goroutine).
	OnSpaceChange func(SpaceState)
}

// ballastName is the reserve's ballast file in the data directory.
const ballastName = "fangd.reserve"

// DefaultMinFreeBytes is min_free_disk_bytes' default.
const DefaultMinFreeBytes = 64 << 20

// DefaultOptions returns daemon-sized options for the data directory dir.
func DefaultOptions(dir string) Options {
	return Options{
		Dir:            dir,
		MemTableSize:   8 << 20,
		BlockCacheSize: 16 << 20,
		IndexCacheSize: 8 << 20,
		Logger:         zerolog.Nop(),
		MinFreeBytes:   DefaultMinFreeBytes,
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
	queue    *writeQueue
	fresh    bool
	// onQuarantine holds a func([]Quarantined), see OnQuarantine.
	onQuarantine atomic.Value
	space        *spaceGuard
	wal          *walAllocator
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
//
// Badger is opened to detect damage rather than to work around it: every
// table and block read is checked against its checksum, and so is every
// value read from the value log; the memtable and value logs are scanned
// before Badger replays them, which would silently drop everything after a
// damaged entry (checkLogs). A data directory that holds Badger's files
// but no MANIFEST is refused before Badger sees it: Badger would delete
// every table the (new, empty) MANIFEST does not list and start empty. A
// panic inside Badger while opening (a truncated table file) becomes an
// error that names the directory. See docs/architecture.md.
//
// Open also refuses, with a *StorageError, a filesystem that has less free
// space than the reserve: Badger's first writes go to memory-mapped files,
// where a full disk is a SIGBUS rather than an error.
func Open(opts Options) (_ *DB, err error) {
	fresh, err := checkDataDir(opts.Dir)
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(opts.Dir, 0o700); err != nil {
		return nil, fmt.Errorf("create data dir: %w", err)
	}
	if opts.StatFS == nil {
		opts.StatFS = statfs
	}
	// The ballast is fangd's own reserve: give it back before measuring.
	os.Truncate(filepath.Join(opts.Dir, ballastName), 0)
	free, total, err := opts.StatFS(opts.Dir)
	if err != nil {
		return nil, fmt.Errorf("measure free space in %s: %w", opts.Dir, err)
	}
	reserve := opts.MinFreeBytes
	if total > 0 && reserve > total/4 {
		reserve = total / 4
	}
	if free < reserve {
		return nil, fmt.Errorf("cannot open the store: %w", &StorageError{Dir: opts.Dir, Free: free, Reserve: reserve})
	}
	// On a small filesystem the memtable (whose log file is allocated,
	// below) is a sixteenth of it, at least 1 MiB.
	memtable := opts.MemTableSize
	if total > 0 && int64(total/16) < memtable {
		memtable = max(int64(total/16), 1<<20)
	}
	maxBatch := 15 * memtable / 100 // Badger's own transaction limit
	errs := &openErrors{on: true}
	bo := badger.DefaultOptions(opts.Dir).
		WithSyncWrites(true).
		WithMemTableSize(memtable).
		WithValueThreshold(min(1<<20, maxBatch)).
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
		WithChecksumVerificationMode(options.OnTableAndBlockRead).
		WithVerifyValueChecksum(true).
		WithLogger(badgerLogger{l: opts.Logger, errs: errs})
	if err := checkTables(opts.Dir, bo); err != nil {
		return nil, &DamageError{Dir: opts.Dir, Err: err}
	}
	if err := checkLogs(opts.Dir); err != nil {
		return nil, &DamageError{Dir: opts.Dir, Err: err}
	}
	var bdb *badger.DB
	err = recovered("open the store in "+opts.Dir, func() error {
		var err error
		bdb, err = badger.Open(bo)
		return err
	})
	if err != nil {
		return nil, &DamageError{Dir: opts.Dir, Err: err}
	}
	if err := errs.stop(); err != nil {
		bdb.Close()
		return nil, &DamageError{Dir: opts.Dir, Err: err}
	}
	db := &DB{bdb: bdb, dir: opts.Dir, memtable: memtable, fresh: fresh}
	db.space = &spaceGuard{dir: opts.Dir, reserve: reserve, statfs: opts.StatFS, now: time.Now, onChange: opts.OnSpaceChange,
		floor: min(reserve, max(reserve/4, uint64(memtable+memtable/2)))}
	if reserve > 0 {
		// Room for one memtable flush and one new log file.
		db.space.ballast = filepath.Join(opts.Dir, ballastName)
		db.space.ballastSize = min(int64(reserve/2), 2*memtable)
	}
	// A log file is written up to one memtable plus one batch, then
	// Badger starts the next.
	db.wal = &walAllocator{dir: opts.Dir, limit: memtable + maxBatch + 256<<10, space: db.space,
		log: func(err error) { opts.Logger.Warn().Err(err).Msg("memtable log not preallocated") }}
	if err := db.wal.scan(); err != nil {
		bdb.Close()
		if errors.Is(err, syscall.ENOSPC) {
			return nil, fmt.Errorf("cannot open the store: %w: %w", ErrInsufficientStorage, err)
		}
		return nil, err
	}
	db.queue = startWriteQueue(db)
	return db, nil
}

// DamageError is a store that could not be opened or read because its
// files are damaged or incomplete. fangd stops rather than serve a store
// that silently lost data.
type DamageError struct {
	Dir string
	Err error
}

func (e *DamageError) Error() string {
	return fmt.Sprintf("the store in %s is damaged: %v (restore the data directory from a backup; see docs/architecture.md, \"Damage and recovery\")", e.Dir, e.Err)
}

func (e *DamageError) Unwrap() error { return e.Err }

// recovered runs fn and turns a panic into an error: Badger panics on
// some damaged files (a truncated table) instead of returning an error.
func recovered(what string, fn func() error) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("%s: badger panicked: %v", what, r)
		}
	}()
	return fn()
}

// checkDataDir looks at the data directory before Badger opens it. It
// reports whether it is new (absent or empty: nothing was ever stored
// there), and refuses a directory that has Badger's tables or logs but no
// MANIFEST.
func checkDataDir(dir string) (fresh bool, err error) {
	entries, err := os.ReadDir(dir)
	if errors.Is(err, os.ErrNotExist) {
		return true, nil
	}
	if err != nil {
		return false, fmt.Errorf("read data dir: %w", err)
	}
	var manifest bool
	var data []string
	for _, e := range entries {
		name := e.Name()
		switch {
		case name == "MANIFEST":
			manifest = true
		case strings.HasSuffix(name, ".sst"), strings.HasSuffix(name, ".vlog"), strings.HasSuffix(name, ".mem"):
			data = append(data, name)
		}
	}
	if !manifest && len(data) > 0 {
		return false, &DamageError{Dir: dir, Err: fmt.Errorf("MANIFEST is missing but %d data files (%s, ...) are present; "+
			"opening it would discard them", len(data), data[0])}
	}
	return len(entries) == 0, nil
}

// Fresh reports whether Open found no data directory, or an empty one:
// a new install, with nothing stored before.
func (db *DB) Fresh() bool { return db.fresh }

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
	db.queue.close()
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
		if e.Name() == ballastName {
			continue // fangd's reserve, not data
		}
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

// Space is the free-space condition, measured now if the last measurement
// is older than a tenth of a second.
func (db *DB) Space() SpaceState { return db.space.state() }

// Update runs fn in one synced read-write transaction, after every write
// handed to UpdateAsync before it is synced. Below the free-space reserve
// it fails with ErrInsufficientStorage.
func (db *DB) Update(fn func(txn *Txn) error) error {
	if !db.enter() {
		return ErrClosed
	}
	defer db.leave()
	if err := db.space.admit(4096, false); err != nil {
		return err
	}
	if err := db.queue.barrier(); err != nil {
		return err
	}
	err := db.bdb.Update(func(t *badger.Txn) error { return fn(&Txn{t: t}) })
	db.wal.afterCommit()
	return err
}

// UpdateAsync records the writes fn makes (fn may only write: Set, SetTTL
// and Delete; reads fail) and hands them to the store's write queue without
// waiting, and without opening a Badger transaction, which would first wait
// for every sync in flight. When it returns, the writes are ordered after
// everything handed over before (a later write of the same key wins, and
// is never durable before an earlier one) and before every later Update.
// They are applied atomically, in one synced transaction shared with other
// callers' writes, and done is called from the queue's goroutine once they
// are synced (nil) or failed. done must not block or call Update. Until
// done, they are not visible to reads, which wait for them. Below the
// free-space reserve done gets ErrInsufficientStorage at once.
func (db *DB) UpdateAsync(fn func(txn *Txn) error, done func(error)) {
	db.updateAsync(fn, done, false)
}

// updateAsync is UpdateAsync; reserved writes may use the free-space
// reserve down to its floor.
func (db *DB) updateAsync(fn func(txn *Txn) error, done func(error), reserved bool) {
	if !db.enter() {
		done(ErrClosed)
		return
	}
	w := &asyncWrite{done: done}
	if err := fn(&Txn{rec: w}); err != nil {
		db.leave()
		done(err)
		return
	}
	if err := db.space.admitAbove(w.size, reserved || w.deletesOnly(), reserved); err != nil {
		db.leave()
		done(err)
		return
	}
	db.queue.add(*w)
}

// Write is UpdateAsync that waits: fn's writes (only writes) join the
// queue's next synced transaction with everyone else's, and Write returns
// once they are durable. Group committers (the audit log, the event bus)
// use it so that their batches share an fsync with the rest of the daemon
// instead of adding one of their own. Never call it from a done callback.
func (db *DB) Write(fn func(txn *Txn) error) error {
	return db.write(fn, false)
}

func (db *DB) write(fn func(txn *Txn) error, reserved bool) error {
	done := make(chan error, 1)
	db.updateAsync(fn, func(err error) { done <- err }, reserved)
	return <-done
}

// View runs fn in a read-only transaction that sees every write handed
// over before it (it waits for queued UpdateAsync writes to sync, as a
// Badger transaction waits for the commits in flight).
func (db *DB) View(fn func(txn *Txn) error) error {
	if !db.enter() {
		return ErrClosed
	}
	defer db.leave()
	_ = db.queue.barrier() // reads still work after a failed commit
	return db.bdb.View(func(t *badger.Txn) error { return fn(&Txn{t: t}) })
}

// Txn is a transaction handed to Update or View callbacks.
// Inside UpdateAsync it only records writes (rec is set, t is not).
type Txn struct {
	t   *badger.Txn
	rec *asyncWrite
}

// record adds a write to an UpdateAsync call's list.
func (tx *Txn) record(o writeOp) error {
	// The caller may reuse its slices once fn returns.
	o.key, o.value = append([]byte(nil), o.key...), append([]byte(nil), o.value...)
	tx.rec.ops = append(tx.rec.ops, o)
	tx.rec.size += o.size()
	return nil
}

// Get reads a raw value; ErrNotFound when absent.
func (tx *Txn) Get(key []byte) ([]byte, error) {
	if tx.rec != nil {
		return nil, errReadInAsync
	}
	var val []byte
	err := recovered(fmt.Sprintf("read %q", key), func() error {
		item, err := tx.t.Get(key)
		if errors.Is(err, badger.ErrKeyNotFound) {
			return ErrNotFound
		}
		if err != nil {
			return err
		}
		val, err = item.ValueCopy(nil)
		return err
	})
	return val, err
}

// Set writes a raw value.
func (tx *Txn) Set(key, value []byte) error {
	if tx.rec != nil {
		return tx.record(writeOp{key: key, value: value})
	}
	return tx.t.Set(key, value)
}

// Delete removes a key.
func (tx *Txn) Delete(key []byte) error {
	if tx.rec != nil {
		return tx.record(writeOp{del: true, key: key})
	}
	return tx.t.Delete(key)
}

// Iterate calls fn for each key with prefix, starting at start (inclusive),
// in key order (or reverse order), until fn returns false.
func (tx *Txn) Iterate(prefix, start []byte, reverse bool, fn func(key, value []byte) (bool, error)) error {
	seek := start
	if seek == nil {
		seek = prefix
		if reverse {
			seek = append(append([]byte{}, prefix...), 0xFF)
		}
	}
	return tx.walk(prefix, seek, reverse, true, fn)
}

// Scan is Iterate without the copies: key and value are Badger's own
// buffers, valid only until fn returns (decode them, or copy what you
// keep). For start-up loads of many records, where a copy of every key and
// value would only be garbage for the collector.
func (tx *Txn) Scan(prefix []byte, fn func(key, value []byte) (bool, error)) error {
	return tx.walk(prefix, prefix, false, false, fn)
}

// walk is Iterate (copies: fn gets copies, called outside Badger's value
// callback) and Scan (fn gets Badger's buffers, inside it).
func (tx *Txn) walk(prefix, seek []byte, reverse, copies bool, fn func(key, value []byte) (bool, error)) (err error) {
	if tx.rec != nil {
		return errReadInAsync
	}
	var inFn bool
	defer recoverIteration(prefix, &inFn, &err)
	call := func(key, val []byte) (bool, error) {
		inFn = true
		more, err := fn(key, val)
		inFn = false
		return more, err
	}
	io := badger.DefaultIteratorOptions
	io.Prefix = prefix
	io.Reverse = reverse
	io.PrefetchValues = false
	it := tx.t.NewIterator(io)
	defer it.Close()
	for it.Seek(seek); it.ValidForPrefix(prefix); it.Next() {
		item := it.Item()
		var more bool
		var err error
		if copies {
			var val []byte
			if val, err = item.ValueCopy(nil); err == nil {
				more, err = call(item.KeyCopy(nil), val)
			}
		} else {
			err = item.Value(func(val []byte) error {
				var err error
				more, err = call(item.Key(), val)
				return err
			})
		}
		if err != nil || !more {
			return err
		}
	}
	return nil
}

// recoverIteration turns a panic inside Badger during an iteration (a
// damaged table) into an error; a panic in the caller's own callback is
// not Badger's and goes on up.
func recoverIteration(prefix []byte, inFn *bool, err *error) {
	if *inFn {
		return
	}
	if r := recover(); r != nil {
		*err = fmt.Errorf("read %q: badger panicked: %v", prefix, r)
	}
}

// DataDir is where the store lives under a fangd home.
func DataDir(home string) string { return filepath.Join(home, "data") }

type badgerLogger struct {
	l    zerolog.Logger
	errs *openErrors
}

func (b badgerLogger) Errorf(f string, a ...interface{}) {
	b.errs.add(fmt.Sprintf(trim(f), a...))
	b.l.Error().Msgf(trim(f), a...)
}
func (b badgerLogger) Warningf(f string, a ...interface{}) { b.l.Warn().Msgf(trim(f), a...) }
func (b badgerLogger) Infof(f string, a ...interface{})    { b.l.Debug().Msgf(trim(f), a...) }
func (b badgerLogger) Debugf(f string, a ...interface{})   { b.l.Trace().Msgf(trim(f), a...) }

func trim(f string) string {
	if n := len(f); n > 0 && f[n-1] == '\n' {
		return f[:n-1]
	}
	return f
}
