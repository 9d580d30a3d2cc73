package recording

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/moetop/moetop/stream"
)

// historyWindow is how many samples before a jump's target are sent with
// it, so the view's histories are as they were at that point.
const historyWindow = 240

// Replay plays a log at its recorded pace (times a speed) as a stream of
// samples, and seeks: one step back or forward, to a step or a time, to
// either end. A seek sends the target with the samples before it, the
// first marked Reset.
type Replay struct {
	log  *Log
	out  chan stream.Sample
	wake chan struct{}

	mu      sync.Mutex
	pos     int // the next sample to send
	cur     stream.Sample
	playing bool
	speed   float64
	seekTo  int // -1: none pending
	first   time.Time
	end     time.Time // the last sample's time
	firstN  int       // the first sample's step number
	last    int       // the last sample's step number
	// Corrupt counts samples that could not be read and were skipped.
	Corrupt int
}

// Speeds are the replay speeds '[' and ']' move through.
var Speeds = []float64{0.25, 0.5, 1, 2, 4, 8, 16}

// NewReplay plays l from its first sample.
func NewReplay(l *Log) *Replay {
	r := &Replay{log: l, out: make(chan stream.Sample, 64), wake: make(chan struct{}, 1), playing: true, speed: 1, seekTo: -1}
	if s, err := l.Sample(0); err == nil {
		r.first, r.firstN = s.Time, s.Step
	}
	if s, err := l.Sample(l.Len() - 1); err == nil {
		r.end, r.last = s.Time, s.Step
	}
	return r
}

// Samples is the stream; it is closed when Run returns.
func (r *Replay) Samples() <-chan stream.Sample { return r.out }

func (r *Replay) poke() {
	select {
	case r.wake <- struct{}{}:
	default:
	}
}

// Run sends samples until ctx ends. At the end of the log it waits for a
// seek rather than closing, so the last frame stays on screen.
func (r *Replay) Run(ctx context.Context) {
	defer close(r.out)
	var timer *time.Timer
	for {
		r.mu.Lock()
		if r.seekTo >= 0 {
			target := r.seekTo
			r.seekTo = -1
			r.mu.Unlock()
			if !r.sendWindow(ctx, target) {
				return
			}
			continue
		}
		if !r.playing || r.pos >= r.log.Len() {
			r.mu.Unlock()
			select {
			case <-ctx.Done():
				return
			case <-r.wake:
			}
			continue
		}
		i := r.pos
		r.mu.Unlock()
		s, err := r.log.Sample(i)
		r.mu.Lock()
		if r.pos != i || r.seekTo >= 0 { // a seek came in meanwhile
			r.mu.Unlock()
			continue
		}
		r.pos++
		if err != nil {
			r.Corrupt++
			r.mu.Unlock()
			continue
		}
		var wait time.Duration
		if !r.cur.Time.IsZero() {
			wait = time.Duration(float64(s.Time.Sub(r.cur.Time)) / r.speed)
			wait = max(0, min(wait, 5*time.Second)) // a long gap in a recording is not worth waiting out
		}
		r.mu.Unlock()
		if wait > 0 {
			if timer == nil {
				timer = time.NewTimer(wait)
			} else {
				timer.Reset(wait)
			}
			select {
			case <-ctx.Done():
				return
			case <-r.wake: // a command: look again before sending
				timer.Stop()
				r.mu.Lock()
				if r.pos == i+1 {
					r.pos = i // not sent yet
				}
				r.mu.Unlock()
				continue
			case <-timer.C:
			}
		}
		r.mu.Lock()
		r.cur = s
		r.mu.Unlock()
		select {
		case r.out <- s:
		case <-ctx.Done():
			return
		}
	}
}

// sendWindow sends the samples up to target (at most historyWindow of
// them), the first marked Reset, and leaves the replay after target.
func (r *Replay) sendWindow(ctx context.Context, target int) bool {
	start := max(0, target-historyWindow+1)
	reset := true
	for i := start; i <= target; i++ {
		s, err := r.log.Sample(i)
		if err != nil {
			continue
		}
		s.Reset, reset = reset, false
		r.mu.Lock()
		r.cur, r.pos = s, i+1
		r.mu.Unlock()
		select {
		case r.out <- s:
		case <-ctx.Done():
			return false
		}
	}
	return true
}

func (r *Replay) seek(i int) {
	r.seekTo = max(0, min(i, r.log.Len()-1))
	r.poke()
}

// TogglePlay plays or pauses; at the end, play starts over.
func (r *Replay) TogglePlay() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.playing = !r.playing
	if r.playing && r.pos >= r.log.Len() {
		r.seek(0)
	}
	r.poke()
	if r.playing {
		return "playing"
	}
	return "paused"
}

// Step moves one sample back or forward and pauses.
func (r *Replay) Step(delta int) string {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.playing = false
	r.seek(r.pos - 1 + delta)
	return "paused"
}

// Speed moves through Speeds. It works paused too: the new speed applies
// when play resumes, and the answer says so.
func (r *Replay) Speed(up bool) string {
	r.mu.Lock()
	defer r.mu.Unlock()
	i := 0
	for j, s := range Speeds {
		if s == r.speed {
			i = j
		}
	}
	if up {
		i = min(i+1, len(Speeds)-1)
	} else {
		i = max(i-1, 0)
	}
	r.speed = Speeds[i]
	r.poke()
	msg := "speed " + fmtSpeed(r.speed)
	if !r.playing {
		msg += " (paused: space plays)"
	}
	return msg
}

// Home and End go to the first and last sample.
func (r *Replay) Home() string { r.mu.Lock(); defer r.mu.Unlock(); r.seek(0); return "start" }
func (r *Replay) End() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.seek(r.log.Len() - 1)
	return "end"
}

// Jump goes to a step number ("120") or a time from the start ("1m30s",
// "90s", "1:30"). A step the log does not hold is refused; a time past
// the end goes to the end and says where the log ends.
func (r *Replay) Jump(target string) (string, error) {
	target = strings.TrimSpace(target)
	if n, err := strconv.Atoi(target); err == nil {
		i, err := r.findStep(n)
		if err != nil {
			return "", err
		}
		r.mu.Lock()
		r.seek(i)
		r.mu.Unlock()
		return fmt.Sprintf("step %d", n), nil
	}
	d, err := parseOffset(target)
	if err != nil {
		return "", fmt.Errorf("go to %q: want a step number or a time like 1m30s or 1:30", target)
	}
	i, err := r.search(func(s stream.Sample) bool { return s.Time.Sub(r.first) >= d })
	if err != nil {
		return "", err
	}
	r.mu.Lock()
	r.seek(i)
	r.mu.Unlock()
	if length := r.end.Sub(r.first); d > length {
		return fmt.Sprintf("%s is past the end (the log ends at %s, step %d); went to the end", fmtOffset(d), fmtOffset(length), r.last), nil
	}
	return "time " + fmtOffset(d), nil
}

func parseOffset(s string) (time.Duration, error) {
	if m, sec, ok := strings.Cut(s, ":"); ok {
		mm, err1 := strconv.Atoi(m)
		ss, err2 := strconv.ParseFloat(sec, 64)
		if err1 != nil || err2 != nil || mm < 0 || ss < 0 {
			return 0, fmt.Errorf("bad time %q", s)
		}
		return time.Duration(mm)*time.Minute + time.Duration(ss*float64(time.Second)), nil
	}
	d, err := time.ParseDuration(s)
	if err == nil && d < 0 {
		err = fmt.Errorf("negative time")
	}
	return d, err
}

// findStep finds the sample of step n by binary search: step numbers rise
// through a log.
func (r *Replay) findStep(n int) (int, error) {
	i, err := r.search(func(s stream.Sample) bool { return s.Step >= n })
	if err != nil {
		return 0, err
	}
	switch {
	case n > r.last:
		return 0, fmt.Errorf("no step %d: the log ends at step %d", n, r.last)
	case n < r.firstN:
		return 0, fmt.Errorf("no step %d: the log starts at step %d", n, r.firstN)
	}
	if s, err := r.log.Sample(i); err != nil || s.Step != n {
		return 0, fmt.Errorf("no step %d in this log (a skipped or unreadable line)", n)
	}
	return i, nil
}

// search is sort.Search over samples read from the index.
func (r *Replay) search(pred func(stream.Sample) bool) (int, error) {
	lo, hi := 0, r.log.Len()
	for lo < hi {
		mid := int(uint(lo+hi) >> 1)
		s, err := r.log.Sample(mid)
		if err != nil {
			return 0, err
		}
		if pred(s) {
			hi = mid
		} else {
			lo = mid + 1
		}
	}
	if lo >= r.log.Len() {
		return r.log.Len() - 1, nil
	}
	return lo, nil
}

// Paused says whether the replay is stopped.
func (r *Replay) Paused() bool { r.mu.Lock(); defer r.mu.Unlock(); return !r.playing }

// Position is the status line: REPLAY | time | step N / M | speed | state.
func (r *Replay) Position() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	state := "playing"
	if !r.playing {
		state = "paused"
	} else if r.pos >= r.log.Len() {
		state = "at the end"
	}
	off := time.Duration(0)
	if !r.cur.Time.IsZero() {
		off = r.cur.Time.Sub(r.first)
	}
	step := "-"
	if r.pos > 0 {
		step = strconv.Itoa(r.cur.Step)
	}
	return fmt.Sprintf("REPLAY | %s | step %s / %d | %s | %s", fmtOffset(off), step, r.last, fmtSpeed(r.speed), state)
}

func fmtSpeed(s float64) string { return strconv.FormatFloat(s, 'f', -1, 64) + "×" }

// fmtOffset is a position in the log: mm:ss.s under an hour, h:mm:ss
// beyond (a day-long recording reads 26:40:00, not 1600:00.0).
func fmtOffset(d time.Duration) string {
	d = max(0, d)
	if d >= time.Hour {
		d = d.Truncate(time.Second)
		return fmt.Sprintf("%d:%02d:%02d", int(d.Hours()), int(d.Minutes())%60, int(d.Seconds())%60)
	}
	d = d.Truncate(100 * time.Millisecond)
	m := int(d.Minutes())
	return fmt.Sprintf("%02d:%04.1f", m, d.Seconds()-float64(m)*60)
}
