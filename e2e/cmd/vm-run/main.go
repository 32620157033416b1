// Command vm-run boots one of the test VMs (e2e/vm) and runs a command in it, for
// trying things by hand; hack/vm-run.sh runs it from the repository root.
//
//	vm-run [-series 6.12] [-file HOST:GUEST]... [-forward GUESTADDR=HOSTADDR]... [-timeout 5m] [-bench] [-console] -- COMMAND [ARG...]
//
// -forward 10.0.2.100:8080=127.0.0.1:8080 lets the guest reach the host's 127.0.0.1:8080
// at 10.0.2.100:8080, and nothing else (vm.Config.Forwards).
//
// The command's output goes to stdout as it arrives, and vm-run exits with the
// command's exit code. When the VM dies without one (a kernel panic, the timeout),
// vm-run prints why with the end of the console and exits 125; -console prints the
// whole console to stderr in any case.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/podarmor/podarmor/e2e/vm"
)

// files collects -file HOST:GUEST flags.
type files []vm.File

func (f *files) String() string { return fmt.Sprint(*f) }

func (f *files) Set(s string) error {
	host, guest, ok := strings.Cut(s, ":")
	if !ok || host == "" || !strings.HasPrefix(guest, "/") {
		return errors.New("want HOST:GUEST with an absolute GUEST path")
	}
	*f = append(*f, vm.File{Path: guest, Source: host})
	return nil
}

// forwards collects -forward GUESTADDR=HOSTADDR flags.
type forwards []vm.Forward

func (f *forwards) String() string { return fmt.Sprint(*f) }

func (f *forwards) Set(s string) error {
	guest, host, ok := strings.Cut(s, "=")
	if !ok {
		return errors.New("want GUESTADDR=HOSTADDR, e.g. " + vm.ForwardIP + ":8080=127.0.0.1:8080")
	}
	*f = append(*f, vm.Forward{GuestAddr: guest, Host: host})
	return nil
}

func main() {
	code, err := run()
	if err != nil {
		fmt.Fprintln(os.Stderr, "vm-run:", err)
	}
	os.Exit(code)
}

func run() (int, error) {
	var (
		cfg     vm.Config
		extra   files
		fwds    forwards
		series  string
		console bool
	)
	flag.StringVar(&series, "series", vm.Series612, "kernel series: "+strings.Join(vm.Series(), " or "))
	flag.Var(&extra, "file", "HOST:GUEST: copy a host file into the guest (repeatable)")
	flag.Var(&fwds, "forward", "GUESTADDR=HOSTADDR: let the guest reach a host loopback port (repeatable)")
	flag.DurationVar(&cfg.Timeout, "timeout", vm.DefaultTimeout, "kill the VM after this long")
	flag.IntVar(&cfg.MemoryMiB, "memory", vm.DefaultMemoryMiB, "guest memory in MiB")
	flag.IntVar(&cfg.CPUs, "cpus", 1, "vCPUs (see vm.Config.CPUs before using 2)")
	flag.BoolVar(&cfg.Bench, "bench", false, "deterministic benchmark mode (single-threaded TCG, -icount)")
	flag.BoolVar(&console, "console", false, "print the whole console to stderr at the end")
	flag.Parse()
	cfg.Command = flag.Args()
	cfg.Files = extra
	cfg.Forwards = fwds
	if len(cfg.Command) == 0 {
		flag.Usage()
		return 2, nil
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	kernel, err := vm.Kernel(ctx, series)
	if err != nil {
		return 125, err
	}
	cfg.Kernel = kernel
	cfg.Output = os.Stdout
	res, err := vm.Run(ctx, cfg)
	if console {
		fmt.Fprint(os.Stderr, res.Console)
	}
	if err != nil {
		return 125, err
	}
	fmt.Fprintf(os.Stderr, "vm-run: %s: exit code %d; booted in %s (guest clock %s), %s in all\n",
		series, res.ExitCode, res.Boot.Round(1e6), res.GuestBoot, res.Elapsed.Round(1e6))
	return res.ExitCode, nil
}
