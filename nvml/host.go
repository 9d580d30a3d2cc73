package nvml

import (
	"bufio"
	"fmt"
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"time"
)

// HostSource reads host memory and CPU utilisation from /proc when there is
// no GPU to read.
type HostSource struct {
	Reason string
	// Root is where proc lives; tests point it at a fake.
	Root string
	now  func() time.Time

	// mu guards the CPU counters between two Reads and closed, so that the
	// host keeps Source's contract as the GPU does.
	mu                  sync.Mutex
	closed              bool
	lastBusy, lastTotal uint64
}

// NewHost reads the host, saying why in reason.
func NewHost(reason string) *HostSource {
	return &HostSource{Reason: reason, Root: "/proc", now: time.Now}
}

// Read takes one reading.
func (h *HostSource) Read() Snapshot {
	h.mu.Lock()
	defer h.mu.Unlock()
	s := Snapshot{Time: h.now(), Source: "host", Reason: h.Reason}
	if h.closed {
		s.Err = ErrClosed.Error()
		return s
	}
	host := &Host{CPUs: runtime.NumCPU()}
	mem, err := readMeminfo(h.Root + "/meminfo")
	if err != nil {
		s.Err = err.Error()
	} else {
		host.MemTotalBytes, host.MemAvailableBytes = mem["MemTotal"], mem["MemAvailable"]
	}
	busy, total, err := readStat(h.Root + "/stat")
	if err == nil {
		if h.lastTotal != 0 && total > h.lastTotal {
			host.CPUUtilPct = ptr(100 * float64(busy-h.lastBusy) / float64(total-h.lastTotal))
		}
		h.lastBusy, h.lastTotal = busy, total
	} else if s.Err == "" {
		s.Err = err.Error()
	}
	s.Host = host
	return s
}

// Close ends reading; it holds nothing to release.
func (h *HostSource) Close() error {
	h.mu.Lock()
	h.closed = true
	h.mu.Unlock()
	return nil
}

// HostMemory reads the host's total and available memory from
// /proc/meminfo: the one place moetop reads it, for the host sampler and
// for the check that a CPU layer fits before it is prepared.
func HostMemory() (total, available uint64, err error) {
	m, err := readMeminfo("/proc/meminfo")
	if err != nil {
		return 0, 0, err
	}
	return m["MemTotal"], m["MemAvailable"], nil
}

// readMeminfo returns /proc/meminfo's fields in bytes.
func readMeminfo(path string) (map[string]uint64, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("host memory: %w", err)
	}
	defer f.Close()
	m := map[string]uint64{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), ":")
		if !ok {
			continue
		}
		fields := strings.Fields(v)
		if len(fields) == 0 {
			continue
		}
		n, err := strconv.ParseUint(fields[0], 10, 64)
		if err != nil {
			continue
		}
		if len(fields) > 1 && fields[1] == "kB" {
			n <<= 10
		}
		m[k] = n
	}
	if _, ok := m["MemTotal"]; !ok {
		return nil, fmt.Errorf("host memory: %s has no MemTotal", path)
	}
	if _, ok := m["MemAvailable"]; !ok {
		m["MemAvailable"] = m["MemFree"] // kernels before 3.14
	}
	return m, sc.Err()
}

// readStat returns busy and total jiffies of all CPUs from /proc/stat.
func readStat(path string) (busy, total uint64, err error) {
	f, err := os.Open(path)
	if err != nil {
		return 0, 0, fmt.Errorf("host CPU: %w", err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	if !sc.Scan() {
		return 0, 0, fmt.Errorf("host CPU: %s is empty", path)
	}
	fields := strings.Fields(sc.Text())
	if len(fields) < 5 || fields[0] != "cpu" {
		return 0, 0, fmt.Errorf("host CPU: unexpected first line in %s", path)
	}
	for i, v := range fields[1:] {
		n, err := strconv.ParseUint(v, 10, 64)
		if err != nil {
			return 0, 0, fmt.Errorf("host CPU: %s: %w", path, err)
		}
		total += n
		if i != 3 && i != 4 { // idle and iowait
			busy += n
		}
	}
	return busy, total, nil
}
