package cuda

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// fakeCompiler counts its calls and returns a CUBIN naming its request.
type fakeCompiler struct {
	calls int
	last  CompileRequest
	err   error
}

func (f *fakeCompiler) compile(r CompileRequest) ([]byte, error) {
	f.calls++
	f.last = r
	if f.err != nil {
		return nil, f.err
	}
	return []byte("\x7fELF cubin of " + r.Name + " " + strings.Join(r.Options, " ")), nil
}

func testBuilder(dir string, fc *fakeCompiler, notice *bytes.Buffer) *Builder {
	b := &Builder{Dir: dir, Compile: fc.compile, Version: func() (string, error) { return "12.4", nil }}
	if notice != nil {
		b.Notice = notice
	}
	return b
}

var prog = Program{Name: "k.cu", What: "test kernels", Source: "extern \"C\" __global__ void k() {}"}

func TestCacheKeyChangesWithEverythingThatChangesTheCUBIN(t *testing.T) {
	base := CacheKey("12.4", "sm_90", []string{"--fmad=false"}, "k.cu", "src")
	for _, c := range []struct {
		name string
		key  string
	}{
		{"another NVRTC version", CacheKey("13.0", "sm_90", []string{"--fmad=false"}, "k.cu", "src")},
		{"another architecture", CacheKey("12.4", "sm_90a", []string{"--fmad=false"}, "k.cu", "src")},
		{"another option", CacheKey("12.4", "sm_90", []string{"--fmad=true"}, "k.cu", "src")},
		{"no options", CacheKey("12.4", "sm_90", nil, "k.cu", "src")},
		{"options split differently", CacheKey("12.4", "sm_90", []string{"--fmad=", "false"}, "k.cu", "src")},
		{"another source", CacheKey("12.4", "sm_90", []string{"--fmad=false"}, "k.cu", "src2")},
		{"another file name", CacheKey("12.4", "sm_90", []string{"--fmad=false"}, "j.cu", "src")},
		{"a field boundary moved", CacheKey("12.4", "sm_90", []string{"--fmad=false"}, "k.cus", "rc")},
	} {
		if c.key == base {
			t.Errorf("%s: same key", c.name)
		}
	}
	if again := CacheKey("12.4", "sm_90", []string{"--fmad=false"}, "k.cu", "src"); again != base {
		t.Error("the same inputs gave another key")
	}
	if len(base) != 64 {
		t.Errorf("key %q is not a hex SHA-256", base)
	}
}

func TestProgramOptionsArePerProgram(t *testing.T) {
	for _, c := range []struct {
		name         string
		p            Program
		major, minor int
		want         []string
		wantErr      string
	}{
		{"a plain program gets only its architecture", Program{Name: "a"}, 9, 0, []string{"--gpu-architecture=sm_90"}, ""},
		{"its own options follow", Program{Name: "a", Options: []string{"--fmad=false"}}, 8, 6, []string{"--gpu-architecture=sm_86", "--fmad=false"}, ""},
		{"an arch-specific program gets sm_90a", Program{Name: "a", ArchSpecific: true}, 9, 0, []string{"--gpu-architecture=sm_90a"}, ""},
		{"an arch-specific program refuses sm_80", Program{Name: "a", ArchSpecific: true}, 8, 0, nil, "needs sm_90a"},
		{"an architecture among the options is refused", Program{Name: "a", Options: []string{"-arch=sm_80"}}, 9, 0, nil, "comes from the device"},
	} {
		t.Run(c.name, func(t *testing.T) {
			fc := &fakeCompiler{}
			_, err := testBuilder("", fc, nil).CUBIN(c.p, c.major, c.minor)
			if c.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), c.wantErr) {
					t.Fatalf("got %v, want an error saying %q", err, c.wantErr)
				}
				if fc.calls != 0 {
					t.Error("the compiler ran anyway")
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if strings.Join(fc.last.Options, " ") != strings.Join(c.want, " ") {
				t.Errorf("options %q, want %q", fc.last.Options, c.want)
			}
		})
	}
	if strings.Contains(strings.Join(layerProgram.Options, " "), "gpu-architecture") ||
		!strings.Contains(strings.Join(layerProgram.Options, " "), "--fmad=false") {
		t.Errorf("layer.cu's options %q: want --fmad=false and no architecture", layerProgram.Options)
	}
}

func TestASecondLoadReadsTheDiskCacheWithoutCompiling(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "moetop", "cubin") // not there yet
	fc := &fakeCompiler{}
	var notice bytes.Buffer
	first, err := testBuilder(dir, fc, &notice).CUBIN(prog, 9, 0)
	if err != nil {
		t.Fatal(err)
	}
	if fc.calls != 1 {
		t.Fatalf("first load compiled %d times", fc.calls)
	}
	want := "moetop: compiling test kernels for sm_90 (cached in " + dir + ")\n"
	if notice.String() != want {
		t.Errorf("notice %q, want %q", notice.String(), want)
	}
	// A new builder is a new process: nothing in memory.
	notice.Reset()
	second, err := testBuilder(dir, fc, &notice).CUBIN(prog, 9, 0)
	if err != nil {
		t.Fatal(err)
	}
	if fc.calls != 1 {
		t.Errorf("second load compiled (%d calls)", fc.calls)
	}
	if !bytes.Equal(first, second) {
		t.Error("the cached CUBIN differs from the compiled one")
	}
	if notice.Len() != 0 {
		t.Errorf("a cached load printed %q", notice.String())
	}
	entries, _ := os.ReadDir(dir)
	if len(entries) != 1 || !strings.HasSuffix(entries[0].Name(), ".cubin") {
		t.Errorf("cache holds %v, want one .cubin and no temporary file", entries)
	}
}

func TestTheSameBuilderAnswersFromMemory(t *testing.T) {
	fc := &fakeCompiler{}
	b := testBuilder("", fc, nil)
	for i := 0; i < 3; i++ {
		if _, err := b.CUBIN(prog, 9, 0); err != nil {
			t.Fatal(err)
		}
	}
	if fc.calls != 1 {
		t.Errorf("compiled %d times", fc.calls)
	}
	if _, err := b.CUBIN(prog, 8, 0); err != nil || fc.calls != 2 {
		t.Errorf("another architecture: err %v, %d compiles, want 2", err, fc.calls)
	}
}

func TestACorruptCacheEntryIsRecompiledNotTrusted(t *testing.T) {
	for _, c := range []struct {
		name    string
		corrupt func([]byte) []byte
	}{
		{"truncated", func(b []byte) []byte { return b[:len(b)-3] }},
		{"cut inside the header", func(b []byte) []byte { return b[:10] }},
		{"empty", func([]byte) []byte { return nil }},
		{"one CUBIN byte flipped", func(b []byte) []byte { b[len(b)-1] ^= 1; return b }},
		{"a longer CUBIN than the header says", func(b []byte) []byte { return append(b, 0) }},
		{"another file's format", func(b []byte) []byte { return []byte("not a cache entry at all, but long enough to have a header") }},
	} {
		t.Run(c.name, func(t *testing.T) {
			dir := t.TempDir()
			fc := &fakeCompiler{}
			good, err := testBuilder(dir, fc, nil).CUBIN(prog, 9, 0)
			if err != nil {
				t.Fatal(err)
			}
			entries, _ := filepath.Glob(filepath.Join(dir, "*.cubin"))
			if len(entries) != 1 {
				t.Fatalf("cache holds %v", entries)
			}
			data, _ := os.ReadFile(entries[0])
			if err := os.WriteFile(entries[0], c.corrupt(data), 0o644); err != nil {
				t.Fatal(err)
			}
			var notice bytes.Buffer
			got, err := testBuilder(dir, fc, &notice).CUBIN(prog, 9, 0)
			if err != nil {
				t.Fatal(err)
			}
			if fc.calls != 2 {
				t.Errorf("compiled %d times, want a recompile", fc.calls)
			}
			if !bytes.Equal(got, good) {
				t.Errorf("got %q", got)
			}
			if !strings.Contains(notice.String(), "unreadable") {
				t.Errorf("notice %q does not say the cached copy was unreadable", notice.String())
			}
			// The recompiled entry replaced the bad one.
			fc2 := &fakeCompiler{}
			if _, err := testBuilder(dir, fc2, nil).CUBIN(prog, 9, 0); err != nil || fc2.calls != 0 {
				t.Errorf("after the repair: err %v, %d compiles", err, fc2.calls)
			}
		})
	}
}

func TestEntriesRoundTrip(t *testing.T) {
	for _, cubin := range [][]byte{{}, {1}, bytes.Repeat([]byte{0xAB}, 100_000)} {
		got, err := decodeEntry(encodeEntry(cubin))
		if err != nil || !bytes.Equal(got, cubin) {
			t.Errorf("%d bytes: err %v, got %d bytes", len(cubin), err, len(got))
		}
	}
}

func TestACompileErrorIsNotCached(t *testing.T) {
	dir := t.TempDir()
	fc := &fakeCompiler{err: errors.New("nvrtcCompileProgram: syntax error")}
	if _, err := testBuilder(dir, fc, nil).CUBIN(prog, 9, 0); err == nil || !strings.Contains(err.Error(), "compiling k.cu for sm_90") {
		t.Fatalf("got %v, want the compile error with the program and architecture", err)
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 0 {
		t.Errorf("a failed compile left %v", entries)
	}
}

func TestAnUnwritableCacheStillReturnsTheCUBIN(t *testing.T) {
	file := filepath.Join(t.TempDir(), "a-file")
	os.WriteFile(file, nil, 0o644)
	fc := &fakeCompiler{}
	var notice bytes.Buffer
	cubin, err := testBuilder(filepath.Join(file, "cubin"), fc, &notice).CUBIN(prog, 9, 0)
	if err != nil || len(cubin) == 0 {
		t.Fatalf("err %v", err)
	}
	if !strings.Contains(notice.String(), "could not cache") {
		t.Errorf("notice %q does not say the CUBIN was not cached", notice.String())
	}
}

func TestWithoutACacheDirectoryTheNoticeSaysSo(t *testing.T) {
	var notice bytes.Buffer
	if _, err := testBuilder("", &fakeCompiler{}, &notice).CUBIN(prog, 9, 0); err != nil {
		t.Fatal(err)
	}
	if want := "moetop: compiling test kernels for sm_90 (not cached: no cache directory)\n"; notice.String() != want {
		t.Errorf("notice %q, want %q", notice.String(), want)
	}
}

func TestTheCacheDirectoryComesFromTheEnvironment(t *testing.T) {
	t.Setenv("XDG_CACHE_HOME", "/xdg")
	for _, c := range []struct{ env, want string }{
		{"", "/xdg/moetop/cubin"},
		{"/elsewhere", "/elsewhere"},
		{"off", ""},
	} {
		t.Setenv(CacheEnv, c.env)
		if got := DefaultCacheDir(); got != c.want {
			t.Errorf("%s=%q: %q, want %q", CacheEnv, c.env, got, c.want)
		}
	}
}
