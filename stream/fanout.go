package stream

import "context"

// Sink consumes samples. An error stops the fan-out (a full disk ends a
// recording); a sink that cannot fail returns nil.
type Sink interface {
	Observe(Sample) error
}

// SinkFunc adapts a function to a Sink.
type SinkFunc func(Sample) error

// Observe calls f.
func (f SinkFunc) Observe(s Sample) error { return f(s) }

// FanOut delivers every sample of in to each sink in order until in is
// closed, ctx ends or a sink fails; it returns that sink's error. The
// sources close in when they end, so a run's last samples reach every sink.
func FanOut(ctx context.Context, in <-chan Sample, sinks ...Sink) error {
	for {
		select {
		case <-ctx.Done():
			return nil
		case s, ok := <-in:
			if !ok {
				return nil
			}
			for _, k := range sinks {
				if err := k.Observe(s); err != nil {
					return err
				}
			}
		}
	}
}
