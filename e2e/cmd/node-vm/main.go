// Command node-vm runs the local cluster's Kubernetes node VM (e2e/node) in the
// foreground until the guest powers off or the command gets SIGTERM or SIGINT, which
// shut the guest down cleanly (its power button; killed after -stop-timeout).
// hack/node-vm.sh start runs it in the background, with its pid in DIR/node-vm.pid.
//
//	node-vm -dir DIR -image IMAGEDIR [-apiserver 127.0.0.1:PORT] [-apiserver-guest ADDR:PORT] [-proxy-port PORT]
//	        [-proxy-socket PATH] [-memory MiB] [-cpus N] [-stop-timeout 90s]
//
// DIR holds the node's state and DIR/node the files handed to the guest (see e2e/node).
// IMAGEDIR is what hack/node-image.sh prints. The guest reaches -apiserver at
// -apiserver-guest (default: APISERVER of DIR/node/node.env, else 10.0.2.100:6443); the host reaches the guest's CONNECT proxy at 127.0.0.1:PORT (written
// to DIR/proxy.addr) and at -proxy-socket. node-vm prints "node-vm: up: ..." when the
// guest's boot is through, and exits 0 when the guest powered off (by a stop or by
// itself), 1 otherwise.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/podarmor/podarmor/e2e/node"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "node-vm:", err)
		os.Exit(1)
	}
}

func run() error {
	var cfg node.Config
	flag.StringVar(&cfg.Dir, "dir", "", "the node's state directory (required; DIR/node must exist)")
	flag.StringVar(&cfg.Image, "image", "", "the image directory hack/node-image.sh printed (required)")
	flag.StringVar(&cfg.APIServer, "apiserver", "", "the host's kube-apiserver, 127.0.0.1:PORT, which the guest reaches at -apiserver-guest")
	flag.StringVar(&cfg.APIServerGuest, "apiserver-guest", "", "the address at which the guest reaches -apiserver (default: APISERVER of DIR/node/node.env, else "+node.APIServerGuestAddr+")")
	flag.IntVar(&cfg.ProxyPort, "proxy-port", 0, "port of 127.0.0.1 that leads to the guest's CONNECT proxy (default: a free one)")
	flag.StringVar(&cfg.ProxySocket, "proxy-socket", "", "unix socket that leads to the guest's CONNECT proxy too")
	flag.IntVar(&cfg.MemoryMiB, "memory", node.DefaultMemoryMiB, "guest memory in MiB")
	flag.IntVar(&cfg.CPUs, "cpus", node.DefaultCPUs, "vCPUs (sharing one TCG thread)")
	stopTimeout := flag.Duration("stop-timeout", 90*time.Second, "how long a stop waits for the guest to power off before killing it")
	flag.Parse()
	if flag.NArg() > 0 {
		return fmt.Errorf("unexpected arguments %q", flag.Args())
	}
	if cfg.Dir == "" || cfg.Image == "" {
		flag.Usage()
		return fmt.Errorf("-dir and -image are required")
	}
	cfg.Log = func(line string) { fmt.Fprintln(os.Stderr, line) }

	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT)
	ctx := context.Background()
	start := time.Now()
	v, err := node.Start(ctx, cfg)
	if err != nil {
		return err
	}
	fmt.Fprintf(os.Stderr, "node-vm: qemu %d started; proxy at %s; console %s/%s\n", v.Pid(), v.ProxyAddr, cfg.Dir, node.ConsoleFile)

	upCtx, cancelUp := context.WithCancel(ctx)
	defer cancelUp()
	go func() {
		line, err := v.WaitUp(upCtx)
		if err == nil {
			fmt.Fprintf(os.Stderr, "node-vm: up after %s: %s\n", time.Since(start).Round(time.Second), line)
		}
	}()

	select {
	case s := <-sig:
		fmt.Fprintf(os.Stderr, "node-vm: %s: shutting the guest down\n", s)
		if err := v.Shutdown(*stopTimeout); err != nil {
			return err
		}
		fmt.Fprintln(os.Stderr, "node-vm: the guest powered off")
		return nil
	case <-v.Done():
		if err := v.Wait(); err != nil {
			return err
		}
		fmt.Fprintln(os.Stderr, "node-vm: the guest powered off")
		return nil
	}
}
