package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"

	"github.com/moetop/moetop/ep"
	"github.com/moetop/moetop/stream"
)

const placementUsage = `moetop placement: a rebalanced expert placement from a recording's load.

Sums the rows each expert received over the log, then does what DeepSeek's
EPLB does: replicates the hottest experts --redundant times (their load split
over the copies) and packs experts onto ranks by load, heaviest first. Prints
the balancedness (mean/max rows per rank, 1 is perfect) of the placement the
run used beside the proposal's, and writes the proposal for
moetop --ep N --placement FILE, so the gain is measured, not guessed.

Usage:
  moetop placement LOG [--ranks N] [--redundant R] [--out FILE [--force]]
`

func runPlacement(_ context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("moetop placement", flag.ContinueOnError)
	ranks := fs.Int("ranks", 0, "ranks to place over (default: the recording's --ep)")
	redundant := fs.Int("redundant", 0, "extra expert copies to spread over the ranks")
	out := fs.String("out", "", "write the placement to `FILE` (JSON; default: print it)")
	force := fs.Bool("force", false, "overwrite --out if it exists")
	path, err := fileArg(fs, args, placementUsage, stdout)
	if err != nil {
		return err
	}
	if *out != "" {
		if err := checkOutput(path, *out, *force); err != nil {
			return err
		}
	}
	l, err := openLogFile(path)
	if err != nil {
		return err
	}
	defer l.Close()
	h := l.Header
	n := *ranks
	if n == 0 {
		n = h.Ranks
	}
	switch {
	case *ranks < 0:
		return usagef("invalid --ranks %d; want the number of ranks to place over", *ranks)
	case n < 1:
		return usagef("%s was not recorded with --ep; say how many ranks to place over with --ranks N", path)
	case *redundant < 0:
		return usagef("invalid --redundant %d; want 0 or more extra copies", *redundant)
	}
	load := make([]float64, h.Config.Experts)
	recv := make([]float64, n) // rows each rank ran, as measured
	steps, measured := 0, 0
	if _, err := l.Each(func(_ int, s stream.Sample) error {
		if s.Skipped || len(s.Rows) != len(load) {
			return nil
		}
		// A window of short steps stands for its steps, with its newest load.
		k := s.StepCount()
		for e, r := range s.Rows {
			load[e] += float64(r * k)
		}
		steps += k
		if len(s.Ranks) == n {
			for _, r := range s.Ranks {
				if r.Rank >= 0 && r.Rank < n {
					recv[r.Rank] += float64(r.RecvRows * k)
				}
			}
			measured += k
		}
		return nil
	}); err != nil {
		return err
	}
	if steps == 0 {
		return usagef("%s has no step with %d experts' rows; nothing to rebalance", path, len(load))
	}
	current, err := recordedPlacement(h, n)
	if err != nil {
		return usagef("%v", err)
	}
	w, err := ep.WhatIfRebalance(current, load, *redundant)
	if errors.Is(err, ep.ErrBadPlacement) {
		return usagef("%v", err)
	}
	if err != nil {
		return err
	}
	now := fmt.Sprintf("%.3f with the recorded placement (predicted from the experts' load)", w.Actual.MeanOverMax)
	if measured == steps {
		now = fmt.Sprintf("%.3f measured (rows each rank ran)", ep.Balancedness(recv).MeanOverMax)
	}
	fmt.Fprintf(stderr, "moetop: %d steps of %d experts over %d ranks: balancedness (mean/max) %s; %.3f predicted with %d redundant copies\n",
		steps, len(load), n, now, w.Predicted.MeanOverMax, *redundant)
	if *out == "" {
		return ep.WritePlacement(stdout, w.Placement)
	}
	if err := ep.WritePlacementFile(*out, w.Placement); err != nil {
		return err
	}
	fmt.Fprintf(stderr, "moetop: wrote %s; run it with moetop --ep %d --placement %s\n", *out, n, *out)
	return nil
}

// recordedPlacement is the placement the recording ran with: its header's,
// or contiguous blocks over n ranks.
func recordedPlacement(h stream.Header, n int) (*ep.Placement, error) {
	if len(h.Placement) > 0 && n == h.Ranks {
		return ep.NewPlacement(n, h.Placement)
	}
	return ep.Contiguous(h.Config.Experts, n)
}
