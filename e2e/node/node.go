// Package node boots the local cluster's Kubernetes node: one QEMU VM (TCG) running the
// Debian trixie image that hack/node-image.sh builds, with containerd (NRI on), runc,
// AppArmor and, when the host gives them, a kubelet and kube-proxy that join the
// control plane on the host. docs/local-cluster.md describes the whole cluster;
// e2e/cmd/node-vm and hack/node-vm.sh run a node from the command line.
//
// A node's state lives in one directory (Config.Dir):
//
//	node/        the host's files for the guest, read-only there (the caller fills it):
//	             kubelet.kubeconfig, kube-proxy.kubeconfig, bin/kubelet, bin/kube-proxy,
//	             images/*.tar (imported into containerd at every boot), node.env
//	             (NODE_NAME, NODE_IP, POD_CIDR, SERVICE_CIDR, CLUSTER_DOMAIN, CLUSTER_DNS),
//	             kubelet-client-ca.crt (optional: the CA of the API server's client
//	             certificate), selftest.sh (optional: run once the images are in)
//	logs/        written by the guest: journal.log (the guest's whole journal, as it
//	             goes), selftest.log and selftest.exit
//	disk.qcow2   the node's disk: a copy-on-write overlay on the cached image, so the
//	             image stays pristine and the node keeps its state across restarts;
//	             disk.image names the image it is on (another image makes a new disk)
//	console.log  the guest's console, appended at every boot
//	qmp.sock     QEMU's monitor, through which Shutdown presses the power button
//	proxy.addr   the host address (127.0.0.1:PORT) of the guest's CONNECT proxy
//
// The guest's network is QEMU's user-mode network with restrict=on: the guest reaches the
// host's kube-apiserver only at APIServerGuestAddr (a guestfwd through a relay to
// Config.APIServer), and the host reaches the guest only at the proxy (a hostfwd from
// proxy.addr, and Config.ProxySocket if set, to the guest's port ProxyGuestPort).
package node

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/podarmor/podarmor/e2e/vm"
)

// The node's names and addresses, shared with the guest's files (hack/node/rootfs).
const (
	// Name is the node's name in the cluster.
	Name = "podarmor-node"
	// GuestIP is the node's address.
	GuestIP = vm.GuestIP
	// APIServerGuestAddr is where the guest reaches the host's kube-apiserver.
	APIServerGuestAddr = vm.ForwardIP + ":6443"
	// ProxyGuestPort is the port of the guest's HTTP CONNECT proxy.
	ProxyGuestPort = 8132
	// UpMarker starts the console line the guest prints when its boot is through
	// (containerd up, images imported, the kubelet healthy if it has one).
	UpMarker = "podarmor-node: up at uptime "
)

// Defaults of Config.
const (
	DefaultMemoryMiB = 3072
	DefaultCPUs      = 2
)

// Config describes one node VM.
type Config struct {
	// Dir holds the node's state (see the package comment). Required; node/ in it must
	// exist.
	Dir string
	// Image is the directory hack/node-image.sh printed (Image returns it). Required.
	Image string
	// APIServer is the host's kube-apiserver, e.g. "127.0.0.1:41234", which the guest
	// reaches at APIServerGuest. Without it that address leads nowhere.
	APIServer string
	// APIServerGuest is the address at which the guest reaches APIServer: default the
	// APISERVER of node/node.env (e2e/framework writes the advertised address and the
	// API server's port there, which the node's kubeconfigs name), else
	// APIServerGuestAddr.
	APIServerGuest string
	// ProxyPort is the port of 127.0.0.1 that leads to the guest's proxy; 0 picks one.
	ProxyPort int
	// ProxySocket, if set, is a unix socket that leads to the guest's proxy too (for
	// kube-apiserver's egress selector, which speaks HTTP CONNECT over a unix socket).
	ProxySocket string
	// MemoryMiB is the guest's memory; default DefaultMemoryMiB.
	MemoryMiB int
	// CPUs is the number of vCPUs, sharing one TCG thread; default DefaultCPUs.
	CPUs int
	// Log receives the runner's own lines (failed forwards, the disk made); default:
	// appended to the console file.
	Log func(string)
}

// Image builds the node's disk image with hack/node-image.sh (cached; the first build
// takes about 6 minutes, see docs/local-cluster.md) and returns its directory. The
// script's progress goes to progress.
func Image(ctx context.Context, progress io.Writer) (string, error) {
	root, err := repoRoot()
	if err != nil {
		return "", err
	}
	var stdout bytes.Buffer
	cmd := exec.CommandContext(ctx, filepath.Join(root, "hack", "node-image.sh"))
	cmd.Stdout = &stdout
	cmd.Stderr = progress
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("hack/node-image.sh: %w", err)
	}
	dir := strings.TrimSpace(stdout.String())
	if !filepath.IsAbs(dir) {
		return "", fmt.Errorf("hack/node-image.sh printed %q, want a directory", dir)
	}
	return dir, nil
}

// VM is a running node.
type VM struct {
	*vm.Machine
	// Dir is Config.Dir.
	Dir string
	// ProxyAddr is the host address of the guest's proxy, 127.0.0.1:PORT.
	ProxyAddr string

	consoleStart int64
}

// Files of a node's directory.
const (
	shareDir    = "node"
	logsDir     = "logs"
	diskFile    = "disk.qcow2"
	diskImage   = "disk.image"
	ConsoleFile = "console.log"
	monitor     = "qmp.sock"
	ProxyFile   = "proxy.addr"
	imageDisk   = "disk.img"
	imageKern   = "vmlinux"
	imageInitr  = "initrd.img"
)

// Start boots the node of cfg and returns once QEMU runs; WaitUp waits for the guest's
// boot. The VM lives as long as the calling process (QEMU dies with it) or until
// Shutdown.
func Start(ctx context.Context, cfg Config) (*VM, error) {
	if cfg.Dir == "" || cfg.Image == "" {
		return nil, errors.New("node: Config.Dir and Config.Image are required")
	}
	if st, err := os.Stat(filepath.Join(cfg.Dir, shareDir)); err != nil || !st.IsDir() {
		return nil, fmt.Errorf("node: %s is not a directory; it holds the guest's kubeconfigs, binaries and images", filepath.Join(cfg.Dir, shareDir))
	}
	if cfg.MemoryMiB == 0 {
		cfg.MemoryMiB = DefaultMemoryMiB
	}
	if cfg.CPUs == 0 {
		cfg.CPUs = DefaultCPUs
	}
	logf := cfg.Log
	if logf == nil {
		logf = func(string) {}
	}
	if err := os.MkdirAll(filepath.Join(cfg.Dir, logsDir), 0o755); err != nil {
		return nil, err
	}
	disk, err := overlay(ctx, cfg.Dir, cfg.Image, logf)
	if err != nil {
		return nil, err
	}
	port := cfg.ProxyPort
	if port == 0 {
		if port, err = vm.FreeLoopbackPort(); err != nil {
			return nil, err
		}
	}
	proxyAddr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
	mc := vm.MachineConfig{
		Kernel:       filepath.Join(cfg.Image, imageKern),
		Initrd:       filepath.Join(cfg.Image, imageInitr),
		Disk:         disk,
		MemoryMiB:    cfg.MemoryMiB,
		CPUs:         cfg.CPUs,
		HostForwards: []vm.HostForward{{Host: proxyAddr, GuestPort: ProxyGuestPort}},
		Shares: []vm.Share{
			{Tag: "podarmor-node", Dir: filepath.Join(cfg.Dir, shareDir), ReadOnly: true},
			{Tag: "podarmor-logs", Dir: filepath.Join(cfg.Dir, logsDir)},
		},
		Console: filepath.Join(cfg.Dir, ConsoleFile),
		Monitor: filepath.Join(cfg.Dir, monitor),
		Log:     cfg.Log,
	}
	if cfg.APIServer != "" {
		guest := cfg.APIServerGuest
		if guest == "" {
			if guest, err = nodeEnv(filepath.Join(cfg.Dir, shareDir, "node.env"), "APISERVER"); err != nil {
				return nil, err
			}
		}
		if guest == "" {
			guest = APIServerGuestAddr
		}
		mc.Forwards = []vm.Forward{{GuestAddr: guest, Host: cfg.APIServer}}
	}
	var start int64
	if st, err := os.Stat(mc.Console); err == nil {
		start = st.Size()
	}
	var stopRelay func()
	if cfg.ProxySocket != "" {
		os.Remove(cfg.ProxySocket)
		ln, err := net.Listen("unix", cfg.ProxySocket)
		if err != nil {
			return nil, fmt.Errorf("node: proxy socket: %w", err)
		}
		stopRelay = vm.ServeRelay(ln, proxyAddr, logf)
	}
	m, err := vm.StartMachine(ctx, mc)
	if err != nil {
		if stopRelay != nil {
			stopRelay()
		}
		return nil, err
	}
	if stopRelay != nil {
		go func() {
			<-m.Done()
			stopRelay()
		}()
	}
	if err := os.WriteFile(filepath.Join(cfg.Dir, ProxyFile), []byte(proxyAddr+"\n"), 0o644); err != nil {
		m.Kill()
		return nil, err
	}
	return &VM{Machine: m, Dir: cfg.Dir, ProxyAddr: proxyAddr, consoleStart: start}, nil
}

// overlay returns the node's disk in dir, made on image's disk unless it is there
// already on the same image.
func overlay(ctx context.Context, dir, image string, logf func(string)) (string, error) {
	disk := filepath.Join(dir, diskFile)
	base := filepath.Join(image, imageDisk)
	if _, err := os.Stat(base); err != nil {
		return "", fmt.Errorf("node: image %s: %w", image, err)
	}
	stamp := filepath.Join(dir, diskImage)
	if on, err := os.ReadFile(stamp); err == nil && strings.TrimSpace(string(on)) == image {
		if _, err := os.Stat(disk); err == nil {
			return disk, nil
		}
	} else if err == nil {
		logf(fmt.Sprintf("node: the disk was made on the image %s, not %s: making a new one (the node starts afresh)", strings.TrimSpace(string(on)), image))
	}
	os.Remove(disk)
	out, err := exec.CommandContext(ctx, "qemu-img", "create", "-q", "-f", "qcow2", "-F", "raw", "-b", base, disk).CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("node: qemu-img create (hack/deps.sh node installs it): %v: %s", err, out)
	}
	if err := os.WriteFile(stamp, []byte(image+"\n"), 0o644); err != nil {
		return "", err
	}
	logf("node: made the disk " + disk + " on " + base)
	return disk, nil
}

// nodeEnv returns the value of key in the node.env file at path ("" if the file or the
// key is missing). The file holds KEY=VALUE lines, which the guest sources.
func nodeEnv(path, key string) (string, error) {
	data, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return "", nil
	}
	if err != nil {
		return "", err
	}
	value := ""
	for line := range strings.Lines(string(data)) {
		if k, v, ok := strings.Cut(strings.TrimSpace(line), "="); ok && k == key {
			value = strings.Trim(v, `"'`)
		}
	}
	return value, nil
}

// WaitUp waits until the guest says its boot is through (UpMarker, which also names the
// state of containerd, the proxy, the kubelet and kube-proxy) and returns that line.
func (v *VM) WaitUp(ctx context.Context) (string, error) {
	console := filepath.Join(v.Dir, ConsoleFile)
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	for {
		if line, ok := findLine(console, v.consoleStart, UpMarker); ok {
			return line, nil
		}
		select {
		case <-v.Done():
			if line, ok := findLine(console, v.consoleStart, UpMarker); ok {
				return line, nil
			}
			return "", fmt.Errorf("node: the VM ended before its boot was through (%v); see %s", v.Wait(), console)
		case <-ctx.Done():
			return "", fmt.Errorf("node: waiting for the boot: %w; see %s", ctx.Err(), console)
		case <-tick.C:
		}
	}
}

// findLine returns the first line of file after offset that contains marker.
func findLine(file string, offset int64, marker string) (string, bool) {
	data, err := os.ReadFile(file)
	if err != nil || int64(len(data)) < offset {
		return "", false
	}
	for line := range strings.Lines(string(data[offset:])) {
		if i := strings.Index(line, marker); i >= 0 {
			return strings.TrimSpace(line[i:]), true
		}
	}
	return "", false
}

// repoRoot finds the repository by walking up from the working directory to podarmor's
// go.mod.
func repoRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		data, err := os.ReadFile(filepath.Join(dir, "go.mod"))
		if err == nil && bytes.HasPrefix(data, []byte("module github.com/podarmor/podarmor\n")) {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("node: no go.mod of github.com/podarmor/podarmor above the working directory")
		}
		dir = parent
	}
}
