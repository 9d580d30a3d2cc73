//go:build unix

package files

import (
	"os"
	"syscall"
)

// openNonBlocking opens with O_NONBLOCK so that opening a FIFO returns at
// once instead of waiting for a writer; regular files ignore the flag.
func openNonBlocking(path string) (*os.File, error) {
	return os.OpenFile(path, os.O_RDONLY|syscall.O_NONBLOCK, 0)
}
