package stream

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
// closed or a sink fails, and returns that sink's error. It does not stop
// on its own when the run is cancelled: a source closes in once it has
// stopped, so the samples it made before (the step in flight when Ctrl-C
// came) still reach every sink. After an error the caller stops the
// source and drains in.
func FanOut(in <-chan Sample, sinks ...Sink) error {
	for s := range in {
		for _, k := range sinks {
			if err := k.Observe(s); err != nil {
				return err
			}
		}
	}
	return nil
}
