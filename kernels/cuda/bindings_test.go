package cuda

import (
	"os/exec"
	"testing"
)

// TestGeneratedBindingsMatchDlH: calls.h and symbols.h are written from
// dl.h by scripts/gencalls.py; an edit of dl.h without a rerun fails here.
func TestGeneratedBindingsMatchDlH(t *testing.T) {
	python, err := exec.LookPath("python3")
	if err != nil {
		t.Skip("no python3 to run scripts/gencalls.py")
	}
	out, err := exec.Command(python, "../../scripts/gencalls.py", "--check").CombinedOutput()
	if err != nil {
		t.Fatalf("gencalls.py --check: %v\n%s", err, out)
	}
}
