package store

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// Why a free-space reserve: Badger writes its memtable log and its tables
// through memory-mapped files that it creates sparse (truncated to size).
// A store into a page that has no disk block yet, on a full filesystem,
// is not an error Badger could return: the kernel sends SIGBUS and the
// daemon dies. fangd therefore
//
//   - refuses writes with ErrInsufficientStorage while the filesystem has
//     less free than the reserve, so Badger's own work (the memtable log,
//     flushing it to a table, compaction) always finds blocks;
//   - allocates every memtable log file's blocks as soon as Badger creates
//     it (fallocate), so the writes into it cannot fault even if another
//     process fills the disk in the meantime;
//   - refuses to open a store whose filesystem is already below the reserve.
//
// What it cannot guard: a table Badger creates and copies into in one go
// while another process takes the last blocks between fangd's check and
// Badger's copy. The reserve makes that window small; docs/architecture.md
// says so.

// ErrInsufficientStorage is what a write gets while the store's filesystem
// has less free space than the reserve. Reads keep working.
var ErrInsufficientStorage = errors.New("insufficient storage")

// StorageError says how much is free and how much fangd keeps in reserve.
type StorageError struct {
	Dir           string
	Free, Reserve uint64
}

func (e *StorageError) Error() string {
	return fmt.Sprintf("insufficient storage: %s has %s free, below the %s reserve (min_free_disk_bytes); writes resume when space is freed",
		e.Dir, human(e.Free), human(e.Reserve))
}

func (e *StorageError) Unwrap() error { return ErrInsufficientStorage }

func human(n uint64) string {
	switch {
	case n >= 1<<30:
		return fmt.Sprintf("%.1f GiB", float64(n)/(1<<30))
	case n >= 1<<20:
		return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20))
	case n >= 1<<10:
		return fmt.Sprintf("%.1f KiB", float64(n)/(1<<10))
	}
	return fmt.Sprintf("%d B", n)
}

// StatFS reports the bytes available to the daemon and the filesystem's
// size. Tests inject their own.
type StatFS func(dir string) (free, total uint64, err error)

func statfs(dir string) (free, total uint64, err error) {
	var st syscall.Statfs_t
	if err := syscall.Statfs(dir, &st); err != nil {
		return 0, 0, err
	}
	// Bavail, not Bfree: the blocks an unprivileged writer may use, so a
	// filesystem's root reserve is never counted on.
	return uint64(st.Bavail) * uint64(st.Bsize), uint64(st.Blocks) * uint64(st.Bsize), nil
}

// SpaceState is the store's free-space condition.
type SpaceState struct {
	Low     bool   `json:"low"`
	Free    uint64 `json:"free_bytes"`
	Reserve uint64 `json:"reserve_bytes"`
}

const (
	// spaceRecheck bounds how long a measurement is trusted while far from
	// the reserve; spaceRecheckLow how often writes re-measure while below
	// it (so writes resume this soon after space returns).
	spaceRecheck    = time.Second
	spaceRecheckLow = 100 * time.Millisecond
)

// spaceGuard admits writes against the reserve. It measures with statfs
// only when its last measurement is stale or the bytes admitted since
// would bring the filesystem near the reserve, so the common write costs
// a mutex and a subtraction.
type spaceGuard struct {
	dir     string
	reserve uint64
	// floor is what reserved writes (the audit log, deletes) leave free:
	// room for one memtable flush, so Badger never faults.
	floor    uint64
	statfs   StatFS
	now      func() time.Time
	onChange func(SpaceState)

	// ballast is a file of ballastSize allocated bytes that fangd gives
	// back to the filesystem the moment it goes below the reserve: the
	// room Badger's work already under way (a memtable flush, a new log
	// file) needs if another process took the last free blocks.
	ballast     string
	ballastSize int64
	ballastHeld bool

	mu       sync.Mutex
	measured time.Time
	free     uint64
	budget   int64 // bytes that may be admitted before measuring again
	low      atomic.Bool
}

// admit answers nil when size bytes may be written now. reserved writes
// (the audit log, deletes) may use the reserve down to the floor, so that
// the condition itself can be audited and space can be freed through the API.
func (g *spaceGuard) admit(size int, reserved bool) error {
	return g.admitAbove(size, reserved, false)
}

// admitAbove is admit; committing (a reserved write whose caller already
// asked, see AuditLog.Admits) may go down to half the floor, so that the
// space one more measurement finds gone between the question and the
// commit does not fail a batch the audit writer has already chained.
func (g *spaceGuard) admitAbove(size int, reserved, committing bool) error {
	if g == nil || g.reserve == 0 {
		return nil
	}
	g.mu.Lock()
	now := g.now()
	stale := now.Sub(g.measured) >= spaceRecheck || (g.low.Load() && now.Sub(g.measured) >= spaceRecheckLow)
	if !stale && !g.low.Load() && g.budget >= int64(size) {
		g.budget -= int64(size)
		g.mu.Unlock()
		return nil
	}
	if stale || !g.low.Load() {
		g.measureLocked(now)
	}
	free, low := g.free, g.low.Load()
	g.mu.Unlock()
	if !low {
		return nil
	}
	if reserved && (free >= g.floor || committing && free >= g.floor/2) {
		return nil
	}
	return &StorageError{Dir: g.dir, Free: free, Reserve: g.reserve}
}

// measureLocked runs statfs and records a change of condition. A failed
// statfs counts as "no space": better a refused write than SIGBUS.
func (g *spaceGuard) measureLocked(now time.Time) {
	free, _, err := g.statfs(g.dir)
	if err != nil {
		free = 0
	}
	g.measured, g.free = now, free
	// With the ballast given back, its bytes count as spent until they can
	// be taken again: otherwise releasing it would end the condition that
	// released it.
	floor := g.reserve
	if g.ballast != "" && !g.ballastHeld {
		floor += uint64(g.ballastSize)
	}
	low := free < floor
	if low {
		g.budget = 0
		// The bytes given back are what the reserved writes (the audit
		// entry recording this very condition) may use: count them now,
		// not at the next measurement.
		if g.releaseBallastLocked() {
			if f, _, err := g.statfs(g.dir); err == nil {
				g.free = f
			}
		}
	} else {
		g.holdBallastLocked()
		g.budget = int64(g.free-g.reserve) / 4 // re-measure after a quarter of the headroom
		if g.free < 4*g.reserve {
			// Near the reserve (always, on a small filesystem): measure
			// before every write, so a disk filled meanwhile is seen.
			g.budget = 0
		}
	}
	if g.low.Swap(low) != low && g.onChange != nil {
		// Called with g.mu held: onChange must not write to the store
		// synchronously (it hands the work to a goroutine or an actor).
		g.onChange(SpaceState{Low: low, Free: free, Reserve: g.reserve})
	}
}

// releaseBallastLocked gives the ballast back; true when it did.
func (g *spaceGuard) releaseBallastLocked() bool {
	if g.ballast == "" || !g.ballastHeld {
		return false
	}
	if err := os.Truncate(g.ballast, 0); err != nil {
		return false
	}
	g.ballastHeld = false
	return true
}

// holdBallastLocked allocates the ballast again once the filesystem has
// room for it above the reserve (so taking it back cannot itself bring
// the store below the reserve).
func (g *spaceGuard) holdBallastLocked() {
	if g.ballast == "" || g.ballastHeld {
		return
	}
	f, err := os.OpenFile(g.ballast, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return
	}
	defer f.Close()
	if err := fallocate(f, g.ballastSize); err != nil {
		f.Truncate(0)
		return
	}
	g.ballastHeld = true
	g.free -= min(g.free, uint64(g.ballastSize))
}

// markLow is called when an allocation failed with ENOSPC: the next
// write measures again instead of trusting the budget.
func (g *spaceGuard) markLow() {
	if g == nil {
		return
	}
	g.mu.Lock()
	g.budget = 0
	g.measured = time.Time{}
	g.mu.Unlock()
}

// state measures now (for health) and returns the condition.
func (g *spaceGuard) state() SpaceState {
	if g == nil || g.reserve == 0 {
		return SpaceState{}
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	if now := g.now(); now.Sub(g.measured) >= spaceRecheckLow {
		g.measureLocked(now)
	}
	return SpaceState{Low: g.low.Load(), Free: g.free, Reserve: g.reserve}
}

// walAllocator gives every memtable log file Badger creates its disk
// blocks at once. Badger names them by a counter (00001.mem, 00002.mem...)
// and creates the next one during a commit; after each commit fangd looks
// for the next name (one failed open when there is none).
type walAllocator struct {
	mu    sync.Mutex
	dir   string
	next  int
	limit int64 // bytes of a log file that Badger can ever write
	space *spaceGuard
	log   func(error)
}

func (w *walAllocator) path(fid int) string {
	return filepath.Join(w.dir, fmt.Sprintf("%05d.mem", fid))
}

// scan allocates every log file present (at open).
func (w *walAllocator) scan() error {
	entries, err := os.ReadDir(w.dir)
	if err != nil {
		return err
	}
	for _, e := range entries {
		name, ok := strings.CutSuffix(e.Name(), ".mem")
		if fid, err := strconv.Atoi(name); ok && err == nil {
			// Badger flushes a replayed memtable and removes its log in
			// the background once Open returned: a log that went away
			// between ReadDir and here needs no room.
			if err := w.allocate(w.path(fid)); err != nil && !errors.Is(err, os.ErrNotExist) {
				return err
			}
			if fid >= w.next {
				w.next = fid + 1
			}
		}
	}
	return nil
}

// afterCommit allocates the log files Badger created since the last call.
func (w *walAllocator) afterCommit() {
	if w == nil {
		return
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	for {
		err := w.allocate(w.path(w.next))
		if errors.Is(err, os.ErrNotExist) {
			return
		}
		if err != nil && w.log != nil {
			w.log(err)
		}
		w.next++
	}
}

func (w *walAllocator) allocate(path string) error {
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		return err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return err
	}
	size := min(fi.Size(), w.limit)
	if size <= 0 {
		return nil
	}
	if err := fallocate(f, size); err != nil {
		if errors.Is(err, syscall.ENOSPC) {
			w.space.markLow()
		}
		return fmt.Errorf("allocate %s: %w", path, err)
	}
	return nil
}
