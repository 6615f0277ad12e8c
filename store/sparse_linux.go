package store

import "os"

const (
	seekData = 3 // SEEK_DATA
	seekHole = 4 // SEEK_HOLE
)

// dataEnd is where f's last extent that holds data ends: after it the file
// is a hole, which reads as zeros. Badger's log files are mostly a sparse or
// preallocated tail that need not be read. size when the filesystem cannot
// say. It moves f's offset.
func dataEnd(f *os.File, size int64) int64 {
	var end, off int64
	for off < size {
		d, err := f.Seek(off, seekData)
		if err != nil {
			break // ENXIO: no data after off
		}
		h, err := f.Seek(d, seekHole)
		if err != nil {
			return size
		}
		end, off = h, h
	}
	return min(end, size)
}
