package store

import (
	"errors"
	"os"
	"syscall"
)

// fallocate gives f's first size bytes disk blocks (mode 0 keeps the data
// and the file size). A filesystem without fallocate is left as it is.
func fallocate(f *os.File, size int64) error {
	err := syscall.Fallocate(int(f.Fd()), 0, 0, size)
	if errors.Is(err, syscall.EOPNOTSUPP) {
		return nil
	}
	return err
}
