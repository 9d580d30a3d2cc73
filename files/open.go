package files

import (
	"errors"
	"io/fs"
	"os"
)

// ErrNotRegular matches a path that is a directory, a named pipe, a
// socket or a device.
var ErrNotRegular = errors.New("not a regular file")

// NotRegularError is such a path, and what it is.
type NotRegularError struct {
	Path string
	// Kind is what it is, in words: "a named pipe (FIFO)", "a directory" …
	Kind string
}

func (e *NotRegularError) Error() string { return e.Path + " is " + e.Kind }

func (e *NotRegularError) Unwrap() error { return ErrNotRegular }

// Kind names what a file that is not regular is.
func Kind(m fs.FileMode) string {
	switch {
	case m.IsDir():
		return "a directory"
	case m&fs.ModeNamedPipe != 0:
		return "a named pipe (FIFO)"
	case m&fs.ModeSocket != 0:
		return "a socket"
	case m&fs.ModeCharDevice != 0:
		return "a character device"
	case m&fs.ModeDevice != 0:
		return "a block device"
	}
	return "not a regular file"
}

// OpenRegular opens path for reading if it is a regular file. The open
// does not block (O_NONBLOCK where there are FIFOs; a regular file reads
// the same), and what is checked is the opened file itself, so nothing can
// swap the path between the check and the read. A path that is not a
// regular file is a *NotRegularError; other failures are os's, wrapping
// fs.ErrNotExist, fs.ErrPermission and the like.
func OpenRegular(path string) (*os.File, os.FileInfo, error) {
	f, err := openNonBlocking(path)
	if err != nil {
		// Opening a socket fails (ENXIO); say what the path is.
		if st, serr := os.Stat(path); serr == nil && !st.Mode().IsRegular() {
			return nil, nil, &NotRegularError{path, Kind(st.Mode())}
		}
		return nil, nil, err
	}
	st, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, nil, err
	}
	if !st.Mode().IsRegular() {
		f.Close()
		return nil, nil, &NotRegularError{path, Kind(st.Mode())}
	}
	return f, st, nil
}
