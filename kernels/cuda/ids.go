package cuda

/*
#include "calls.h"
*/
import "C"

import (
	"fmt"
	"unsafe"

	"github.com/moetop/moetop/kernels"
)

// Device attributes that place a device on the PCI bus
// (CUdevice_attribute in cuda.h).
const (
	attrPCIBusID    = 33 // CU_DEVICE_ATTRIBUTE_PCI_BUS_ID
	attrPCIDeviceID = 34 // CU_DEVICE_ATTRIBUTE_PCI_DEVICE_ID
	attrPCIDomainID = 50 // CU_DEVICE_ATTRIBUTE_PCI_DOMAIN_ID
)

// DeviceID is what ties a CUDA ordinal to the NVML device that reads it:
// the two numberings differ under CUDA_VISIBLE_DEVICES or CUDA's own
// device order, the PCI bus id does not.
type DeviceID struct {
	Ordinal  int
	Name     string
	PCIBusID string // "0000:1b:00.0", as cuDeviceGetPCIBusId prints it
}

// DeviceIDs lists every device CUDA sees, by ordinal.
func DeviceIDs(libDir string) ([]DeviceID, error) {
	if _, err := Load(libDir); err != nil {
		return nil, err
	}
	var n C.int
	if err := check("cuDeviceGetCount", C.call_cuDeviceGetCount(&n)); err != nil {
		return nil, fmt.Errorf("%w: %v", kernels.ErrNoGPU, err)
	}
	ids := make([]DeviceID, int(n))
	for i := range ids {
		var dev C.CUdevice
		if err := check("cuDeviceGet", C.call_cuDeviceGet(&dev, C.int(i))); err != nil {
			return nil, err
		}
		name := make([]byte, 256)
		if err := check("cuDeviceGetName", C.call_cuDeviceGetName((*C.char)(unsafe.Pointer(&name[0])), 256, dev)); err != nil {
			return nil, err
		}
		var pci [3]C.int
		for j, attr := range []C.int{attrPCIDomainID, attrPCIBusID, attrPCIDeviceID} {
			if err := check("cuDeviceGetAttribute(PCI)", C.call_cuDeviceGetAttribute(&pci[j], attr, dev)); err != nil {
				return nil, err
			}
		}
		ids[i] = DeviceID{Ordinal: i, Name: C.GoString((*C.char)(unsafe.Pointer(&name[0]))),
			PCIBusID: fmt.Sprintf("%04x:%02x:%02x.0", int(pci[0]), int(pci[1]), int(pci[2]))}
	}
	return ids, nil
}
