package trace

import (
	"errors"
	"fmt"
	"io/fs"
	"os"

	"github.com/moetop/moetop/files"
)

// ErrNotRegular is returned for a path that is a directory, a FIFO, a device
// or a socket: a trace or a dump is always a regular file.
var ErrNotRegular = files.ErrNotRegular

// OpenFile opens path for reading if it is a regular file, without
// blocking (files.OpenRegular), in the trace reader's words.
func OpenFile(path string) (*os.File, error) {
	f, _, err := files.OpenRegular(path)
	var nr *files.NotRegularError
	switch {
	case err == nil:
		return f, nil
	case errors.As(err, &nr):
		return nil, fmt.Errorf("%s is %s: %w", path, nr.Kind, ErrNotRegular)
	case errors.Is(err, fs.ErrNotExist):
		return nil, fmt.Errorf("%s: no such file: %w", path, fs.ErrNotExist)
	case errors.Is(err, fs.ErrPermission):
		return nil, fmt.Errorf("%s: permission denied: %w", path, fs.ErrPermission)
	}
	return nil, fmt.Errorf("open %s: %w", path, err)
}
