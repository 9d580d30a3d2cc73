package trace

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
)

// ErrNotRegular is returned for a path that is a directory, a FIFO, a device
// or a socket: a trace or a dump is always a regular file.
var ErrNotRegular = errors.New("not a regular file")

// OpenFile opens path for reading if it is a regular file. The open does not
// block (a FIFO with no writer would otherwise hang it), and the check asks
// the open file what it is, so what is checked is what is read.
func OpenFile(path string) (*os.File, error) {
	f, err := openNonBlocking(path)
	if err != nil {
		if st, serr := os.Stat(path); serr == nil && !st.Mode().IsRegular() {
			return nil, fmt.Errorf("%s is %s: %w", path, kind(st.Mode()), ErrNotRegular)
		}
		switch {
		case errors.Is(err, fs.ErrNotExist):
			return nil, fmt.Errorf("%s: no such file: %w", path, fs.ErrNotExist)
		case errors.Is(err, fs.ErrPermission):
			return nil, fmt.Errorf("%s: permission denied: %w", path, fs.ErrPermission)
		}
		return nil, fmt.Errorf("open %s: %w", path, err)
	}
	st, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("stat %s: %w", path, err)
	}
	if !st.Mode().IsRegular() {
		f.Close()
		return nil, fmt.Errorf("%s is %s: %w", path, kind(st.Mode()), ErrNotRegular)
	}
	return f, nil
}

// kind names what a non-regular file is, in words.
func kind(m fs.FileMode) string {
	switch {
	case m.IsDir():
		return "a directory"
	case m&fs.ModeNamedPipe != 0:
		return "a named pipe (FIFO)"
	case m&fs.ModeCharDevice != 0:
		return "a character device"
	case m&fs.ModeDevice != 0:
		return "a block device"
	case m&fs.ModeSocket != 0:
		return "a socket"
	}
	return "not a regular file"
}
