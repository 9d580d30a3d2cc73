package cuda

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sync"
)

// CacheEnv names the environment variable that moves the CUBIN cache:
// a directory, or "off" for none.
const CacheEnv = "MOETOP_CUBIN_CACHE"

// DefaultCacheDir is where compiled kernels are kept: $MOETOP_CUBIN_CACHE,
// else the user's cache directory (os.UserCacheDir: $XDG_CACHE_HOME or
// ~/.cache on Linux) + moetop/cubin. "" means no disk cache (the variable
// says "off", or there is no home to cache in).
func DefaultCacheDir() string {
	switch v := os.Getenv(CacheEnv); v {
	case "off":
		return ""
	case "":
	default:
		return v
	}
	dir, err := os.UserCacheDir()
	if err != nil {
		return ""
	}
	return filepath.Join(dir, "moetop", "cubin")
}

// Builder turns Programs into CUBINs: from memory, else from the disk
// cache, else by compiling (and then caching). Compiling layer.cu takes
// seconds; loading its CUBIN takes milliseconds, so a second run of moetop
// starts at once.
type Builder struct {
	// Dir is the disk cache; "" keeps CUBINs in memory only.
	Dir string
	// Notice, when set, gets one line before each compile, so that a user
	// knows why the first start is slow.
	Notice io.Writer
	// Compile compiles; nil is CompileNVRTC.
	Compile Compiler
	// Version is the compiler's version, part of every cache key; nil is
	// NVRTCVersion.
	Version func() (string, error)

	mu  sync.Mutex
	mem map[string][]byte
}

// NewBuilder is the builder moetop uses: DefaultCacheDir, notices on
// stderr, NVRTC.
func NewBuilder() *Builder { return &Builder{Dir: DefaultCacheDir(), Notice: os.Stderr} }

var (
	builderMu      sync.Mutex
	defaultBuilder *Builder
)

// DefaultBuilder is the builder Device.Load uses.
func DefaultBuilder() *Builder {
	builderMu.Lock()
	defer builderMu.Unlock()
	if defaultBuilder == nil {
		defaultBuilder = NewBuilder()
	}
	return defaultBuilder
}

// cacheFormat changes whenever the entry layout or what goes into the key
// does, so that old entries are simply not found.
const cacheFormat = "moetop-cubin-1"

// CacheKey names a CUBIN: a hash of everything that changes the compiler's
// output — the compiler's version, the architecture, every option in
// order, the source's name and text.
func CacheKey(version, arch string, options []string, name, source string) string {
	h := sha256.New()
	field := func(s string) {
		// Length-prefixed, so that no two field lists hash alike.
		var n [8]byte
		binary.LittleEndian.PutUint64(n[:], uint64(len(s)))
		h.Write(n[:])
		h.Write([]byte(s))
	}
	field(cacheFormat)
	field(version)
	field(arch)
	field(fmt.Sprint(len(options)))
	for _, o := range options {
		field(o)
	}
	field(name)
	field(source)
	return hex.EncodeToString(h.Sum(nil))
}

// An entry on disk: magic, CUBIN length, SHA-256 of the CUBIN, the CUBIN.
// A truncated or corrupt file fails the length or hash and is recompiled.
var entryMagic = []byte("MOETOPCB")

const entryHeader = 8 + 8 + sha256.Size

func encodeEntry(cubin []byte) []byte {
	sum := sha256.Sum256(cubin)
	out := make([]byte, 0, entryHeader+len(cubin))
	out = append(out, entryMagic...)
	out = binary.LittleEndian.AppendUint64(out, uint64(len(cubin)))
	out = append(out, sum[:]...)
	return append(out, cubin...)
}

// errCorrupt is an entry that is there but not whole.
var errCorrupt = errors.New("corrupt cache entry")

func decodeEntry(b []byte) ([]byte, error) {
	if len(b) < entryHeader || !bytes.Equal(b[:8], entryMagic) {
		return nil, fmt.Errorf("%w: no header", errCorrupt)
	}
	n := binary.LittleEndian.Uint64(b[8:16])
	cubin := b[entryHeader:]
	if uint64(len(cubin)) != n {
		return nil, fmt.Errorf("%w: %d bytes of %d", errCorrupt, len(cubin), n)
	}
	if sum := sha256.Sum256(cubin); !bytes.Equal(sum[:], b[16:entryHeader]) {
		return nil, fmt.Errorf("%w: checksum differs", errCorrupt)
	}
	return cubin, nil
}

func (b *Builder) entryPath(key string) string { return filepath.Join(b.Dir, key+".cubin") }

// load reads a cached CUBIN; a missing one is (nil, nil), a corrupt one an
// error matching errCorrupt.
func (b *Builder) load(key string) ([]byte, error) {
	data, err := os.ReadFile(b.entryPath(key))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	return decodeEntry(data)
}

// store writes an entry atomically: into a temporary file beside it, then
// renamed over it, so that a reader never sees half an entry and two
// processes compiling at once both leave a whole one.
func (b *Builder) store(key string, cubin []byte) error {
	if err := os.MkdirAll(b.Dir, 0o755); err != nil {
		return err
	}
	f, err := os.CreateTemp(b.Dir, key+".*.tmp")
	if err != nil {
		return err
	}
	_, werr := f.Write(encodeEntry(cubin))
	cerr := f.Close()
	if err := errors.Join(werr, cerr); err != nil {
		os.Remove(f.Name())
		return err
	}
	if err := os.Rename(f.Name(), b.entryPath(key)); err != nil {
		os.Remove(f.Name())
		return err
	}
	return nil
}

// CUBIN returns p compiled for a device of compute capability major.minor.
func (b *Builder) CUBIN(p Program, major, minor int) ([]byte, error) {
	arch, err := p.Arch(major, minor)
	if err != nil {
		return nil, err
	}
	opts, err := p.options(arch)
	if err != nil {
		return nil, err
	}
	version := NVRTCVersion
	if b.Version != nil {
		version = b.Version
	}
	v, err := version()
	if err != nil {
		return nil, fmt.Errorf("compiler version: %w", err)
	}
	key := CacheKey(v, arch, opts, p.Name, p.Source)

	b.mu.Lock()
	defer b.mu.Unlock()
	if cubin, ok := b.mem[key]; ok {
		return cubin, nil
	}
	why := ""
	if b.Dir != "" {
		cubin, err := b.load(key)
		if err == nil && cubin != nil {
			b.remember(key, cubin)
			return cubin, nil
		}
		if err != nil {
			why = fmt.Sprintf("; the cached copy was unreadable (%v)", err)
		}
	}
	b.notice(p, arch, why)
	compile := CompileNVRTC
	if b.Compile != nil {
		compile = b.Compile
	}
	cubin, err := compile(CompileRequest{Name: p.Name, Source: p.Source, Options: opts})
	if err != nil {
		return nil, fmt.Errorf("compiling %s for %s: %w", p.Name, arch, err)
	}
	b.remember(key, cubin)
	if b.Dir != "" {
		if err := b.store(key, cubin); err != nil && b.Notice != nil {
			// Not fatal: the CUBIN is in hand, the next run compiles again.
			fmt.Fprintf(b.Notice, "moetop: could not cache compiled kernels: %v\n", err)
		}
	}
	return cubin, nil
}

func (b *Builder) remember(key string, cubin []byte) {
	if b.mem == nil {
		b.mem = map[string][]byte{}
	}
	b.mem[key] = cubin
}

func (b *Builder) notice(p Program, arch, why string) {
	if b.Notice == nil {
		return
	}
	what := p.What
	if what == "" {
		what = p.Name
	}
	where := "not cached: no cache directory"
	if b.Dir != "" {
		where = "cached in " + b.Dir
	}
	fmt.Fprintf(b.Notice, "moetop: compiling %s for %s (%s%s)\n", what, arch, where, why)
}
