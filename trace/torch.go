package trace

import (
	"archive/zip"
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math"
	"strings"
)

// A torch.save file (PyTorch ≥ 1.6) is a zip archive of records under one
// folder, named after the file ("archive/" when saved to a buffer):
//
//	archive/data.pkl      the object, pickled; tensors refer to storages
//	archive/byteorder     "little" or "big" (absent before torch 1.13: little)
//	archive/data/0 ...    each storage's raw elements, by key
//	archive/version       "3" (newer torch: .data/version, .format_version, ...)
//
// A tensor pickles as torch._utils._rebuild_tensor_v2(storage, offset,
// size, stride, ...) where storage is the persistent id ('storage',
// torch.LongStorage, '0', 'cpu', numel). We read data.pkl with a restricted
// unpickler and a storage's bytes only when an importer asks for that tensor.

// torchDump is an opened torch.save file.
type torchDump struct {
	root      any
	files     map[string]*zip.File
	prefix    string // "archive/"
	bigEndian bool
}

// openTorch reads a torch.save archive's pickle.
func openTorch(r io.ReaderAt, size int64) (*torchDump, error) {
	head := make([]byte, 4)
	if n, _ := r.ReadAt(head, 0); n < 2 || string(head[:2]) != "PK" {
		if n >= 2 && head[0] == 0x80 && head[1] == 0x02 {
			return nil, invalid("a torch.save file from before PyTorch 1.6 (not a zip); load and save it again with a current torch")
		}
		return nil, invalid("not a torch.save file (it is not a zip archive)")
	}
	z, err := zip.NewReader(r, size)
	if err != nil {
		return nil, invalid("not a readable zip archive (%s)", zipProblem(err))
	}
	d := &torchDump{files: map[string]*zip.File{}}
	for _, f := range z.File {
		d.files[f.Name] = f
		dir, base, ok := strings.Cut(f.Name, "/")
		if ok && base == "data.pkl" && d.prefix == "" {
			d.prefix = dir + "/"
		}
	}
	if d.prefix == "" {
		return nil, invalid("a zip archive without the data.pkl of a torch.save file")
	}
	if _, ok := d.files[d.prefix+"constants.pkl"]; ok {
		return nil, invalid("a TorchScript archive, not a torch.save dump")
	}
	if f, ok := d.files[d.prefix+"byteorder"]; ok {
		b, err := readRecord(f, 16)
		if err != nil {
			return nil, err
		}
		switch string(b) {
		case "little":
		case "big":
			d.bigEndian = true
		default:
			return nil, invalid("byteorder record says %q; want little or big", b)
		}
	}
	data, err := readRecord(d.files[d.prefix+"data.pkl"], maxPickle)
	if err != nil {
		return nil, err
	}
	if d.root, err = unpickle(data); err != nil {
		return nil, err
	}
	return d, nil
}

// readRecord reads a whole zip record of at most limit bytes.
func readRecord(f *zip.File, limit int64) ([]byte, error) {
	if f.UncompressedSize64 > uint64(limit) {
		return nil, invalid("record %s is %d bytes; at most %d expected", f.Name, f.UncompressedSize64, limit)
	}
	rc, err := f.Open()
	if err != nil {
		return nil, invalid("record %s: %s", f.Name, zipProblem(err))
	}
	defer rc.Close()
	b, err := io.ReadAll(io.LimitReader(rc, limit+1))
	if err != nil {
		return nil, invalid("record %s: %s", f.Name, zipProblem(err))
	}
	if int64(len(b)) > limit {
		return nil, invalid("record %s is larger than %d bytes", f.Name, limit)
	}
	return b, nil
}

// zipProblem words archive/zip's errors for a user.
func zipProblem(err error) string {
	switch {
	case errors.Is(err, zip.ErrFormat):
		return "damaged or not a zip archive"
	case errors.Is(err, zip.ErrChecksum):
		return "a record's checksum does not match: the file is damaged"
	case errors.Is(err, zip.ErrAlgorithm):
		return "a record is compressed in a way Go's zip reader does not know"
	case errors.Is(err, io.ErrUnexpectedEOF), errors.Is(err, io.EOF):
		return "the file ends early"
	}
	return err.Error()
}

// element types of torch's storage classes.
type dtype struct {
	size int
	kind byte // 'i' signed, 'u' unsigned, 'b' bool, 'f' float, 'h' half, 'B' bfloat16
}

var storageTypes = map[string]dtype{
	"LongStorage": {8, 'i'}, "IntStorage": {4, 'i'}, "ShortStorage": {2, 'i'}, "CharStorage": {1, 'i'},
	"ByteStorage": {1, 'u'}, "BoolStorage": {1, 'b'}, "DoubleStorage": {8, 'f'}, "FloatStorage": {4, 'f'},
	"HalfStorage": {2, 'h'}, "BFloat16Storage": {2, 'B'},
}

// tensor reads a tensor's elements in row-major order, as float64 (exact
// for integer counts below 2^53). what names it in messages.
func (d *torchDump) tensor(v any, what string) (shape []int, vals []float64, err error) {
	t, ok := v.(*pyTensor)
	if !ok {
		return nil, nil, invalid("%s is %s, not a tensor", what, describe(v))
	}
	dt, ok := storageTypes[t.storage.class]
	if !ok {
		return nil, nil, invalid("%s has element type %s; want integers or floats", what, t.storage.class)
	}
	n := int64(1)
	shape = make([]int, len(t.size))
	last := t.offset // the highest storage index the tensor reaches
	for i, s := range t.size {
		if s < 0 || t.stride[i] < 0 {
			return nil, nil, invalid("%s has a negative size or stride", what)
		}
		if s > 0 && n > MaxValues/s {
			return nil, nil, invalid("%s has more than %d elements", what, MaxValues)
		}
		n *= s
		shape[i] = int(s)
		if s > 0 {
			if t.stride[i] > math.MaxInt64/s {
				return nil, nil, invalid("%s has a stride too large for its storage", what)
			}
			last += (s - 1) * t.stride[i]
			if last < 0 {
				return nil, nil, invalid("%s has a stride too large for its storage", what)
			}
		}
	}
	if n == 0 {
		return shape, nil, nil
	}
	if last >= t.storage.numel || t.storage.numel > MaxValues*8/int64(dt.size) {
		return nil, nil, invalid("%s reaches element %d of a storage of %d", what, last, t.storage.numel)
	}
	raw, err := d.storageBytes(t.storage, dt, what)
	if err != nil {
		return nil, nil, err
	}
	order := binary.ByteOrder(binary.LittleEndian)
	if d.bigEndian {
		order = binary.BigEndian
	}
	vals = make([]float64, n)
	idx := make([]int64, len(t.size))
	for i := range vals {
		pos := t.offset
		for k, j := range idx {
			pos += j * t.stride[k]
		}
		vals[i] = decode(raw[pos*int64(dt.size):], dt, order)
		for k := len(idx) - 1; k >= 0; k-- { // next index, last axis fastest
			idx[k]++
			if idx[k] < t.size[k] {
				break
			}
			idx[k] = 0
		}
	}
	return shape, vals, nil
}

// storageBytes reads a storage record, which must hold numel elements.
func (d *torchDump) storageBytes(s *pyStorage, dt dtype, what string) ([]byte, error) {
	name := d.prefix + "data/" + s.key
	f, ok := d.files[name]
	if !ok {
		return nil, invalid("%s: the archive has no record data/%s", what, s.key)
	}
	want := s.numel * int64(dt.size)
	if f.UncompressedSize64 < uint64(want) {
		return nil, invalid("%s: record data/%s holds %d bytes, its storage needs %d", what, s.key, f.UncompressedSize64, want)
	}
	rc, err := f.Open()
	if err != nil {
		return nil, invalid("%s: record data/%s: %s", what, s.key, zipProblem(err))
	}
	defer rc.Close()
	// ReadAll grows with the bytes that really come, so a header that
	// claims a huge record costs nothing until the data is there.
	b, err := io.ReadAll(io.LimitReader(rc, want))
	if err != nil {
		return nil, invalid("%s: record data/%s: %s", what, s.key, zipProblem(err))
	}
	if int64(len(b)) < want {
		return nil, invalid("%s: record data/%s ends after %d of its %d bytes", what, s.key, len(b), want)
	}
	return b, nil
}

func decode(b []byte, dt dtype, o binary.ByteOrder) float64 {
	switch dt.kind {
	case 'i':
		switch dt.size {
		case 8:
			return float64(int64(o.Uint64(b)))
		case 4:
			return float64(int32(o.Uint32(b)))
		case 2:
			return float64(int16(o.Uint16(b)))
		}
		return float64(int8(b[0]))
	case 'u', 'b':
		return float64(b[0])
	case 'f':
		if dt.size == 8 {
			return math.Float64frombits(o.Uint64(b))
		}
		return float64(math.Float32frombits(o.Uint32(b)))
	case 'B':
		return float64(math.Float32frombits(uint32(o.Uint16(b)) << 16))
	}
	return halfToFloat(o.Uint16(b))
}

// halfToFloat widens an IEEE 754 binary16 value.
func halfToFloat(h uint16) float64 {
	sign := 1.0
	if h&0x8000 != 0 {
		sign = -1
	}
	exp := int(h>>10) & 0x1f
	frac := float64(h & 0x3ff)
	switch exp {
	case 0:
		return sign * frac * math.Pow(2, -24)
	case 0x1f:
		if frac == 0 {
			return math.Inf(int(sign))
		}
		return math.NaN()
	}
	return sign * (1 + frac/1024) * math.Pow(2, float64(exp-15))
}

// describe names a pickled value's type for messages, without printing it
// (a pickle can make a list that holds itself).
func describe(v any) string {
	switch v := v.(type) {
	case nil:
		return "None"
	case bool:
		return "a bool"
	case int64:
		return "an int"
	case float64:
		return "a float"
	case string:
		return "a string"
	case pyTuple:
		return fmt.Sprintf("a tuple of %d", len(v))
	case *pyList:
		return fmt.Sprintf("a list of %d", len(v.items))
	case *pyDict:
		return "a dict"
	case *pyTensor:
		return "a tensor"
	case *pyStorage:
		return "a storage"
	case pyGlobal:
		return v.module + "." + v.name
	case *pyObject:
		return "a " + v.class
	}
	return "something else"
}

// dictKeys lists a dict's string keys, for messages.
func dictKeys(d *pyDict) string {
	var ks []string
	for _, k := range d.keys {
		if s, ok := k.(string); ok && len(ks) < 12 {
			ks = append(ks, s)
		}
	}
	if len(ks) == 0 {
		return "no named fields"
	}
	return strings.Join(ks, ", ")
}

// bytesReaderAt lets the importers' tests and fuzzers read a dump from
// memory.
func bytesReaderAt(b []byte) (io.ReaderAt, int64) { return bytes.NewReader(b), int64(len(b)) }
