package store

import (
	"encoding/binary"
	"fmt"
	"hash/crc32"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/dgraph-io/ristretto/v2/z"
)

// Badger v4's log files (the memtable's write-ahead log, *.mem, and the
// value log, *.vlog) share one format, read here so that damage is found
// before Badger replays them (memtable.go, value.go and structs.go of
// badger v4 are the reference):
//
//	file:  keyID (8 bytes, big endian; 0 = not encrypted) | baseIV (12 bytes) | entry...
//	entry: meta (1) | userMeta (1) | uvarint klen | uvarint vlen | uvarint expiresAt
//	       | key | value | CRC-32 Castagnoli of all before it (4 bytes, big endian)
//
// Badger's replay stops at the first entry that does not decode or whose
// checksum fails, takes that as the end of the log and truncates the file
// there. That is right for the one entry a crash can tear, the last one;
// but a flipped byte in the middle makes Badger drop every later entry,
// acknowledged writes included, without a word.
const (
	logHeaderSize    = 20
	logMaxHeaderSize = 22 // two bytes and three uvarints of at most 32, 32 and 64 bits
	logMaxKeySize    = 1 << 16
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// LogDamage is a memtable log or value log with a bad entry that is
// followed by good ones: damage, not the torn end a crash leaves.
type LogDamage struct {
	File string // the file's name in the data directory
	// Offset is the first byte Badger's replay would not accept;
	// NextValid is where a valid entry follows it, -1 for a damaged
	// file header.
	Offset, NextValid int64
	Reason            string
}

func (e *LogDamage) Error() string {
	kind := "memtable log (write-ahead log)"
	if strings.HasSuffix(e.File, ".vlog") {
		kind = "value log"
	}
	if e.NextValid < 0 {
		return fmt.Sprintf("%s %s: %s", kind, e.File, e.Reason)
	}
	return fmt.Sprintf("%s %s: %s at byte %d, but a valid entry follows at byte %d: "+
		"the log is damaged, not torn by a crash, and replaying it would drop every write from byte %d on",
		kind, e.File, e.Reason, e.Offset, e.NextValid, e.Offset)
}

// checkLogs scans every memtable log and value log in dir (see LogDamage).
// A log that ends in zeros, or in one torn entry followed by zeros, is a
// clean end: a kill -9 during a write leaves exactly that, and the torn
// entry was never acknowledged (its transaction's sync had not returned).
//
// What it cannot tell from a torn write is damage to the last entry of a
// log alone: nothing after it shows the log went on. The audit anchor
// catches that for audited writes.
func checkLogs(dir string) error {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return err
	}
	var names []string
	for _, e := range entries {
		if n := e.Name(); e.Type().IsRegular() && (strings.HasSuffix(n, ".mem") || strings.HasSuffix(n, ".vlog")) {
			names = append(names, n)
		}
	}
	sort.Strings(names)
	for _, name := range names {
		if err := checkLog(filepath.Join(dir, name)); err != nil {
			return err
		}
	}
	return nil
}

func checkLog(path string) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return err
	}
	if fi.Size() < logHeaderSize {
		// Created but never bootstrapped: a crash while Badger made it.
		return nil
	}
	// Log files are large and mostly a sparse, preallocated tail: map
	// them rather than read them, and only up to the tail's hole.
	size := max(dataEnd(f, fi.Size()), logHeaderSize)
	data, err := z.Mmap(f, false, size)
	if err != nil {
		return fmt.Errorf("map %s: %w", filepath.Base(path), err)
	}
	defer z.Munmap(data)
	if d := scanLog(data); d != nil {
		d.File = filepath.Base(path)
		return d
	}
	return nil
}

// scanLog returns the damage in one log file's bytes, or nil.
func scanLog(data []byte) *LogDamage {
	if keyID := binary.BigEndian.Uint64(data[:8]); keyID != 0 {
		// fangd never turns on Badger's encryption: a key id is a damaged
		// header, and Badger would fail to open the file anyway.
		return &LogDamage{Offset: 0, NextValid: -1,
			Reason: fmt.Sprintf("its header (bytes 0-7) names encryption key %d, but fangd does not encrypt its store", keyID)}
	}
	off := int64(logHeaderSize)
	for {
		n, ok, reason := logEntryAt(data, off)
		if !ok {
			if next := nextLogEntry(data, off+1); next >= 0 {
				return &LogDamage{Offset: off, NextValid: next, Reason: reason}
			}
			return nil // zeros, or a torn last entry and zeros
		}
		off += n
	}
}

// logEntryAt decodes the entry at off: its length and whether it is a
// complete entry with a non-empty key and a matching checksum. An empty
// key is Badger's end of log (zeros decode to it).
func logEntryAt(data []byte, off int64) (n int64, ok bool, reason string) {
	if off >= int64(len(data)) {
		return 0, false, "end of file"
	}
	b := data[off:]
	if len(b) < 3 {
		return 0, false, "a truncated entry header"
	}
	h := int64(2)
	klen, c := binary.Uvarint(b[h:])
	if c <= 0 {
		return 0, false, "an undecodable entry header"
	}
	h += int64(c)
	if h >= int64(len(b)) {
		return 0, false, "a truncated entry header"
	}
	vlen, c := binary.Uvarint(b[h:])
	if c <= 0 {
		return 0, false, "an undecodable entry header"
	}
	h += int64(c)
	if h >= int64(len(b)) {
		return 0, false, "a truncated entry header"
	}
	if _, c = binary.Uvarint(b[h:]); c <= 0 {
		return 0, false, "an undecodable entry header"
	}
	h += int64(c)
	if klen == 0 {
		return 0, false, "an entry with an empty key"
	}
	if klen > logMaxKeySize || vlen > uint64(len(b)) {
		return 0, false, "an entry header with impossible lengths"
	}
	n = h + int64(klen) + int64(vlen) + crc32.Size
	if n > int64(len(b)) {
		return 0, false, "an entry that runs past the end of the file"
	}
	sum := crc32.Checksum(b[:n-crc32.Size], castagnoli)
	if sum != binary.BigEndian.Uint32(b[n-crc32.Size:n]) {
		return 0, false, "an entry whose checksum does not match"
	}
	return n, true, ""
}

// nextLogEntry is the offset of the first valid entry at or after from,
// or -1. A valid entry has a non-empty key, so the first byte of its klen
// (the third of the entry) is not zero: runs of zeros are skipped whole.
func nextLogEntry(data []byte, from int64) int64 {
	size := int64(len(data))
	for c := from; c+2 < size; c++ {
		if data[c+2] == 0 {
			nz := nonZero(data, c+2)
			if nz < 0 {
				return -1
			}
			c = nz - 3 // the loop's c++ makes data[c+2] the non-zero byte
			continue
		}
		if _, ok, _ := logEntryAt(data, c); ok {
			return c
		}
	}
	return -1
}

// nonZero is the offset of the first non-zero byte at or after from, or
// -1; a word at a time, since most of a log file is its zero tail.
func nonZero(data []byte, from int64) int64 {
	i := from
	for ; i < int64(len(data)) && i%8 != 0; i++ {
		if data[i] != 0 {
			return i
		}
	}
	for ; i+8 <= int64(len(data)); i += 8 {
		if binary.LittleEndian.Uint64(data[i:]) != 0 {
			break
		}
	}
	for ; i < int64(len(data)); i++ {
		if data[i] != 0 {
			return i
		}
	}
	return -1
}
