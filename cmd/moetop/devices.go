package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"strconv"
	"text/tabwriter"

	"github.com/moetop/moetop/kernels/cuda"
	"github.com/moetop/moetop/nvml"
)

const devicesUsage = `moetop devices: one reading of every GPU through NVML (or of the host
when there is no GPU), the numbers the live view's GPU panel shows. Each GPU
shows its NVML index and its CUDA ordinal (what --device takes), matched by PCI
bus id: the two differ under CUDA_VISIBLE_DEVICES or CUDA's own device order.

Usage:
  moetop devices [--json]
`

func runDevices(_ context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("moetop devices", flag.ContinueOnError)
	asJSON := fs.Bool("json", false, "print the reading as JSON")
	if err := parse(fs, args, devicesUsage, stdout); err != nil {
		return err
	}
	src, reason := nvml.Open()
	defer src.Close()
	snap := src.Read()
	if *asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", " ")
		return enc.Encode(snap)
	}
	if reason != "" {
		fmt.Fprintf(stderr, "moetop: no GPU: %s; showing the host\n", reason)
	}
	tw := tabwriter.NewWriter(stdout, 0, 0, 2, ' ', 0)
	if snap.Host != nil {
		h := snap.Host
		fmt.Fprintf(tw, "host\tmemory %s / %s available\tcpu %s\t%d CPUs\n", gibs(h.MemAvailableBytes), gibs(h.MemTotalBytes),
			opt(h.CPUUtilPct, "%.0f%%"), h.CPUs)
	}
	if snap.Driver != "" {
		fmt.Fprintf(tw, "driver %s\tCUDA %s\n", snap.Driver, snap.CUDA)
	}
	ids, _ := cuda.DeviceIDs(cudaOptions.LibDir)
	fmt.Fprintln(tw, "nvml\tcuda\tpci bus\tname\tmem used\tmem total\tutil\tmem util\tpower\tlimit\ttemp\tsm clock\tmem clock\tpcie rx/tx KB/s\tprocs\terror")
	for _, d := range snap.Devices {
		fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s/%s\t%d\t%s\n", d.Index,
			cudaOrdinal(ids, d.PCIBusID), d.PCIBusID, d.Name,
			optB(d.MemUsedBytes), optB(d.MemTotalBytes), opt(d.UtilPct, "%d%%"), opt(d.MemUtilPct, "%d%%"),
			opt(d.PowerW, "%.1f W"), opt(d.PowerLimitW, "%.0f W"), opt(d.TempC, "%d C"), opt(d.SMClockMHz, "%d MHz"),
			opt(d.MemClockMHz, "%d MHz"), opt(d.PCIeRxKBps, "%d"), opt(d.PCIeTxKBps, "%d"), len(d.Processes), d.Err)
	}
	return tw.Flush()
}

// opt formats an optional reading; "n/a" where the device does not say.
func opt[T any](p *T, format string) string {
	if p == nil {
		return "n/a"
	}
	return fmt.Sprintf(format, *p)
}

func optB(p *uint64) string {
	if p == nil {
		return "n/a"
	}
	return gibs(*p)
}

// cudaOrdinal is the CUDA ordinal of the device on bus, or "-" when CUDA
// does not see it (hidden by CUDA_VISIBLE_DEVICES, or no CUDA library).
func cudaOrdinal(ids []cuda.DeviceID, bus string) string {
	for _, id := range ids {
		if nvml.SamePCIBus(id.PCIBusID, bus) {
			return strconv.Itoa(id.Ordinal)
		}
	}
	return "-"
}
