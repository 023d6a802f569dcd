//go:build unix

package usage

import (
	"os"

	"golang.org/x/sys/unix"
)

// mapFile maps f's first size bytes shared and writable: what is written
// there reaches the page cache, and survives the process.
func mapFile(f *os.File, size int) ([]byte, error) {
	return unix.Mmap(int(f.Fd()), 0, size, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
}

func unmapFile(b []byte) error { return unix.Munmap(b) }
