package recording

import (
	"bytes"
	"encoding/json"
	"errors"
	"runtime"
	"sync"

	"github.com/moetop/moetop/stream"
)

// Reading a log decodes every line and validates every sample, in the
// index (for replay) and in Each (for summary and export). Decoding JSON
// is what costs, so for a log of more than parallelBytes the lines are
// decoded by a worker per CPU, in batches, and put back in order; the
// order-dependent part (which events belong to which sample, what is
// skipped) runs in one goroutine either way, so both ways read the same.

// parallelBytes is the size from which a log is decoded in parallel (a
// variable so that a test can run both ways on a small log).
var parallelBytes int64 = 4 << 20

// Batches are about this many lines or bytes.
const (
	batchLines = 256
	batchBytes = 1 << 20
)

// item is one line after the header, decoded.
type item struct {
	line     int   // its number; the header is line 1
	off, end int64 // its bytes, with the newline
	kind     int
	reason   string // itemSkip: why
	event    stream.Event
	sample   stream.Sample
}

const (
	itemSkip = iota
	itemEvent
	itemSample
)

// decodeLine decodes one line; complete says whether it ended in a newline.
func decodeLine(line []byte, n int, off int64, complete bool, major int) item {
	it := item{line: n, off: off, end: off + int64(len(line)) + 1}
	switch {
	case !complete && !json.Valid(line):
		it.reason = reasonCut
	case bytes.HasPrefix(line, eventPrefix):
		var e eventLine
		var ie *invalidError
		switch {
		case json.Unmarshal(line, &e) != nil:
			it.reason = reasonEventJSON
		case errors.As(validateEvent(e.Event), &ie):
			it.reason = ie.reason // the event alone is skipped, not its step
		default:
			it.kind, it.event = itemEvent, e.Event
		}
	case bytes.HasPrefix(line, samplePrefix):
		s, err := decodeSample(line, major)
		if err != nil {
			it.reason = reasonSampleJSON
		} else {
			it.kind, it.sample = itemSample, s
		}
	default:
		it.reason = reasonOther
	}
	return it
}

// assembler gives each sample the events written before it, validates it,
// and passes it on or skips it.
type assembler struct {
	sample     func(s stream.Sample, start, end int64) error
	skip       func(reason string, line int)
	groupStart int64 // the first event line's offset; -1: none
	events     []stream.Event
	nEvents    int // may pass maxList, while events stays bounded
}

func (a *assembler) add(it *item) error {
	switch it.kind {
	case itemSkip:
		a.skip(it.reason, it.line)
	case itemEvent:
		if a.groupStart < 0 {
			a.groupStart = it.off
		}
		if a.nEvents++; a.nEvents <= maxList {
			a.events = append(a.events, it.event)
		}
	case itemSample:
		start := it.off
		if a.groupStart >= 0 {
			start = a.groupStart
		}
		s := it.sample
		s.Events = a.events
		many := a.nEvents > maxList
		a.groupStart, a.events, a.nEvents = -1, nil, 0
		var err error
		if many {
			err = invalid(reasonList, "more than %d events", maxList)
		} else {
			err = validate(s)
		}
		var ie *invalidError
		if errors.As(err, &ie) {
			a.skip(ie.reason, it.line)
			return nil
		}
		return a.sample(s, start, it.end)
	}
	return nil
}

// walk reads the lines after the header. It calls sample with each sample
// that decodes and passes validate, with the events written before it and
// the byte range of those lines, and skip with each line it leaves out and
// why. The index and Each both read through walk, so they agree on what a
// log holds; parseGroup reads one sample of the index the same way.
func (l *Log) walk(sample func(s stream.Sample, start, end int64) error, skip func(reason string, line int)) error {
	a := &assembler{sample: sample, skip: skip, groupStart: -1}
	workers := runtime.GOMAXPROCS(0)
	if l.size < parallelBytes || workers < 2 {
		n := 0
		return lines(l.reader(), l.Path, func(line []byte, off int64, complete bool) error {
			if n++; n == 1 {
				return nil // the header, read by index
			}
			it := decodeLine(line, n, off, complete, l.major)
			return a.add(&it)
		})
	}
	return l.walkParallel(a, workers)
}

// batch is lines on their way through a worker.
type batch struct {
	buf   []byte
	lines []lineRef
	items []item
	done  chan struct{}
}

type lineRef struct {
	from, to int // in buf
	n        int
	off      int64
	complete bool
}

var errStopped = errors.New("stopped")

func (l *Log) walkParallel(a *assembler, workers int) error {
	work := make(chan *batch, workers)
	ordered := make(chan *batch, 2*workers) // bounds what is in flight
	stop := make(chan struct{})
	for range workers {
		go func() {
			for b := range work {
				b.items = make([]item, len(b.lines))
				for i, r := range b.lines {
					b.items[i] = decodeLine(b.buf[r.from:r.to], r.n, r.off, r.complete, l.major)
				}
				b.buf = nil
				close(b.done)
			}
		}()
	}
	readErr := make(chan error, 1)
	go func() {
		defer close(work)
		defer close(ordered)
		newBatch := func() *batch { return &batch{done: make(chan struct{})} }
		cur, n := newBatch(), 0
		send := func() bool {
			select {
			case ordered <- cur:
			case <-stop:
				return false
			}
			work <- cur
			cur = newBatch()
			return true
		}
		err := lines(l.reader(), l.Path, func(line []byte, off int64, complete bool) error {
			if n++; n == 1 {
				return nil
			}
			select {
			case <-stop:
				return errStopped
			default:
			}
			from := len(cur.buf)
			cur.buf = append(cur.buf, line...) // line is reused by the reader
			cur.lines = append(cur.lines, lineRef{from, len(cur.buf), n, off, complete})
			if len(cur.lines) >= batchLines || len(cur.buf) >= batchBytes {
				if !send() {
					return errStopped
				}
			}
			return nil
		})
		if !errors.Is(err, errStopped) && len(cur.lines) > 0 {
			send() // the lines before an error count, as they do in order
		}
		readErr <- err
	}()
	var aerr error
	var once sync.Once
	for b := range ordered {
		<-b.done
		for i := 0; i < len(b.items) && aerr == nil; i++ {
			aerr = a.add(&b.items[i])
		}
		if aerr != nil {
			once.Do(func() { close(stop) }) // drain what is in flight, read no more
		}
	}
	err := <-readErr
	if aerr != nil {
		return aerr
	}
	return err
}
