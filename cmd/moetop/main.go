// Command moetop is top for Mixture-of-Experts layers: it runs an MoE layer's
// forward pass continuously, samples the GPU, and shows where the time and
// memory go, live or from a recording.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
	"time"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

// usageError is bad input from the user: one line on stderr, exit code 2.
type usageError struct{ msg string }

func (e usageError) Error() string { return e.msg }

func usagef(format string, a ...any) error { return usageError{fmt.Sprintf(format, a...)} }

func main() {
	ctx, cancel := context.WithCancel(context.Background())
	sigs := make(chan os.Signal, 2)
	signal.Notify(sigs, os.Interrupt, syscall.SIGTERM)
	go onSignals(sigs, cancel, time.Second, os.Stderr, os.Exit)
	code := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	signal.Stop(sigs)
	os.Exit(code)
}

// onSignals ends the run on the first SIGINT or SIGTERM: ctx is cancelled,
// and every command stops at its next look at it (within a second on the
// CPU; after the kernel in flight on a GPU), leaving a valid log. If the
// run is still going after grace it says so, and a second signal ends the
// process at once, with the shell's code for the signal (130 for Ctrl-C).
func onSignals(sigs <-chan os.Signal, cancel context.CancelFunc, grace time.Duration, stderr io.Writer, exit func(int)) {
	<-sigs
	cancel()
	select {
	case s := <-sigs:
		exit(signalCode(s))
		return
	case <-time.After(grace):
		fmt.Fprintln(stderr, "moetop: stopping after the work in flight; send the signal again (Ctrl-C) to quit now")
	}
	exit(signalCode(<-sigs))
}

// signalCode is 128 + the signal's number, as a shell reports it.
func signalCode(s os.Signal) int {
	if n, ok := s.(syscall.Signal); ok {
		return 128 + int(n)
	}
	return 130
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
		// help CMD is CMD --help; help alone is the root's.
		if len(args) > 1 && args[1] != "help" {
			return run(ctx, []string{args[1], "--help"}, stdout, stderr)
		}
		return run(ctx, []string{"--help"}, stdout, stderr)
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
	case "version", "--version", "-version":
		err = runVersion(args[1:], stdout)
	default:
		err = runLive(ctx, args, stdout, stderr)
	}
	return report(err, stderr)
}

const versionUsage = `moetop version: print moetop's version.

Usage:
  moetop version
  moetop --version
`

func runVersion(args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("moetop version", flag.ContinueOnError)
	if err := parse(fs, args, versionUsage, stdout); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "moetop %s\n", version)
	return nil
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
