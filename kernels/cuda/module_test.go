package cuda

import (
	"errors"
	"testing"
)

// The parts of a module's lifetime that need no driver: once its device is
// closed nothing loads, looks up or launches through it.
func TestNothingLoadsOrRunsAfterItsDeviceClosed(t *testing.T) {
	d := &Device{Major: 9}
	if err := d.unloadModules(); err != nil { // no modules: no driver call
		t.Fatal(err)
	}
	fc := &fakeCompiler{}
	if _, err := d.LoadWith(testBuilder("", fc, nil), prog); !errors.Is(err, ErrModuleClosed) {
		t.Errorf("load after close: %v, want ErrModuleClosed", err)
	}
	if fc.calls != 0 {
		t.Error("a closed device compiled")
	}
	m := &Module{dev: d, name: "k.cu", funcs: map[string]*Function{}}
	m.closed.Store(true)
	if _, err := m.Function("k"); !errors.Is(err, ErrModuleClosed) {
		t.Errorf("lookup in an unloaded module: %v, want ErrModuleClosed", err)
	}
	f := &Function{mod: m, name: "k"}
	if err := f.Launch(LaunchConfig{Grid: D(1), Block: D(1)}, nil); !errors.Is(err, ErrModuleClosed) {
		t.Errorf("launch from an unloaded module: %v, want ErrModuleClosed", err)
	}
}

func TestAProgramTheDeviceCannotRunIsRefusedBeforeCompiling(t *testing.T) {
	d := &Device{Major: 8, Minor: 0}
	fc := &fakeCompiler{}
	p := prog
	p.ArchSpecific = true
	if _, err := d.LoadWith(testBuilder("", fc, nil), p); !errors.Is(err, ErrArch) || fc.calls != 0 {
		t.Errorf("got %v after %d compiles, want ErrArch and none", err, fc.calls)
	}
}
