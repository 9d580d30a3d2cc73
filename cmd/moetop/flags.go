package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"regexp"
	"strings"
	"time"

	"github.com/moetop/moetop/kernels"
	"github.com/moetop/moetop/profiler"
)

// errHelp ends a command after it printed its help.
var errHelp = errors.New("help shown")

// layerFlags are the flags that describe the layer, shared by every command
// that runs one.
type layerFlags struct {
	tokens, seqs, seqLen, hidden, ffn, experts, topK int
	dtype, act, routing                              string
	layer, layers                                    string
	model                                            string
	seed                                             uint64
	capacity                                         float64
	sharedExperts, sharedFFN                         int
	router                                           string
	groups, topKGroups                               int
	routedScale                                      float64
}

func (f *layerFlags) register(fs *flag.FlagSet) {
	fs.IntVar(&f.tokens, "tokens", 0, "tokens per step (default: 4096 on a GPU, 256 on the CPU)")
	fs.IntVar(&f.seqs, "seqs", 0, "sequences per step; with --seq-len, sets tokens = seqs × seq-len")
	fs.IntVar(&f.seqLen, "seq-len", 0, "sequence length; with --seqs")
	fs.IntVar(&f.hidden, "hidden", 0, "model width (default: 4096 on a GPU, 256 on the CPU)")
	fs.IntVar(&f.ffn, "ffn", 0, "expert FFN width (default: 4 × hidden)")
	fs.IntVar(&f.experts, "experts", 0, "number of experts (default 8)")
	fs.IntVar(&f.topK, "top-k", 0, "experts per token (default 2)")
	fs.StringVar(&f.dtype, "dtype", "", "bf16, fp16, fp32 or tf32 (default bf16)")
	fs.StringVar(&f.act, "act", "", "gelu, silu, or gated: swiglu (silu(x·Wg)·x·Wu) or geglu, whose gemm1 is 2 × ffn wide (default gelu)")
	fs.StringVar(&f.routing, "routing", "", "uniform, zipf:S, seed-uneven, hot:E:P, drift[:P[:STEPS]], trace:FILE (default zipf:1.2)")
	fs.StringVar(&f.layers, "layers", "", "with --routing trace:FILE: `all` steps through the trace's layers in turn, like a forward pass (the default for a trace of several layers)")
	fs.StringVar(&f.layer, "layer", "", "with --routing trace:FILE: replay model layer `L` only (a number from the trace's layers)")
	fs.StringVar(&f.model, "model", "", "start from a published model's MoE layer (`NAME`; moetop models lists them); other layer flags override its fields")
	fs.Uint64Var(&f.seed, "seed", 1, "seed for inputs and weights")
	fs.Float64Var(&f.capacity, "capacity-factor", 0, "backends that pad: cap each expert at factor × mean rows, dropping overflow (0: pad to the busiest)")
	fs.IntVar(&f.sharedExperts, "shared-experts", 0, "dense experts every token also goes through, beside the routed ones (DeepSeek, Qwen2-MoE)")
	fs.IntVar(&f.sharedFFN, "shared-ffn", 0, "with --shared-experts: each shared expert's FFN width (default: --ffn)")
	fs.StringVar(&f.router, "router", "", "softmax (top-k renormalised), softmax-nonorm (norm_topk_prob false) or sigmoid-grouped (DeepSeek-V3) (default softmax)")
	fs.IntVar(&f.groups, "groups", 0, "with --router sigmoid-grouped: expert groups, n_group (default 1)")
	fs.IntVar(&f.topKGroups, "topk-groups", 0, "with --router sigmoid-grouped: groups a token's experts come from, topk_group (default: every group)")
	fs.Float64Var(&f.routedScale, "routed-scale", 1, "multiply the routed experts' weights, routed_scaling_factor (DeepSeek-V3: 2.5)")
}

// config builds the layer from base, overriding what the user set. ffn
// follows hidden (4×) unless set itself.
func (f *layerFlags) config(fs *flag.FlagSet, base profiler.Config) (profiler.Config, error) {
	set := map[string]bool{}
	fs.Visit(func(fl *flag.Flag) { set[fl.Name] = true })
	c := base
	if set["seqs"] != set["seq-len"] {
		return c, usagef("--seqs and --seq-len go together (tokens = seqs × seq-len)")
	}
	if set["seqs"] {
		if set["tokens"] {
			return c, usagef("give --tokens or --seqs with --seq-len, not both")
		}
		if f.seqs <= 0 || f.seqLen <= 0 {
			return c, usagef("invalid --seqs/--seq-len: %d × %d; both must be ≥ 1", f.seqs, f.seqLen)
		}
		if f.seqs > 1<<31/f.seqLen {
			return c, usagef("invalid --seqs/--seq-len: %d × %d overflows; at most 2^31 tokens", f.seqs, f.seqLen)
		}
		f.tokens, set["tokens"] = f.seqs*f.seqLen, true
	}
	if set["model"] {
		var err error
		if c, err = fromPreset(c, f.model); err != nil {
			return c, err
		}
	}
	ints := []struct {
		name string
		v    int
		dst  *int
	}{{"tokens", f.tokens, &c.Tokens}, {"hidden", f.hidden, &c.Hidden}, {"ffn", f.ffn, &c.FFN},
		{"experts", f.experts, &c.Experts}, {"top-k", f.topK, &c.TopK}}
	for _, i := range ints {
		if set[i.name] {
			*i.dst = i.v
		}
	}
	if set["hidden"] && !set["ffn"] && !set["model"] {
		c.FFN = 4 * c.Hidden
	}
	var err error
	if set["dtype"] {
		if c.DType, err = kernels.ParseDType(f.dtype); err != nil {
			return c, usagef("invalid --dtype: %v", err)
		}
	}
	if set["act"] {
		if c.Act, err = kernels.ParseActivation(f.act); err != nil {
			return c, usagef("invalid --act: %v", err)
		}
	}
	if set["routing"] {
		c.Routing = f.routing
	}
	if set["layer"] && set["layers"] {
		return c, usagef("give --layer L or --layers all, not both")
	}
	if sel, name := f.layers, "--layers"; set["layers"] || set["layer"] {
		if set["layer"] {
			sel, name = f.layer, "--layer"
		}
		file, ok := strings.CutPrefix(c.Routing, "trace:")
		if !ok {
			return c, usagef("%s needs --routing trace:FILE (a trace with layers)", name)
		}
		c.Routing = profiler.TraceRouting(file, sel)
	}
	if set["shared-experts"] {
		c.SharedExperts = f.sharedExperts
		if !set["shared-ffn"] && f.sharedExperts > 0 {
			c.SharedFFN = c.FFN // the default, written out so that the log says it
		}
		if f.sharedExperts == 0 {
			c.SharedFFN = 0
		}
	}
	if set["shared-ffn"] {
		c.SharedFFN = f.sharedFFN
	}
	if set["router"] {
		if c.Router, err = kernels.ParseRouterKind(f.router); err != nil {
			return c, usagef("invalid --router: %v", err)
		}
		if c.Router != kernels.SigmoidGrouped {
			c.Groups, c.TopKGroups = 0, 0
		}
	}
	if set["groups"] {
		c.Groups = f.groups
	}
	if set["topk-groups"] {
		c.TopKGroups = f.topKGroups
	}
	if set["routed-scale"] {
		if !(f.routedScale > 0) {
			return c, usagef("invalid --routed-scale %g; want a positive number", f.routedScale)
		}
		c.RoutedScale = f.routedScale
	}
	c.Seed, c.CapacityFactor = f.seed, f.capacity
	if err := c.Validate(); err != nil {
		var fe *profiler.FieldError
		if errors.As(err, &fe) && fe.Field == "ffn" && set["hidden"] && !set["ffn"] {
			// The user gave --hidden, not --ffn: it is the ffn that hidden
			// implies that is wrong, and --hidden is theirs to change.
			return c, usagef("invalid --hidden %d: the --ffn it implies (4 × hidden = %d) is wrong: %s; give a smaller --hidden or set --ffn",
				c.Hidden, c.FFN, fe.Msg)
		}
		return c, usagef("%v", flagNames(err))
	}
	return c, nil
}

// flagNames phrases a config error in terms of the flag to change.
func flagNames(err error) string {
	var fe *profiler.FieldError
	if errors.As(err, &fe) {
		return fmt.Sprintf("invalid --%s: %s", fe.Field, fe.Msg)
	}
	return err.Error()
}

// parse parses args, turning flag's own errors into one-line usage errors
// and -h/--help into the command's help on stdout.
func parse(fs *flag.FlagSet, args []string, help string, stdout io.Writer) error {
	fs.SetOutput(io.Discard)
	fs.Usage = func() {}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			fmt.Fprint(stdout, help)
			printDefaults(fs, stdout)
			return errHelp
		}
		return flagError(fs, err)
	}
	if fs.NArg() > 0 {
		if fs.Name() == "moetop" {
			return usagef("unknown command %q; the commands are check, bench, summary, export, placement, trace, models, devices, help and version", fs.Arg(0))
		}
		return usagef("unexpected argument %q; run '%s --help'", fs.Arg(0), fs.Name())
	}
	return nil
}

// The flag package's own errors, to be said in moetop's words.
var (
	flagUndefined = regexp.MustCompile(`^flag provided but not defined: -+(.*)$`)
	flagNoValue   = regexp.MustCompile(`^flag needs an argument: -+(.*)$`)
	flagBadValue  = regexp.MustCompile(`^invalid (?:boolean )?value ("(?:[^"\\]|\\.)*") for (?:flag )?-+(.*?): (.*)$`)
)

// flagError phrases an error of fs.Parse as moetop's one line: the flag,
// the value given and what it takes, for every kind of flag.
func flagError(fs *flag.FlagSet, err error) error {
	help := fmt.Sprintf("run '%s --help'", fs.Name())
	msg := err.Error()
	if m := flagUndefined.FindStringSubmatch(msg); m != nil {
		return usagef("unknown flag --%s; %s", m[1], help)
	}
	if m := flagNoValue.FindStringSubmatch(msg); m != nil {
		return usagef("--%s needs a value; %s", m[1], help)
	}
	m := flagBadValue.FindStringSubmatch(msg)
	if m == nil {
		return usagef("%s; %s", oneLine(msg), help)
	}
	value, name, why := m[1], m[2], m[3]
	want := why // a flag of our own type: its Set's error says it
	if fl := fs.Lookup(name); fl != nil {
		if g, ok := fl.Value.(flag.Getter); ok {
			want = wantOf(g.Get(), why)
		}
	}
	return usagef("invalid --%s %s; %s", name, value, want)
}

// wantOf says what a flag of v's type takes; why is the flag package's
// reason ("parse error", "value out of range").
func wantOf(v any, why string) string {
	var want string
	switch v.(type) {
	case int, int64:
		want = "want a whole number"
	case uint, uint64:
		want = "want a whole number, 0 or more"
	case float64:
		want = "want a number"
	case bool:
		return "want true or false (or the flag alone for true)"
	case time.Duration:
		return "want a duration such as 500ms, 30s or 10m"
	default:
		return why
	}
	if strings.Contains(why, "range") {
		return "out of range; " + want + " that fits 64 bits"
	}
	return want
}

func printDefaults(fs *flag.FlagSet, w io.Writer) {
	fmt.Fprintln(w, "\nFlags:")
	fs.SetOutput(w)
	fs.PrintDefaults()
	fs.SetOutput(io.Discard)
}

// oneLine keeps an error on one line for the terminal.
func oneLine(s string) string { return strings.Join(strings.Fields(s), " ") }
