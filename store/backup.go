package store

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"hash"
	"io"
	"os"

	badger "github.com/dgraph-io/badger/v4"
)

// A backup is one consistent snapshot of the store in a file of its own
// format (docs/architecture.md, "Backup and restore"):
//
//	"fangd-backup 1\n"
//	header: one line of JSON (the caller's: fangd writes the audit anchor there)
//	records: 'R' uvarint(len key) key uvarint(len value) value uvarint(expiresAt) userMeta(1)
//	end: 'E' uvarint(number of records) SHA-256 of every byte before the digest (32)
//
// The digest and the count make a truncated or altered file an error,
// which Badger's own backup stream is not when it is cut between records.
// It is written from one read transaction, so the header the caller builds
// in that transaction describes exactly the records that follow.
const backupMagic = "fangd-backup 1\n"

// maxBackupHeader bounds the header line a reader accepts.
const maxBackupHeader = 32 << 10

// ErrBadBackup is a backup file that is not one, or is truncated or damaged.
var ErrBadBackup = errors.New("not a complete fangd backup")

// Backup writes a snapshot of the whole store to w. header is called
// first, inside the snapshot's transaction, and returns the header line's
// JSON (no newline). It returns how many records it wrote.
func (db *DB) Backup(w io.Writer, header func(tx *Txn) ([]byte, error)) (int64, error) {
	var n int64
	err := db.View(func(tx *Txn) (err error) {
		h, err := header(tx)
		if err != nil {
			return err
		}
		if bytes.IndexByte(h, '\n') >= 0 || len(h) > maxBackupHeader {
			return errors.New("backup header must be one line of at most 32 KiB")
		}
		sum := sha256.New()
		bw := bufio.NewWriterSize(io.MultiWriter(w, sum), 64<<10)
		bw.WriteString(backupMagic)
		bw.Write(h)
		bw.WriteByte('\n')
		defer recoverIteration(nil, new(bool), &err)
		it := tx.t.NewIterator(badger.IteratorOptions{PrefetchValues: false})
		defer it.Close()
		var num [binary.MaxVarintLen64]byte
		uv := func(x uint64) { bw.Write(num[:binary.PutUvarint(num[:], x)]) }
		for it.Rewind(); it.Valid(); it.Next() {
			item := it.Item()
			k := item.Key()
			if err := item.Value(func(v []byte) error {
				bw.WriteByte('R')
				uv(uint64(len(k)))
				bw.Write(k)
				uv(uint64(len(v)))
				_, err := bw.Write(v)
				return err
			}); err != nil {
				return fmt.Errorf("backup: read %q: %w", k, err)
			}
			uv(item.ExpiresAt())
			bw.WriteByte(item.UserMeta())
			n++
		}
		bw.WriteByte('E')
		uv(uint64(n))
		if err := bw.Flush(); err != nil {
			return err
		}
		_, err = w.Write(sum.Sum(nil))
		return err
	})
	return n, err
}

// backupReader reads a backup's records, hashing as it goes.
type backupReader struct {
	r       *bufio.Reader
	sum     hash.Hash
	off     int64
	records int64
}

func (b *backupReader) fail(format string, a ...any) error {
	return fmt.Errorf("%w: %s (at byte %d)", ErrBadBackup, fmt.Sprintf(format, a...), b.off)
}

func (b *backupReader) ReadByte() (byte, error) {
	c, err := b.r.ReadByte()
	if err != nil {
		return 0, err
	}
	b.sum.Write([]byte{c})
	b.off++
	return c, nil
}

func (b *backupReader) full(p []byte) error {
	n, err := io.ReadFull(b.r, p)
	b.sum.Write(p[:n])
	b.off += int64(n)
	return err
}

// next reads n bytes, growing its buffer as they arrive: a damaged length
// in a short file must not allocate what it claims.
func (b *backupReader) next(n uint64) ([]byte, error) {
	var buf bytes.Buffer
	got, err := io.CopyN(&buf, b.r, int64(n))
	b.sum.Write(buf.Bytes())
	b.off += got
	return buf.Bytes(), err
}

func (b *backupReader) uvarint(what string, limit uint64) (uint64, error) {
	x, err := binary.ReadUvarint(b)
	if err != nil {
		return 0, b.fail("the file ends inside a record's %s", what)
	}
	if x > limit {
		return 0, b.fail("a record's %s is %d, over %d", what, x, limit)
	}
	return x, nil
}

// openBackup checks the magic line and returns the header.
func openBackup(r io.Reader) (*backupReader, []byte, error) {
	b := &backupReader{r: bufio.NewReaderSize(r, 64<<10), sum: sha256.New()}
	magic := make([]byte, len(backupMagic))
	if err := b.full(magic); err != nil || string(magic) != backupMagic {
		return nil, nil, b.fail("it does not start with %q", backupMagic[:len(backupMagic)-1])
	}
	line, err := b.r.ReadSlice('\n')
	if err != nil {
		return nil, nil, b.fail("no header line")
	}
	b.sum.Write(line)
	b.off += int64(len(line))
	return b, bytes.Clone(line[:len(line)-1]), nil
}

// each calls fn for every record, then checks the count, the digest and
// that nothing follows.
func (b *backupReader) each(fn func(e *badger.Entry) error) error {
	for {
		kind, err := b.ReadByte()
		if err != nil {
			return b.fail("the file ends before its end record (truncated)")
		}
		switch kind {
		case 'R':
		case 'E':
			return b.end()
		default:
			return b.fail("unknown record kind %q", kind)
		}
		klen, err := b.uvarint("key length", 1<<16)
		if err != nil {
			return err
		}
		key, err := b.next(klen)
		if err != nil {
			return b.fail("the file ends inside a key")
		}
		vlen, err := b.uvarint("value length", 1<<31)
		if err != nil {
			return err
		}
		val, err := b.next(vlen)
		if err != nil {
			return b.fail("the file ends inside a value")
		}
		exp, err := b.uvarint("expiry", 1<<63)
		if err != nil {
			return err
		}
		meta, err := b.ReadByte()
		if err != nil {
			return b.fail("the file ends inside a record")
		}
		b.records++
		if fn != nil {
			e := badger.NewEntry(key, val).WithMeta(meta)
			e.ExpiresAt = exp
			if err := fn(e); err != nil {
				return err
			}
		}
	}
}

func (b *backupReader) end() error {
	count, err := b.uvarint("record count", 1<<62)
	if err != nil {
		return err
	}
	if int64(count) != b.records {
		return b.fail("it holds %d records but its end record says %d", b.records, count)
	}
	want := b.sum.Sum(nil)
	got := make([]byte, sha256.Size)
	if _, err := io.ReadFull(b.r, got); err != nil {
		return b.fail("the file ends inside its checksum (truncated)")
	}
	if !bytes.Equal(got, want) {
		return b.fail("its SHA-256 does not match its contents (damaged)")
	}
	if _, err := b.r.ReadByte(); err != io.EOF {
		return b.fail("bytes follow its end record")
	}
	return nil
}

// VerifyBackup reads a whole backup file and checks its structure and
// digest without loading it. It returns the header.
func VerifyBackup(path string) (header []byte, records int64, err error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, 0, err
	}
	defer f.Close()
	b, header, err := openBackup(f)
	if err != nil {
		return nil, 0, err
	}
	if err := b.each(nil); err != nil {
		return nil, 0, err
	}
	return header, b.records, nil
}

// LoadBackup writes every record of the backup file at path into db,
// which must be empty: a restore never merges into existing data.
// Check the file with VerifyBackup first: a damaged file is found only
// at its end, after the records before the damage were written.
func (db *DB) LoadBackup(path string) (records int64, err error) {
	var empty bool
	if err := db.View(func(tx *Txn) error {
		it := tx.t.NewIterator(badger.IteratorOptions{})
		defer it.Close()
		it.Rewind()
		empty = !it.Valid()
		return nil
	}); err != nil {
		return 0, err
	}
	if !empty {
		return 0, errors.New("a backup is only loaded into an empty store")
	}
	f, err := os.Open(path)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	b, _, err := openBackup(f)
	if err != nil {
		return 0, err
	}
	wb := db.bdb.NewWriteBatch()
	defer wb.Cancel()
	if err := b.each(func(e *badger.Entry) error { return wb.SetEntry(e) }); err != nil {
		return 0, err
	}
	if err := wb.Flush(); err != nil {
		return 0, err
	}
	return b.records, nil
}
