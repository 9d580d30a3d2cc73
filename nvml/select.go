package nvml

import (
	"fmt"
	"strconv"
	"strings"

	gonvml "github.com/NVIDIA/go-nvml/pkg/nvml"
)

// Want names a device a run uses, as CUDA knows it. CUDA ordinals and NVML
// indices differ (CUDA_VISIBLE_DEVICES, CUDA_DEVICE_ORDER), so a device is
// matched by what both agree on: its UUID, else its PCI bus id.
type Want struct {
	CUDA     int // the ordinal, for messages
	UUID     string
	PCIBusID string
}

// busID normalises a PCI bus id: NVML writes "00000000:1B:00.0", CUDA
// "0000:1b:00.0". It returns domain, bus, device and function, or ok false.
func busID(s string) (id [4]uint64, ok bool) {
	dom, rest, found := strings.Cut(strings.TrimSpace(s), ":")
	if !found {
		return id, false
	}
	bus, rest, found := strings.Cut(rest, ":")
	if !found {
		return id, false
	}
	dev, fn, found := strings.Cut(rest, ".")
	if !found {
		return id, false
	}
	for i, part := range []string{dom, bus, dev, fn} {
		v, err := strconv.ParseUint(part, 16, 64)
		if err != nil {
			return id, false
		}
		id[i] = v
	}
	return id, true
}

// SamePCIBus says whether two PCI bus ids, as NVML or CUDA print them, name
// the same device.
func SamePCIBus(a, b string) bool {
	x, ok1 := busID(a)
	y, ok2 := busID(b)
	return ok1 && ok2 && x == y
}

// pciBusID reads a device's PCI bus id as NVML prints it.
func pciBusID(d gonvml.Device) string {
	p, r := d.GetPciInfo()
	if r != gonvml.SUCCESS {
		return ""
	}
	b := make([]byte, 0, len(p.BusId))
	for _, c := range p.BusId {
		if c == 0 {
			break
		}
		b = append(b, byte(c))
	}
	return string(b)
}

// matches says whether NVML device d is w.
func (w Want) matches(uuid, bus string) bool {
	if w.UUID != "" && uuid != "" {
		return strings.EqualFold(w.UUID, uuid)
	}
	return w.PCIBusID != "" && SamePCIBus(w.PCIBusID, bus)
}

// selectDevices picks, in the order of wants, the NVML indices of the
// wanted devices; every NVML device when wants is empty.
func selectDevices(lib Library, n int, wants []Want) ([]int, error) {
	if len(wants) == 0 {
		idx := make([]int, n)
		for i := range idx {
			idx[i] = i
		}
		return idx, nil
	}
	type ids struct{ uuid, bus string }
	all := make([]ids, n)
	for i := range all {
		d, r := lib.DeviceGetHandleByIndex(i)
		if r != gonvml.SUCCESS {
			continue
		}
		all[i].uuid, _ = d.GetUUID()
		all[i].bus = pciBusID(d)
	}
	var idx []int
	for _, w := range wants {
		found := -1
		for i, id := range all {
			if w.matches(id.uuid, id.bus) {
				found = i
				break
			}
		}
		if found < 0 {
			return nil, fmt.Errorf("CUDA device %d (%s) is not among NVML's %d devices; is CUDA_VISIBLE_DEVICES hiding it from NVML's view or naming another machine's GPU?",
				w.CUDA, firstOf(w.UUID, w.PCIBusID), n)
		}
		idx = append(idx, found)
	}
	return idx, nil
}

func firstOf(a, b string) string {
	if a != "" {
		return a
	}
	return b
}
