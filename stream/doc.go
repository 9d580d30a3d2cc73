// Package stream holds the types that flow from moetop's sources (a live
// layer on one GPU or N ranks, a replayed log) to its sinks (the view, the
// recorder, Prometheus, summaries): samples, phase timings with a device
// axis, device readings, events and the run's header.
//
// It is a leaf: no cgo and no imports of moetop's own packages, so the view,
// the log code and the exporters build and test without CUDA or NVML.
package stream
