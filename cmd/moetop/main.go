// Command moetop is top for Mixture-of-Experts layers: it runs an MoE layer's
// forward pass continuously, samples the GPU, and shows where the time and
// memory go, live or from a recording.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

// usageError is bad input from the user: one line on stderr, exit code 2.
type usageError struct{ msg string }

func (e usageError) Error() string { return e.msg }

func usagef(format string, a ...any) error { return usageError{fmt.Sprintf(format, a...)} }

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

// run dispatches a command line and returns the exit code.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	var err error
	cmd := ""
	if len(args) > 0 {
		cmd = args[0]
	}
	switch cmd {
	case "help":
		fmt.Fprint(stdout, rootUsage)
		return 0
	case "check":
		err = runCheck(ctx, args[1:], stdout, stderr)
	case "bench":
		err = runBench(ctx, args[1:], stdout, stderr)
	case "summary":
		err = runSummary(ctx, args[1:], stdout, stderr)
	case "export":
		err = runExport(ctx, args[1:], stdout, stderr)
	case "models":
		err = runModels(ctx, args[1:], stdout, stderr)
	case "trace":
		err = runTrace(ctx, args[1:], stdout, stderr)
	case "placement":
		err = runPlacement(ctx, args[1:], stdout, stderr)
	case "devices":
		err = runDevices(ctx, args[1:], stdout, stderr)
	case "version":
		fmt.Fprintf(stdout, "moetop %s\n", version)
		return 0
	default:
		err = runLive(ctx, args, stdout, stderr)
	}
	return report(err, stderr)
}

// report turns an error into an exit code, printing one line.
func report(err error, stderr io.Writer) int {
	var ue usageError
	switch {
	case err == nil || errors.Is(err, errHelp):
		return 0
	case errors.As(err, &ue):
		fmt.Fprintf(stderr, "moetop: %s\n", ue.msg)
		return 2
	default:
		fmt.Fprintf(stderr, "moetop: %v\n", err)
		return 1
	}
}
