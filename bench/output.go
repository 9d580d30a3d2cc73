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

// columns are the CSV's, in order; tableColumns the table's and the
// Markdown's, where roofline is pct_roofline and bound in one cell.
var (
	columns = []string{"case", "tokens", "hidden", "ffn", "experts", "top_k", "act", "dist", "dtype", "backend", "status",
		"median_ms", "tflops", "gbps", "pct_roofline", "bound", "above_roofline", "pct_dense", "gflop", "gbytes",
		"ceiling_tflops", "ceiling_gbps", "pred_peak_gib", "meas_peak_gib", "rel_err", "error"}
	tableColumns = []string{"case", "tokens", "hidden", "ffn", "experts", "top_k", "act", "dist", "dtype", "backend",
		"status", "median_ms", "tflops", "gbps", "roofline", "pct_dense", "pred_peak_gib", "meas_peak_gib", "rel_err"}
)

// cells are a result's cells by column name.
func cells(r Result) map[string]string {
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
	above := ""
	if r.Bound != "" {
		above = strconv.FormatBool(r.AboveRoofline)
	}
	return map[string]string{"case": r.Case.Name, "tokens": strconv.Itoa(r.Case.Tokens),
		"hidden": strconv.Itoa(r.Case.Hidden), "ffn": strconv.Itoa(r.Case.FFN), "experts": strconv.Itoa(r.Case.Experts),
		"top_k": strconv.Itoa(r.Case.TopK), "act": r.Case.Act, "dist": r.Dist, "dtype": r.DType, "backend": r.Backend,
		"status": r.Status, "median_ms": sig(r.MedianMS), "tflops": sig(r.TFLOPS), "gbps": sig(r.GBps),
		"pct_roofline": f(r.PctRoofline, 1), "bound": r.Bound, "above_roofline": above, "roofline": RooflineText(r),
		"pct_dense": f(r.PctDense, 1), "gflop": sig(r.GFLOP), "gbytes": sig(r.GBytes),
		"ceiling_tflops": sig(r.DenseTFLOPS), "ceiling_gbps": sig(r.ReadGBps),
		"pred_peak_gib": sig(float64(r.PredictedPeakBytes) / (1 << 30)),
		"meas_peak_gib": sig(float64(r.MeasuredPeakBytes) / (1 << 30)), "rel_err": rel, "error": r.Error}
}

func row(r Result, cols []string) []string { return pick(cells(r), cols) }

// pick is a row's cells in the order of cols.
func pick(c map[string]string, cols []string) []string {
	out := make([]string, len(cols))
	for i, k := range cols {
		out[i] = c[k]
	}
	return out
}

// RooflineText is a result's place under its roofline as the live view
// writes a phase's: "92% mem", "100%* comp" where the measurement beat the
// floor (never more than 100%); "" without one.
func RooflineText(r Result) string {
	if r.Bound == "" {
		return ""
	}
	pct := strconv.FormatFloat(r.PctRoofline, 'f', 0, 64) + "%"
	if r.AboveRoofline {
		pct += "*"
	}
	if r.Bound == "memory" {
		return pct + " mem"
	}
	return pct + " comp"
}

// Write renders results in a format.
func Write(w io.Writer, format string, rs []Result) error {
	cs := make([]map[string]string, len(rs))
	for i, r := range rs {
		cs[i] = cells(r)
	}
	// Pass rates would make JSON and CSV invalid: they follow the tables
	// for people only.
	if people, err := render(w, format, rs, columns, tableColumns, cs); err != nil || !people {
		return err
	}
	WriteCeilings(w, rs)
	PassRates(w, rs)
	return nil
}

// render writes results as JSON (v as it encodes), as CSV (every column of
// all) or, for people, as a Markdown or aligned table of the columns of
// shown, cells holding each result's cells by column. It says whether the
// format was one for people, which the callers follow with their notes.
func render(w io.Writer, format string, v any, all, shown []string, cells []map[string]string) (people bool, err error) {
	switch format {
	case "json":
		enc := json.NewEncoder(w)
		enc.SetIndent("", " ")
		return false, enc.Encode(v)
	case "csv":
		cw := csv.NewWriter(w)
		cw.Write(all)
		for _, c := range cells {
			cw.Write(pick(c, all))
		}
		cw.Flush()
		return false, cw.Error()
	case "md":
		fmt.Fprintf(w, "| %s |\n|%s\n", strings.Join(shown, " | "), strings.Repeat("---|", len(shown)))
		for _, c := range cells {
			// A lone * would start emphasis.
			fmt.Fprintf(w, "| %s |\n", strings.ReplaceAll(strings.Join(pick(c, shown), " | "), "*", `\*`))
		}
	case "table":
		tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
		fmt.Fprintln(tw, strings.Join(shown, "\t"))
		for _, c := range cells {
			fmt.Fprintln(tw, strings.Join(pick(c, shown), "\t"))
		}
		tw.Flush()
	default:
		return false, fmt.Errorf("unknown format %q", format)
	}
	return true, nil
}

// WriteCeilings says, a line per dtype, what roofline ceilings the
// results were placed under (nothing where none were measured), and what
// a * means.
func WriteCeilings(w io.Writer, rs []Result) {
	seen := map[string]bool{}
	above := false
	for _, r := range rs {
		above = above || r.AboveRoofline
		if (r.DenseTFLOPS == 0 && r.ReadGBps == 0) || seen[r.DType] {
			continue
		}
		seen[r.DType] = true
		fmt.Fprintf(w, "roofline ceilings %s: dense GEMM %.4g TFLOP/s, read %.4g GB/s (measured at the start of the run)\n",
			r.DType, r.DenseTFLOPS, r.ReadGBps)
	}
	if above {
		fmt.Fprintln(w, "*: faster than the floor the ceilings set (a cache served what the floor counts as memory traffic); shown as 100%")
	}
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
	format := "%-*s %6s %6s %6s %4s %5s %-6s %-11s %-5s %-8s %-13s %10s %7s %7s %10s %6s %8s %8s %9s\n"
	if !t.header {
		t.header = true
		fmt.Fprintf(t.w, format, t.name, "case", "tokens", "hidden", "ffn", "E", "top_k", "act", "dist", "dtype",
			"backend", "status", "median_ms", "TFLOP/s", "GB/s", "roofline", "%dense", "pred_GiB", "meas_GiB", "rel_err")
	}
	c := row(r, tableColumns)
	args := []any{t.name}
	for _, v := range c {
		args = append(args, v)
	}
	fmt.Fprintf(t.w, format, args...)
}
