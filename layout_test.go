package moetop_test

import (
	"bufio"
	"os"
	"os/exec"
	"slices"
	"strings"
	"testing"
)

const module = "github.com/moetop/moetop/"

// row is one line of the README's Layout table.
type row struct {
	path    string
	imports []string // of ours; nil with any
	any     bool
	cgo     bool
}

// layoutTable reads the README's Layout table: the layering is written
// down once, where people read it, and this test holds the code to it.
func layoutTable(t *testing.T) []row {
	t.Helper()
	f, err := os.Open("README.md")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var rows []row
	in := false
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := sc.Text()
		if strings.HasPrefix(line, "| path | holds | imports | cgo |") {
			in = true
			continue
		}
		if !in || strings.HasPrefix(line, "|---") {
			continue
		}
		if !strings.HasPrefix(line, "|") {
			if len(rows) > 0 {
				break
			}
			continue
		}
		cells := strings.Split(strings.Trim(line, "|"), "|")
		if len(cells) != 4 {
			t.Fatalf("Layout row %q: want 4 cells", line)
		}
		clean := func(s string) string { return strings.Trim(strings.TrimSpace(s), "`/") }
		r := row{path: clean(cells[0]), cgo: strings.TrimSpace(cells[3]) == "yes"}
		switch imp := strings.TrimSpace(cells[2]); imp {
		case "any":
			r.any = true
		case "none":
		default:
			for _, p := range strings.Split(imp, ",") {
				r.imports = append(r.imports, clean(p))
			}
		}
		rows = append(rows, r)
	}
	if len(rows) == 0 {
		t.Fatal("README.md has no Layout table")
	}
	return rows
}

func TestImportsFollowTheLayoutTable(t *testing.T) {
	if testing.Short() {
		t.Skip("skipping: go list -deps of every package is slow in -short mode")
	}
	rows := layoutTable(t)
	listed := map[string]bool{}
	for _, r := range rows {
		listed[r.path] = true
	}
	out, err := exec.Command("go", "list", "./...").Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	for _, p := range strings.Fields(string(out)) {
		if p == strings.TrimSuffix(module, "/") {
			continue
		}
		if rel := strings.TrimPrefix(p, module); !listed[rel] {
			t.Errorf("package %s is not in the README's Layout table", rel)
		}
	}
	for _, r := range rows {
		if r.any {
			continue
		}
		// Direct imports: each arrow of the graph is checked where it
		// starts, so a row lists what its package uses itself.
		out, err := exec.Command("go", "list", "-f", `{{join .Imports "\n"}}`, "./"+r.path).Output()
		if err != nil {
			t.Fatalf("go list ./%s: %v", r.path, err)
		}
		for _, dep := range strings.Fields(string(out)) {
			rel, ours := strings.CutPrefix(dep, module)
			if !ours || rel == r.path {
				continue
			}
			if !slices.Contains(r.imports, rel) {
				t.Errorf("%s imports %s, which the Layout table does not allow (it allows %v)", r.path, rel, r.imports)
			}
		}
	}
}

func TestCgoFreePackagesBuildWithoutCgo(t *testing.T) {
	if testing.Short() {
		t.Skip("skipping: building without cgo is slow in -short mode")
	}
	var pkgs []string
	for _, r := range layoutTable(t) {
		if !r.cgo {
			pkgs = append(pkgs, "./"+r.path)
		}
	}
	cmd := exec.Command("go", append([]string{"build", "-o", os.DevNull}, pkgs...)...)
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("CGO_ENABLED=0 go build %v: %v\n%s", pkgs, err, out)
	}
}
