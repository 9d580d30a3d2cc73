package bench

import (
	"encoding/csv"
	"encoding/json"
	"fmt"
	"io"
	"sort"
	"strconv"
	"strings"
	"text/tabwriter"
)

// Formats Write accepts.
var Formats = []string{"table", "json", "csv", "md"}

var columns = []string{"case", "tokens", "hidden", "ffn", "experts", "top_k", "dist", "dtype", "backend", "status",
	"median_ms", "tflops", "pct_dense", "pred_peak_gib", "meas_peak_gib", "rel_err", "error"}

func row(r Result) []string {
	f := func(v float64, prec int) string {
		if v == 0 {
			return ""
		}
		return strconv.FormatFloat(v, 'f', prec, 64)
	}
	// Four significant digits: CPU runs are in GFLOP/s and MiB, GPU runs
	// in hundreds of TFLOP/s and tens of GiB.
	sig := func(v float64) string {
		if v == 0 {
			return ""
		}
		return strconv.FormatFloat(v, 'g', 4, 64)
	}
	rel := ""
	if r.RelErr != nil {
		rel = strconv.FormatFloat(*r.RelErr, 'e', 2, 64)
	}
	return []string{r.Case.Name, strconv.Itoa(r.Case.Tokens), strconv.Itoa(r.Case.Hidden), strconv.Itoa(r.Case.FFN),
		strconv.Itoa(r.Case.Experts), strconv.Itoa(r.Case.TopK), r.Dist, r.DType, r.Backend, r.Status,
		sig(r.MedianMS), sig(r.TFLOPS), f(r.PctDense, 1), sig(float64(r.PredictedPeakBytes) / (1 << 30)),
		sig(float64(r.MeasuredPeakBytes) / (1 << 30)), rel, r.Error}
}

// Write renders results in a format.
func Write(w io.Writer, format string, rs []Result) error {
	switch format {
	case "json":
		enc := json.NewEncoder(w)
		enc.SetIndent("", " ")
		return enc.Encode(rs) // pass rates would make it invalid JSON
	case "csv":
		cw := csv.NewWriter(w)
		cw.Write(columns)
		for _, r := range rs {
			cw.Write(row(r))
		}
		cw.Flush()
		return cw.Error() // likewise for CSV
	case "md":
		fmt.Fprintf(w, "| %s |\n|%s\n", strings.Join(columns[:16], " | "), strings.Repeat("---|", 16))
		for _, r := range rs {
			fmt.Fprintf(w, "| %s |\n", strings.Join(row(r)[:16], " | "))
		}
	case "table":
		tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
		fmt.Fprintln(tw, strings.Join(columns[:16], "\t"))
		for _, r := range rs {
			fmt.Fprintln(tw, strings.Join(row(r)[:16], "\t"))
		}
		tw.Flush()
	default:
		return fmt.Errorf("unknown format %q", format)
	}
	PassRates(w, rs)
	return nil
}

// PassRates prints, per backend, how many cases ran (the founding report's
// pass-rate line): ok over all, with OOMs and predicted OOMs named.
func PassRates(w io.Writer, rs []Result) {
	type tally struct{ ok, oom, pred, fail, all int }
	t := map[string]*tally{}
	for _, r := range rs {
		if t[r.Backend] == nil {
			t[r.Backend] = &tally{}
		}
		x := t[r.Backend]
		x.all++
		switch r.Status {
		case StatusOK:
			x.ok++
		case StatusOOM:
			x.oom++
		case StatusPredictedOOM:
			x.pred++
		default:
			x.fail++
		}
	}
	names := make([]string, 0, len(t))
	for n := range t {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		x := t[n]
		fmt.Fprintf(w, "pass rate %-8s %3d/%-3d (%5.1f%%)  oom %d  predicted oom %d  errors %d\n", n, x.ok, x.all,
			100*float64(x.ok)/float64(x.all), x.oom, x.pred, x.fail)
	}
}

// TableStream prints results as they come, in fixed-width columns, so the
// table grows while a long run goes on.
type TableStream struct {
	w      io.Writer
	name   int
	header bool
}

// NewTableStream sizes the case column for cases.
func NewTableStream(w io.Writer, cases []Case) *TableStream {
	n := len("case")
	for _, c := range cases {
		n = max(n, len(c.Name))
	}
	return &TableStream{w: w, name: n}
}

// Row prints one result (and the header before the first).
func (t *TableStream) Row(r Result) {
	format := "%-*s %6s %6s %6s %4s %5s %-11s %-5s %-8s %-13s %10s %7s %6s %8s %8s %9s\n"
	if !t.header {
		t.header = true
		fmt.Fprintf(t.w, format, t.name, "case", "tokens", "hidden", "ffn", "E", "top_k", "dist", "dtype", "backend",
			"status", "median_ms", "TFLOP/s", "%dense", "pred_GiB", "meas_GiB", "rel_err")
	}
	c := row(r)
	fmt.Fprintf(t.w, format, t.name, c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7], c[8], c[9], c[10], c[11], c[12],
		c[13], c[14], c[15])
}
