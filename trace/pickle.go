package trace

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"math"
	"strings"
	"unicode/utf8"
)

// A restricted unpickler for the data.pkl of torch.save files. It knows the
// opcodes that Python's pickler writes at protocols 2 to 5 for plain data
// (None, bools, ints, floats, strings, tuples, lists, dicts) and torch's
// tensors; it never runs anything. A call of a callable it does not know
// gives an opaque value instead of failing, so a dump with extra fields still
// reads; only what an importer asks for must be plain data or a tensor.
// Memory stays proportional to the pickle's size: every value costs at least
// an opcode byte, strings are bounded by the bytes left, and the memo is a map
// (its 4-byte indices cannot make us allocate a huge slice).

// maxPickle bounds data.pkl; a routing dump's pickle is kilobytes to a few
// megabytes (its tensors live outside it).
const maxPickle = 64 << 20

type (
	pyTuple  []any
	pyList   struct{ items []any }
	pyDict   struct{ keys, vals []any }
	pyGlobal struct{ module, name string }
	// pyObject is the result of calling or instantiating something this
	// unpickler does not model.
	pyObject struct{ class string }
	// pyStorage is torch's persistent id for a storage: its element type
	// (the storage class name, "LongStorage"), its record key under data/,
	// the device it was saved from and its element count.
	pyStorage struct {
		class, key, location string
		numel                int64
	}
	pyTensor struct {
		storage      *pyStorage
		offset       int64
		size, stride []int64
	}
)

// get returns the value under a string key, the last one set winning as in
// Python.
func (d *pyDict) get(key string) (any, bool) {
	for i := len(d.keys) - 1; i >= 0; i-- {
		if k, ok := d.keys[i].(string); ok && k == key {
			return d.vals[i], true
		}
	}
	return nil, false
}

// pyMark is what MARK pushes: the stack below it is a list's or a tuple's
// start.
type pyMark struct{}

type unpickler struct {
	data  []byte
	pos   int
	stack []any
	marks []int
	memo  map[uint32]any
}

// unpickle runs the pickle in data and returns the object it builds.
func unpickle(data []byte) (v any, err error) {
	if len(data) > maxPickle {
		return nil, invalid("the pickle is %d MiB; a routing dump's is far smaller (limit %d MiB)", len(data)>>20, maxPickle>>20)
	}
	u := &unpickler{data: data, memo: map[uint32]any{}}
	return u.run()
}

func (u *unpickler) fail(format string, a ...any) error {
	return invalid("pickle byte %d: %s", u.pos, fmt.Sprintf(format, a...))
}

func (u *unpickler) read(n int) ([]byte, error) {
	if n < 0 || n > len(u.data)-u.pos {
		return nil, u.fail("ends early (wants %d more bytes)", n)
	}
	b := u.data[u.pos : u.pos+n]
	u.pos += n
	return b, nil
}

func (u *unpickler) uint(n int) (uint64, error) {
	b, err := u.read(n)
	if err != nil {
		return 0, err
	}
	var v uint64
	for i := n - 1; i >= 0; i-- {
		v = v<<8 | uint64(b[i])
	}
	return v, nil
}

func (u *unpickler) line() (string, error) {
	i := bytes.IndexByte(u.data[u.pos:], '\n')
	if i < 0 {
		return "", u.fail("ends inside a name")
	}
	s := string(u.data[u.pos : u.pos+i])
	u.pos += i + 1
	return s, nil
}

func (u *unpickler) push(v any) { u.stack = append(u.stack, v) }

func (u *unpickler) pop() (any, error) {
	if len(u.stack) == 0 || (len(u.marks) > 0 && len(u.stack) == u.marks[len(u.marks)-1]) {
		return nil, u.fail("takes from an empty stack")
	}
	v := u.stack[len(u.stack)-1]
	u.stack = u.stack[:len(u.stack)-1]
	return v, nil
}

func (u *unpickler) top() (any, error) {
	if len(u.stack) == 0 || (len(u.marks) > 0 && len(u.stack) == u.marks[len(u.marks)-1]) {
		return nil, u.fail("reads an empty stack")
	}
	return u.stack[len(u.stack)-1], nil
}

// popMark takes everything above the newest MARK.
func (u *unpickler) popMark() ([]any, error) {
	if len(u.marks) == 0 {
		return nil, u.fail("closes a MARK that was never opened")
	}
	m := u.marks[len(u.marks)-1]
	u.marks = u.marks[:len(u.marks)-1]
	items := append([]any(nil), u.stack[m:]...)
	u.stack = u.stack[:m]
	return items, nil
}

// Opcodes, as Python's pickle module names them.
const (
	opMark           = '('
	opStop           = '.'
	opPop            = '0'
	opPopMark        = '1'
	opDup            = '2'
	opNone           = 'N'
	opBinInt         = 'J'
	opBinInt1        = 'K'
	opBinInt2        = 'M'
	opBinFloat       = 'G'
	opBinString      = 'T'
	opShortBinString = 'U'
	opBinUnicode     = 'X'
	opBinBytes       = 'B'
	opShortBinBytes  = 'C'
	opEmptyTuple     = ')'
	opTuple          = 't'
	opEmptyList      = ']'
	opAppend         = 'a'
	opAppends        = 'e'
	opList           = 'l'
	opEmptyDict      = '}'
	opDict           = 'd'
	opSetItem        = 's'
	opSetItems       = 'u'
	opGlobal         = 'c'
	opReduce         = 'R'
	opBuild          = 'b'
	opBinPersID      = 'Q'
	opBinGet         = 'h'
	opLongBinGet     = 'j'
	opBinPut         = 'q'
	opLongBinPut     = 'r'
	opProto          = 0x80
	opNewObj         = 0x81
	opTuple1         = 0x85
	opTuple2         = 0x86
	opTuple3         = 0x87
	opNewTrue        = 0x88
	opNewFalse       = 0x89
	opLong1          = 0x8a
	opLong4          = 0x8b
	opShortBinUni    = 0x8c
	opBinUnicode8    = 0x8d
	opBinBytes8      = 0x8e
	opEmptySet       = 0x8f
	opAddItems       = 0x90
	opFrozenSet      = 0x91
	opStackGlobal    = 0x93
	opMemoize        = 0x94
	opFrame          = 0x95
)

func (u *unpickler) run() (any, error) {
	for {
		if u.pos >= len(u.data) {
			return nil, u.fail("ends without a STOP")
		}
		op := u.data[u.pos]
		u.pos++
		var err error
		switch op {
		case opProto:
			var p uint64
			if p, err = u.uint(1); err == nil && p > 5 {
				err = u.fail("pickle protocol %d is newer than 5", p)
			}
		case opFrame:
			_, err = u.uint(8) // frames only group opcodes; the data is contiguous here
		case opStop:
			v, err := u.pop()
			if err != nil {
				return nil, err
			}
			return v, nil
		case opMark:
			u.marks = append(u.marks, len(u.stack))
		case opPop:
			_, err = u.pop()
		case opPopMark:
			_, err = u.popMark()
		case opDup:
			var v any
			if v, err = u.top(); err == nil {
				u.push(v)
			}
		case opNone:
			u.push(nil)
		case opNewTrue:
			u.push(true)
		case opNewFalse:
			u.push(false)
		case opBinInt:
			var v uint64
			if v, err = u.uint(4); err == nil {
				u.push(int64(int32(uint32(v))))
			}
		case opBinInt1:
			var v uint64
			if v, err = u.uint(1); err == nil {
				u.push(int64(v))
			}
		case opBinInt2:
			var v uint64
			if v, err = u.uint(2); err == nil {
				u.push(int64(v))
			}
		case opLong1, opLong4:
			n := uint64(0)
			if op == opLong1 {
				n, err = u.uint(1)
			} else {
				n, err = u.uint(4)
			}
			if err == nil {
				var b []byte
				if b, err = u.read(int(min(n, math.MaxInt32))); err == nil {
					u.push(longValue(b))
				}
			}
		case opBinFloat:
			var b []byte
			if b, err = u.read(8); err == nil {
				u.push(math.Float64frombits(binary.BigEndian.Uint64(b)))
			}
		case opBinUnicode, opShortBinUni, opBinUnicode8, opBinString, opShortBinString,
			opBinBytes, opShortBinBytes, opBinBytes8:
			var n uint64
			if n, err = u.uint(lengthWidth(op)); err == nil {
				if n > uint64(len(u.data)) {
					err = u.fail("a string of %d bytes in a pickle of %d", n, len(u.data))
					break
				}
				var b []byte
				if b, err = u.read(int(n)); err == nil {
					s := string(b)
					if (op == opBinUnicode || op == opShortBinUni || op == opBinUnicode8) && !utf8.ValidString(s) {
						s = strings.ToValidUTF8(s, "\uFFFD")
					}
					u.push(s)
				}
			}
		case opEmptyTuple:
			u.push(pyTuple{})
		case opTuple:
			var items []any
			if items, err = u.popMark(); err == nil {
				u.push(pyTuple(items))
			}
		case opTuple1, opTuple2, opTuple3:
			n := int(op - opTuple1 + 1)
			if len(u.stack) < n || (len(u.marks) > 0 && len(u.stack)-n < u.marks[len(u.marks)-1]) {
				err = u.fail("a tuple of %d from a shorter stack", n)
				break
			}
			t := append(pyTuple(nil), u.stack[len(u.stack)-n:]...)
			u.stack = u.stack[:len(u.stack)-n]
			u.push(t)
		case opEmptyList:
			u.push(&pyList{})
		case opList:
			var items []any
			if items, err = u.popMark(); err == nil {
				u.push(&pyList{items: items})
			}
		case opEmptySet:
			u.push(&pyList{})
		case opFrozenSet:
			var items []any
			if items, err = u.popMark(); err == nil {
				u.push(&pyList{items: items})
			}
		case opAppend:
			var v, l any
			if v, err = u.pop(); err == nil {
				if l, err = u.top(); err == nil {
					if pl, ok := l.(*pyList); ok {
						pl.items = append(pl.items, v)
					}
				}
			}
		case opAppends, opAddItems:
			var items []any
			var l any
			if items, err = u.popMark(); err == nil {
				if l, err = u.top(); err == nil {
					if pl, ok := l.(*pyList); ok {
						pl.items = append(pl.items, items...)
					}
				}
			}
		case opEmptyDict:
			u.push(&pyDict{})
		case opDict:
			var items []any
			if items, err = u.popMark(); err == nil {
				d := &pyDict{}
				err = d.set(items, u)
				u.push(d)
			}
		case opSetItem:
			var k, v, d any
			if v, err = u.pop(); err != nil {
				break
			}
			if k, err = u.pop(); err != nil {
				break
			}
			if d, err = u.top(); err == nil {
				if pd, ok := d.(*pyDict); ok {
					err = pd.set([]any{k, v}, u)
				}
			}
		case opSetItems:
			var items []any
			var d any
			if items, err = u.popMark(); err == nil {
				if d, err = u.top(); err == nil {
					if pd, ok := d.(*pyDict); ok {
						err = pd.set(items, u)
					}
				}
			}
		case opGlobal:
			var mod, name string
			if mod, err = u.line(); err == nil {
				if name, err = u.line(); err == nil {
					u.push(pyGlobal{mod, name})
				}
			}
		case opStackGlobal:
			var m, n any
			if n, err = u.pop(); err != nil {
				break
			}
			if m, err = u.pop(); err != nil {
				break
			}
			ms, ok1 := m.(string)
			ns, ok2 := n.(string)
			if !ok1 || !ok2 {
				err = u.fail("STACK_GLOBAL of something other than two names")
				break
			}
			u.push(pyGlobal{ms, ns})
		case opReduce, opNewObj:
			var args, fn any
			if args, err = u.pop(); err != nil {
				break
			}
			if fn, err = u.pop(); err != nil {
				break
			}
			var v any
			if v, err = u.call(fn, args, op == opNewObj); err == nil {
				u.push(v)
			}
		case opBuild:
			// BUILD sets an object's state; the objects we model have none
			// worth keeping, so the state is dropped.
			if _, err = u.pop(); err == nil {
				_, err = u.top()
			}
		case opBinPersID:
			var pid any
			if pid, err = u.pop(); err == nil {
				var s *pyStorage
				if s, err = u.storage(pid); err == nil {
					u.push(s)
				}
			}
		case opBinGet, opLongBinGet:
			var i uint64
			if i, err = u.uint(indexWidth(op)); err == nil {
				v, ok := u.memo[uint32(i)]
				if !ok {
					err = u.fail("reads memo slot %d, which was never set", i)
					break
				}
				u.push(v)
			}
		case opBinPut, opLongBinPut:
			var i uint64
			if i, err = u.uint(indexWidth(op)); err == nil {
				var v any
				if v, err = u.top(); err == nil {
					u.memo[uint32(i)] = v
				}
			}
		case opMemoize:
			var v any
			if v, err = u.top(); err == nil {
				u.memo[uint32(len(u.memo))] = v
			}
		default:
			err = u.fail("opcode 0x%02x is not one torch.save writes", op)
		}
		if err != nil {
			return nil, err
		}
	}
}

// lengthWidth is the size of the length before a string's bytes.
func lengthWidth(op byte) int {
	switch op {
	case opShortBinUni, opShortBinString, opShortBinBytes:
		return 1
	case opBinUnicode8, opBinBytes8:
		return 8
	}
	return 4
}

// indexWidth is the size of a memo index.
func indexWidth(op byte) int {
	if op == opBinGet || op == opBinPut {
		return 1
	}
	return 4
}

func (d *pyDict) set(items []any, u *unpickler) error {
	if len(items)%2 != 0 {
		return u.fail("a dict of an odd number of items")
	}
	for i := 0; i < len(items); i += 2 {
		d.keys = append(d.keys, items[i])
		d.vals = append(d.vals, items[i+1])
	}
	return nil
}

// longValue decodes a little-endian two's-complement integer; one wider than
// 64 bits is kept as an opaque value, which no importer needs.
func longValue(b []byte) any {
	if len(b) > 8 {
		return &pyObject{class: "int wider than 64 bits"}
	}
	var v uint64
	for i := len(b) - 1; i >= 0; i-- {
		v = v<<8 | uint64(b[i])
	}
	if n := len(b); n > 0 && n < 8 && b[n-1]&0x80 != 0 {
		v |= ^uint64(0) << (8 * n) // sign-extend
	}
	return int64(v)
}

// call models the few callables torch.save's pickles use for data; anything
// else becomes an opaque object.
func (u *unpickler) call(fn, args any, newObj bool) (any, error) {
	g, ok := fn.(pyGlobal)
	if !ok {
		return &pyObject{class: "?"}, nil
	}
	a, _ := args.(pyTuple)
	name := g.module + "." + g.name
	if newObj {
		return &pyObject{class: name}, nil
	}
	switch name {
	case "torch._utils._rebuild_tensor_v2", "torch._utils._rebuild_tensor":
		return u.tensor(a)
	case "torch._utils._rebuild_parameter":
		if len(a) > 0 {
			return a[0], nil
		}
	case "collections.OrderedDict", "builtins.dict":
		return &pyDict{}, nil
	case "torch.Size", "builtins.tuple":
		if len(a) == 1 {
			if t, ok := a[0].(pyTuple); ok {
				return t, nil
			}
		}
	case "builtins.list", "builtins.set", "builtins.frozenset":
		if len(a) == 1 {
			if l, ok := a[0].(*pyList); ok {
				return &pyList{items: append([]any(nil), l.items...)}, nil
			}
		}
		return &pyList{}, nil
	case "_codecs.encode":
		// How protocol 2 writes bytes: _codecs.encode(text, "latin1").
		if len(a) >= 1 {
			if s, ok := a[0].(string); ok {
				return s, nil
			}
		}
	}
	return &pyObject{class: name}, nil
}

// tensor builds a tensor from _rebuild_tensor_v2's arguments: storage,
// storage offset, size, stride, and then requires_grad, backward hooks and
// metadata, which a count does not need.
func (u *unpickler) tensor(a pyTuple) (any, error) {
	if len(a) < 4 {
		return nil, u.fail("a tensor with %d arguments; torch.save writes at least 4", len(a))
	}
	s, ok := a[0].(*pyStorage)
	off, ok2 := a[1].(int64)
	size, ok3 := ints(a[2])
	stride, ok4 := ints(a[3])
	if !ok || !ok2 || !ok3 || !ok4 || len(size) != len(stride) || off < 0 {
		return nil, u.fail("a tensor whose storage, offset, size or stride is not what torch.save writes")
	}
	return &pyTensor{storage: s, offset: off, size: size, stride: stride}, nil
}

func ints(v any) ([]int64, bool) {
	t, ok := v.(pyTuple)
	if !ok {
		return nil, false
	}
	out := make([]int64, len(t))
	for i, x := range t {
		n, ok := x.(int64)
		if !ok {
			return nil, false
		}
		out[i] = n
	}
	return out, true
}

// storage reads torch's persistent id ('storage', torch.XStorage, key,
// location, numel).
func (u *unpickler) storage(pid any) (*pyStorage, error) {
	t, ok := pid.(pyTuple)
	if !ok || len(t) < 5 {
		return nil, u.fail("a persistent id that is not a torch storage")
	}
	tag, _ := t[0].(string)
	cls, ok1 := t[1].(pyGlobal)
	key, ok2 := t[2].(string)
	loc, ok3 := t[3].(string)
	numel, ok4 := t[4].(int64)
	if tag != "storage" || !ok1 || !ok2 || !ok3 || !ok4 || numel < 0 || cls.module != "torch" {
		return nil, u.fail("a persistent id that is not a torch storage")
	}
	return &pyStorage{class: cls.name, key: key, location: loc, numel: numel}, nil
}
