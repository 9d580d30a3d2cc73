package stream

import "time"

// Snapshot is one reading of every device a run uses, or of the host when
// there is no GPU. A nil field means the device does not support it
// ("n/a"), never 0.
type Snapshot struct {
	Time time.Time `json:"time"`
	// Source is "nvml" or "host".
	Source string `json:"source"`
	// Reason says why the host is read instead of a GPU.
	Reason  string    `json:"reason,omitempty"`
	Driver  string    `json:"driver,omitempty"`
	CUDA    string    `json:"cuda_driver,omitempty"`
	Devices []Reading `json:"devices,omitempty"`
	Host    *Host     `json:"host,omitempty"`
	// Err is a failure of the whole reading; device failures are in Reading.Err.
	Err string `json:"err,omitempty"`
}

// Reading is one GPU. Units are in the field names.
type Reading struct {
	// Index is NVML's index of the device (not always the CUDA ordinal).
	Index         int       `json:"index"`
	Name          string    `json:"name,omitempty"`
	UUID          string    `json:"uuid,omitempty"`
	PCIBusID      string    `json:"pci_bus_id,omitempty"`
	MemTotalBytes *uint64   `json:"mem_total_bytes,omitempty"`
	MemUsedBytes  *uint64   `json:"mem_used_bytes,omitempty"`
	MemFreeBytes  *uint64   `json:"mem_free_bytes,omitempty"`
	MemReservedB  *uint64   `json:"mem_reserved_bytes,omitempty"`
	UtilPct       *uint32   `json:"util_pct,omitempty"`
	MemUtilPct    *uint32   `json:"mem_util_pct,omitempty"`
	PowerW        *float64  `json:"power_w,omitempty"`
	PowerLimitW   *float64  `json:"power_limit_w,omitempty"`
	TempC         *uint32   `json:"temp_c,omitempty"`
	SMClockMHz    *uint32   `json:"sm_clock_mhz,omitempty"`
	MemClockMHz   *uint32   `json:"mem_clock_mhz,omitempty"`
	PCIeRxKBps    *uint32   `json:"pcie_rx_kbps,omitempty"`
	PCIeTxKBps    *uint32   `json:"pcie_tx_kbps,omitempty"`
	Processes     []Process `json:"processes,omitempty"`
	// Err is the device's error state (for example "GPU is lost"); the
	// fields read before it are kept.
	Err string `json:"err,omitempty"`
}

// Process is a compute process on a GPU.
type Process struct {
	PID       uint32  `json:"pid"`
	UsedBytes *uint64 `json:"used_bytes,omitempty"`
}

// Host is the host fallback's reading.
type Host struct {
	MemTotalBytes     uint64   `json:"mem_total_bytes"`
	MemAvailableBytes uint64   `json:"mem_available_bytes"`
	CPUUtilPct        *float64 `json:"cpu_util_pct,omitempty"`
	CPUs              int      `json:"cpus"`
}

// FreeBytes is the free memory of the i-th device of the snapshot, or of
// the host when the snapshot is of the host; ok is false when unknown.
func (s *Snapshot) FreeBytes(i int) (free, total uint64, ok bool) {
	if s == nil {
		return 0, 0, false
	}
	if s.Host != nil {
		return s.Host.MemAvailableBytes, s.Host.MemTotalBytes, true
	}
	if i >= 0 && i < len(s.Devices) {
		d := s.Devices[i]
		if d.MemFreeBytes != nil && d.MemTotalBytes != nil {
			return *d.MemFreeBytes, *d.MemTotalBytes, true
		}
	}
	return 0, 0, false
}
