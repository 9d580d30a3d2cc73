package cuda

/*
#include <stdlib.h>
#include "calls.h"
*/
import "C"

import (
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"runtime"
	"sync/atomic"
	"unsafe"
)

// NCCL through dlopen, like cuBLAS: libnccl.so.2 is opened at run time and
// on its own, so a machine without NCCL still runs every single-GPU
// backend, and expert parallelism says plainly what is missing.

// ErrNoNCCL is NCCL that cannot be opened (not installed, not on the
// loader's path, too old, or built for another glibc).
var ErrNoNCCL = errors.New("NCCL not available")

// NVLSEnv is NCCL's switch for NVLink SHARP (NVLS).
const NVLSEnv = "NCCL_NVLS_ENABLE"

// KeepNVLSOff sets NCCL_NVLS_ENABLE=0 in this process's environment unless
// the user set it to something, and says whether it did. LoadNCCL calls
// it before opening NCCL (NCCL reads the variable when it initialises), and
// a process that starts ranks should call it before starting them, so that
// every rank inherits it.
//
// Why: NVLS runs collectives on NVSwitch multicast objects, which NCCL
// creates with cuMulticastCreate. Multicast is a resource of the whole
// NVSwitch fabric, shared by every process on the host and unavailable or
// unsafe to use in some virtualised or partitioned setups; the machines we
// test on require it off. It also reserves GPU memory per communicator that
// moetop's memory model does not count. And it buys moetop nothing: the
// expert exchange is send/recv, which NVLS does not accelerate, and the
// one all-reduce per step carries a single element. moetop itself never
// calls cuMulticastCreate (no binding for it exists in dl.h).
func KeepNVLSOff() (set bool, err error) {
	if os.Getenv(NVLSEnv) != "" {
		return false, nil
	}
	// os.Setenv also sets the C environment in a cgo program, which is
	// where NCCL's getenv looks.
	if err := os.Setenv(NVLSEnv, "0"); err != nil {
		return false, fmt.Errorf("setting %s=0: %w", NVLSEnv, err)
	}
	return true, nil
}

var ncclLoaded atomic.Bool

// LoadNCCL opens libnccl.so.2 once per process, dir first when given, with
// NCCL_NVLS_ENABLE=0 set beforehand (KeepNVLSOff), and returns its version.
// Without NCCL the error matches ErrNoNCCL.
func LoadNCCL(dir string) (NCCLVersion, error) {
	if _, err := KeepNVLSOff(); err != nil {
		return NCCLVersion{}, err
	}
	if _, err := openLib(C.LIB_NCCL, dir); err != nil {
		return NCCLVersion{}, fmt.Errorf("%w: %v (install NCCL 2, libnccl.so.2, or put its directory on LD_LIBRARY_PATH)", ErrNoNCCL, err)
	}
	ncclLoaded.Store(true)
	return GetNCCLVersion()
}

func needNCCL(call string) error {
	if !ncclLoaded.Load() {
		return fmt.Errorf("%s: %w: call LoadNCCL first", call, ErrNoNCCL)
	}
	return nil
}

// NCCLVersion is the library's version.
type NCCLVersion struct{ Major, Minor, Patch int }

func (v NCCLVersion) String() string { return fmt.Sprintf("%d.%d.%d", v.Major, v.Minor, v.Patch) }

// parseNCCLVersion reads NCCL_VERSION_CODE: major·10000 + minor·100 +
// patch from 2.9 on, major·1000 + minor·100 + patch before.
func parseNCCLVersion(code int) NCCLVersion {
	if code >= 10000 {
		return NCCLVersion{code / 10000, code % 10000 / 100, code % 100}
	}
	return NCCLVersion{code / 1000, code % 1000 / 100, code % 100}
}

// GetNCCLVersion is ncclGetVersion.
func GetNCCLVersion() (NCCLVersion, error) {
	if err := needNCCL("ncclGetVersion"); err != nil {
		return NCCLVersion{}, err
	}
	var v C.int
	if err := checkNCCL("ncclGetVersion", C.call_ncclGetVersion(&v), nil); err != nil {
		return NCCLVersion{}, err
	}
	return parseNCCLVersion(int(v)), nil
}

// NCCLResult is ncclResult_t.
type NCCLResult int32

// ncclResult_t values (nccl.h).
const (
	NCCLSuccess            NCCLResult = 0
	NCCLUnhandledCudaError NCCLResult = 1
	NCCLSystemError        NCCLResult = 2
	NCCLInternalError      NCCLResult = 3
	NCCLInvalidArgument    NCCLResult = 4
	NCCLInvalidUsage       NCCLResult = 5
	NCCLRemoteError        NCCLResult = 6 // a peer failed or went away
	NCCLInProgress         NCCLResult = 7 // a non-blocking operation is still running
)

var ncclResultNames = map[NCCLResult]string{
	NCCLSuccess: "ncclSuccess", NCCLUnhandledCudaError: "ncclUnhandledCudaError", NCCLSystemError: "ncclSystemError",
	NCCLInternalError: "ncclInternalError", NCCLInvalidArgument: "ncclInvalidArgument",
	NCCLInvalidUsage: "ncclInvalidUsage", NCCLRemoteError: "ncclRemoteError", NCCLInProgress: "ncclInProgress",
}

func (r NCCLResult) Error() string {
	name, ok := ncclResultNames[r]
	if !ok {
		name = fmt.Sprintf("ncclResult %d", int32(r))
	}
	if ncclLoaded.Load() {
		return fmt.Sprintf("%s (%s)", name, C.GoString(C.call_ncclGetErrorString(C.ncclResult_t(r))))
	}
	return name
}

// checkNCCL turns a result into an error naming the call, with NCCL's own
// last message about comm where it has one (2.13+).
func checkNCCL(call string, r C.ncclResult_t, comm C.ncclComm_t) error {
	if r == 0 {
		return nil
	}
	err := fmt.Errorf("%s: %w", call, NCCLResult(r))
	if C.nccl.ncclGetLastError != nil {
		if msg := C.GoString(C.call_ncclGetLastError(comm)); msg != "" {
			err = fmt.Errorf("%w: %s", err, msg)
		}
	}
	return err
}

// NCCLDataType is ncclDataType_t.
type NCCLDataType int32

const (
	NCCLInt8     NCCLDataType = 0 // ncclInt8, ncclChar
	NCCLUint8    NCCLDataType = 1
	NCCLInt32    NCCLDataType = 2 // ncclInt32, ncclInt
	NCCLUint32   NCCLDataType = 3
	NCCLInt64    NCCLDataType = 4
	NCCLUint64   NCCLDataType = 5
	NCCLFloat16  NCCLDataType = 6 // ncclFloat16, ncclHalf
	NCCLFloat32  NCCLDataType = 7 // ncclFloat32, ncclFloat
	NCCLFloat64  NCCLDataType = 8 // ncclFloat64, ncclDouble
	NCCLBfloat16 NCCLDataType = 9 // ncclBfloat16 (NCCL 2.10+ built with CUDA 11+)
)

var ncclTypeNames = [...]string{"int8", "uint8", "int32", "uint32", "int64", "uint64", "float16", "float32", "float64", "bfloat16"}

func (t NCCLDataType) String() string {
	if t >= 0 && int(t) < len(ncclTypeNames) {
		return ncclTypeNames[t]
	}
	return fmt.Sprintf("ncclDataType %d", int32(t))
}

// Bytes is the size of one element.
func (t NCCLDataType) Bytes() int {
	switch t {
	case NCCLInt8, NCCLUint8:
		return 1
	case NCCLFloat16, NCCLBfloat16:
		return 2
	case NCCLInt32, NCCLUint32, NCCLFloat32:
		return 4
	case NCCLInt64, NCCLUint64, NCCLFloat64:
		return 8
	}
	return 0
}

// NCCLRedOp is ncclRedOp_t.
type NCCLRedOp int32

const (
	NCCLSum  NCCLRedOp = 0
	NCCLProd NCCLRedOp = 1
	NCCLMax  NCCLRedOp = 2
	NCCLMin  NCCLRedOp = 3
	NCCLAvg  NCCLRedOp = 4 // NCCL 2.10+
)

// UniqueID is an ncclUniqueId: 128 opaque bytes that rank 0 makes with
// NewUniqueID and every rank passes to CommInitRank. It travels between
// processes as its bytes (MarshalBinary) or as hex (MarshalText, for JSON
// and line protocols).
type UniqueID [128]byte

// ErrBadUniqueID is bytes that cannot be an ncclUniqueId.
var ErrBadUniqueID = errors.New("bad NCCL unique id")

// NewUniqueID is ncclGetUniqueId. It also starts NCCL's bootstrap
// listener, which the other ranks connect to: call it on rank 0 only.
func NewUniqueID() (UniqueID, error) {
	var id UniqueID
	if err := needNCCL("ncclGetUniqueId"); err != nil {
		return id, err
	}
	var cid C.ncclUniqueId
	if err := checkNCCL("ncclGetUniqueId", C.call_ncclGetUniqueId(&cid), nil); err != nil {
		return id, err
	}
	copy(id[:], unsafe.Slice((*byte)(unsafe.Pointer(&cid)), len(id)))
	return id, nil
}

func (id UniqueID) MarshalBinary() ([]byte, error) { return id[:], nil }

func (id *UniqueID) UnmarshalBinary(b []byte) error {
	if len(b) != len(id) {
		return fmt.Errorf("%w: %d bytes, want %d", ErrBadUniqueID, len(b), len(id))
	}
	copy(id[:], b)
	return nil
}

func (id UniqueID) MarshalText() ([]byte, error) { return []byte(hex.EncodeToString(id[:])), nil }

func (id *UniqueID) UnmarshalText(b []byte) error {
	raw, err := hex.DecodeString(string(b))
	if err != nil {
		return fmt.Errorf("%w: %v", ErrBadUniqueID, err)
	}
	return id.UnmarshalBinary(raw)
}

// Comm is an NCCL communicator: one rank's end.
type Comm struct {
	c          C.ncclComm_t
	rank, size int
	done       atomic.Bool // destroyed or aborted
}

// CommInitRank joins rank (of nranks) to the communicator of id
// (ncclCommInitRank). NCCL binds the rank to the device whose context is
// current on this thread: call it inside Device.Enter. It returns when all
// nranks have joined.
func CommInitRank(nranks int, id UniqueID, rank int) (*Comm, error) {
	call := fmt.Sprintf("ncclCommInitRank(rank %d of %d)", rank, nranks)
	if err := needNCCL(call); err != nil {
		return nil, err
	}
	if nranks < 1 || rank < 0 || rank >= nranks {
		return nil, fmt.Errorf("%s: %w", call, NCCLInvalidArgument)
	}
	var cid C.ncclUniqueId
	copy(unsafe.Slice((*byte)(unsafe.Pointer(&cid)), len(id)), id[:])
	c := &Comm{rank: rank, size: nranks}
	if err := checkNCCL(call, C.call_ncclCommInitRank(&c.c, C.int(nranks), cid, C.int(rank)), nil); err != nil {
		return nil, err
	}
	return c, nil
}

// CommInitAll makes one communicator per device of this process
// (ncclCommInitAll): rank i drives CUDA device devices[i]. NCCL switches
// the calling thread's current device while it works: enter your device
// again afterwards before launching.
func CommInitAll(devices []int) ([]*Comm, error) {
	call := fmt.Sprintf("ncclCommInitAll(devices %v)", devices)
	if err := needNCCL(call); err != nil {
		return nil, err
	}
	if len(devices) == 0 {
		return nil, fmt.Errorf("%s: %w", call, NCCLInvalidArgument)
	}
	cdev := make([]C.int, len(devices))
	for i, d := range devices {
		cdev[i] = C.int(d)
	}
	raw := make([]C.ncclComm_t, len(devices))
	if err := checkNCCL(call, C.call_ncclCommInitAll(&raw[0], C.int(len(devices)), &cdev[0]), nil); err != nil {
		return nil, err
	}
	comms := make([]*Comm, len(devices))
	for i, c := range raw {
		comms[i] = &Comm{c: c, rank: i, size: len(devices)}
	}
	return comms, nil
}

// Rank is this end's rank; Size the number of ranks.
func (c *Comm) Rank() int { return c.rank }
func (c *Comm) Size() int { return c.size }

// errCommDone is a call on a destroyed or aborted communicator.
var errCommDone = errors.New("communicator destroyed or aborted")

func (c *Comm) live(call string) error {
	if c == nil || c.c == nil || c.done.Load() {
		return fmt.Errorf("%s: %w", call, errCommDone)
	}
	return nil
}

// Device is the CUDA device of this rank (ncclCommCuDevice).
func (c *Comm) Device() (int, error) {
	if err := c.live("ncclCommCuDevice"); err != nil {
		return 0, err
	}
	var d C.int
	err := checkNCCL("ncclCommCuDevice", C.call_ncclCommCuDevice(c.c, &d), c.c)
	return int(d), err
}

func countOf(call string, n int) (C.size_t, error) {
	if n < 0 {
		return 0, fmt.Errorf("%s: %d elements: %w", call, n, NCCLInvalidArgument)
	}
	return C.size_t(n), nil
}

// Send enqueues count elements of buf to peer on stream (ncclSend). Sends
// and receives between ranks go in one Group, or they deadlock.
func (c *Comm) Send(buf DevicePtr, count int, dt NCCLDataType, peer int, s Stream) error {
	if err := c.live("ncclSend"); err != nil {
		return err
	}
	call := fmt.Sprintf("ncclSend(rank %d → %d, %d × %v)", c.rank, peer, count, dt)
	n, err := countOf(call, count)
	if err != nil {
		return err
	}
	return checkNCCL(call, C.moetop_nccl_send(C.CUdeviceptr(buf), n, C.int(dt), C.int(peer), c.c, C.uintptr_t(s)), c.c)
}

// Recv enqueues a receive of count elements from peer into buf (ncclRecv).
func (c *Comm) Recv(buf DevicePtr, count int, dt NCCLDataType, peer int, s Stream) error {
	if err := c.live("ncclRecv"); err != nil {
		return err
	}
	call := fmt.Sprintf("ncclRecv(rank %d ← %d, %d × %v)", c.rank, peer, count, dt)
	n, err := countOf(call, count)
	if err != nil {
		return err
	}
	return checkNCCL(call, C.moetop_nccl_recv(C.CUdeviceptr(buf), n, C.int(dt), C.int(peer), c.c, C.uintptr_t(s)), c.c)
}

// AllReduce enqueues an all-reduce of count elements (ncclAllReduce);
// send and recv may be the same buffer.
func (c *Comm) AllReduce(send, recv DevicePtr, count int, dt NCCLDataType, op NCCLRedOp, s Stream) error {
	if err := c.live("ncclAllReduce"); err != nil {
		return err
	}
	call := fmt.Sprintf("ncclAllReduce(rank %d, %d × %v)", c.rank, count, dt)
	n, err := countOf(call, count)
	if err != nil {
		return err
	}
	return checkNCCL(call, C.moetop_nccl_all_reduce(C.CUdeviceptr(send), C.CUdeviceptr(recv), n, C.int(dt), C.int(op), c.c, C.uintptr_t(s)), c.c)
}

// AsyncError is ncclCommGetAsyncError: nil while the communicator is
// healthy, else what went wrong (a peer that died shows here as
// NCCLRemoteError or NCCLSystemError). Poll it while waiting on a stream
// that NCCL work is on, and Abort on an error or a timeout: a dead peer
// otherwise hangs the wait forever.
func (c *Comm) AsyncError() error {
	if err := c.live("ncclCommGetAsyncError"); err != nil {
		return err
	}
	var r C.ncclResult_t
	if err := checkNCCL("ncclCommGetAsyncError", C.call_ncclCommGetAsyncError(c.c, &r), c.c); err != nil {
		return err
	}
	if r == 0 || NCCLResult(r) == NCCLInProgress {
		return nil
	}
	return fmt.Errorf("rank %d: %w", c.rank, NCCLResult(r))
}

// Abort is ncclCommAbort: stops the communicator's work on the device and
// frees it. It may be called from another goroutine to end a call that
// hangs; no call may start on the communicator after it.
func (c *Comm) Abort() error {
	if c == nil || c.c == nil || c.done.Swap(true) {
		return nil
	}
	return checkNCCL("ncclCommAbort", C.call_ncclCommAbort(c.c), nil)
}

// Destroy is ncclCommDestroy: frees the communicator once its work is
// done. Use Abort instead when a peer may be gone.
func (c *Comm) Destroy() error {
	if c == nil || c.c == nil || c.done.Swap(true) {
		return nil
	}
	return checkNCCL("ncclCommDestroy", C.call_ncclCommDestroy(c.c), nil)
}

// groupStart and groupEnd are ncclGroupStart/End; the tests replace them
// to watch which thread they run on.
var (
	groupStart = func() error {
		if err := needNCCL("ncclGroupStart"); err != nil {
			return err
		}
		return checkNCCL("ncclGroupStart", C.call_ncclGroupStart(), nil)
	}
	groupEnd = func() error { return checkNCCL("ncclGroupEnd", C.call_ncclGroupEnd(), nil) }
)

// Group runs fn between ncclGroupStart and ncclGroupEnd, so that the sends
// and receives fn enqueues (every rank's, when one process drives several
// GPUs) are issued as one operation and cannot deadlock on each other.
//
// NCCL keeps the open group per OS thread, and Go moves goroutines between
// threads: a goroutine that opened a group on one thread and closed it on
// another would leave the first thread's group open (the next group there
// swallows its calls) and close a group that is not there. So Group locks
// the goroutine to its thread from start to end; fn must not hand its NCCL
// calls to other goroutines. ncclGroupEnd runs even when fn fails, so the
// group is always closed; fn's error comes first.
func Group(fn func() error) (err error) {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	if err := groupStart(); err != nil {
		return err
	}
	defer func() {
		if endErr := groupEnd(); endErr != nil {
			err = errors.Join(err, endErr)
		}
	}()
	return fn()
}
