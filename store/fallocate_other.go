//go:build !linux

package store

import "os"

// fallocate is Linux-only; elsewhere the reserve alone guards the disk.
func fallocate(*os.File, int64) error { return nil }
