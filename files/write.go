package files

import (
	"fmt"
	"io"
	"os"
	"path/filepath"
)

// WriteAtomic writes path whole or not at all: write fills a temporary
// file in the same folder, which then replaces path by a rename, so a
// reader never sees half a file and a failed write leaves the old one.
// The file is readable by all (0644), as a file a user shares with other
// ranks or hosts must be.
func WriteAtomic(path string, write func(io.Writer) error) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".*")
	if err != nil {
		return fmt.Errorf("create %s: %w", path, err)
	}
	defer os.Remove(tmp.Name()) // after the rename, a no-op
	if err := write(tmp); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := os.Chmod(tmp.Name(), 0o644); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	return nil
}
