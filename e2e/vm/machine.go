package vm

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// MachineConfig describes a long-running VM that boots a disk image with the image's own
// kernel and initramfs, as the local cluster's Kubernetes node does (hack/node-image.sh,
// e2e/node), unlike Run's VMs, which run one command from an initramfs and power off.
type MachineConfig struct {
	// Kernel and Initrd are the kernel image (a bzImage or a vmlinux ELF) and the
	// initramfs that mounts the root on the disk. Required.
	Kernel, Initrd string
	// Disk is the root disk, /dev/vda in the guest. Required. QEMU writes to it: give a
	// copy-on-write overlay (qemu-img create -f qcow2 -b IMAGE) to keep an image pristine.
	Disk string
	// DiskFormat is "qcow2" (the default) or "raw".
	DiskFormat string
	// KernelArgs are appended to the kernel command line, which starts with
	// "console=ttyS0 root=/dev/vda rw quiet panic=-1 net.ifnames=0 lsm=LSMs
	// cryptomgr.notests".
	KernelArgs []string
	// MemoryMiB is the guest's memory; default DefaultMemoryMiB.
	MemoryMiB int
	// CPUs is the number of vCPUs; default 1. Several run on one TCG thread, taking
	// turns: multi-threaded TCG corrupts a guest that patches its own kernel code (see
	// Config.CPUs), which a node does whenever a BPF program is attached.
	CPUs int
	// Forwards let the guest reach ports of the host's loopback, as Config.Forwards do.
	Forwards []Forward
	// HostForwards let the host reach ports of the guest.
	HostForwards []HostForward
	// Shares are host directories the guest mounts with 9p (virtio): mount -t 9p -o
	// trans=virtio,version=9p2000.L TAG DIR.
	Shares []Share
	// Console is the file the guest's console (ttyS0) is appended to. Required.
	Console string
	// Monitor is the path of the unix socket of QEMU's monitor (QMP), through which
	// Shutdown presses the power button. Required.
	Monitor string
	// Log receives the runner's own lines, e.g. a forward's connection that failed;
	// default: appended to the console file.
	Log func(string)
}

// HostForward lets the host reach a port of the guest: a connection to Host, an address
// on the host's loopback, reaches GuestPort on the guest's address (QEMU's hostfwd).
type HostForward struct {
	// Host is an IP of the host's loopback and a port, e.g. "127.0.0.1:41235".
	Host string
	// GuestPort is the TCP port in the guest, e.g. 8132.
	GuestPort int
}

func (h HostForward) String() string { return h.Host + "->:" + strconv.Itoa(h.GuestPort) }

// Share is a host directory the guest mounts with 9p.
type Share struct {
	// Tag names the share in the guest's mount command: letters, digits, '-' and '_'.
	Tag string
	// Dir is the host directory.
	Dir string
	// ReadOnly makes QEMU refuse the guest's writes.
	ReadOnly bool
}

var shareTag = regexp.MustCompile(`^[A-Za-z0-9_-]{1,31}$`)

func (c *MachineConfig) defaults() error {
	for what, p := range map[string]string{"kernel": c.Kernel, "initrd": c.Initrd, "disk": c.Disk} {
		if p == "" {
			return fmt.Errorf("machine config: no %s", what)
		}
		if _, err := os.Stat(p); err != nil {
			return fmt.Errorf("machine config: %s: %w", what, err)
		}
	}
	if c.Console == "" || c.Monitor == "" {
		return errors.New("machine config: the console file and the monitor socket are required")
	}
	switch c.DiskFormat {
	case "":
		c.DiskFormat = "qcow2"
	case "qcow2", "raw":
	default:
		return fmt.Errorf("machine config: disk format %q is neither qcow2 nor raw", c.DiskFormat)
	}
	if c.MemoryMiB == 0 {
		c.MemoryMiB = DefaultMemoryMiB
	}
	if c.CPUs == 0 {
		c.CPUs = 1
	}
	if c.CPUs < 0 {
		return fmt.Errorf("machine config: %d CPUs", c.CPUs)
	}
	if err := validateForwards(c.Forwards); err != nil {
		return fmt.Errorf("machine config: %w", err)
	}
	seen := map[string]bool{}
	for _, h := range c.HostForwards {
		ap, err := netip.ParseAddrPort(h.Host)
		if err != nil || !ap.Addr().Is4() || !ap.Addr().IsLoopback() || ap.Port() == 0 {
			return fmt.Errorf("machine config: host forward %s: %q is not an IPv4 loopback address and port such as 127.0.0.1:41235", h, h.Host)
		}
		if h.GuestPort <= 0 || h.GuestPort > 65535 {
			return fmt.Errorf("machine config: host forward %s: guest port %d", h, h.GuestPort)
		}
		if seen[h.Host] {
			return fmt.Errorf("machine config: two host forwards from %s", h.Host)
		}
		seen[h.Host] = true
	}
	tags := map[string]bool{}
	for _, s := range c.Shares {
		if !shareTag.MatchString(s.Tag) || tags[s.Tag] {
			return fmt.Errorf("machine config: share tag %q is not a unique name of letters, digits, '-' and '_'", s.Tag)
		}
		tags[s.Tag] = true
		if st, err := os.Stat(s.Dir); err != nil || !st.IsDir() {
			return fmt.Errorf("machine config: share %s: %q is not a directory", s.Tag, s.Dir)
		}
		// QEMU's option syntax has no escape but ",," and the path is its own.
		if strings.Contains(s.Dir, ",") {
			return fmt.Errorf("machine config: share %s: the path %q has a comma", s.Tag, s.Dir)
		}
	}
	return nil
}

// Machine is a running long-lived VM (StartMachine).
type Machine struct {
	cmd     *exec.Cmd
	monitor string
	relays  []*relay
	done    chan struct{}
	err     error
}

// StartMachine starts QEMU for cfg and returns at once; the VM runs until it powers off,
// Shutdown or Kill ends it, or ctx is done (which kills it). QEMU dies with the calling
// process, so a runner that must outlive one command is a process of its own
// (e2e/cmd/node-vm).
func StartMachine(ctx context.Context, cfg MachineConfig) (*Machine, error) {
	if err := cfg.defaults(); err != nil {
		return nil, err
	}
	qemu, err := hostTool("qemu-system-x86_64")
	if err != nil {
		return nil, err
	}
	console, err := os.OpenFile(cfg.Console, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
	if err != nil {
		return nil, err
	}
	defer console.Close()
	logf := cfg.Log
	if logf == nil {
		var mu sync.Mutex
		logf = func(line string) {
			mu.Lock()
			defer mu.Unlock()
			if f, err := os.OpenFile(cfg.Console, os.O_WRONLY|os.O_APPEND, 0); err == nil {
				fmt.Fprintln(f, line)
				f.Close()
			}
		}
	}
	args := machineArgs(cfg)
	var relays []*relay
	if len(cfg.Forwards) > 0 || len(cfg.HostForwards) > 0 {
		busybox, err := hostTool("busybox")
		if err != nil {
			return nil, err
		}
		relays, err = startRelays(cfg.Forwards, logf)
		if err != nil {
			return nil, err
		}
		ports := make([]int, len(relays))
		for i, r := range relays {
			ports[i] = r.port()
		}
		args = append(args, netArgsWith(cfg.Forwards, cfg.HostForwards, busybox, ports)...)
	}
	os.Remove(cfg.Monitor)
	cmd := exec.CommandContext(ctx, qemu, args...)
	cmd.Stdout = console
	cmd.Stderr = console
	cmd.WaitDelay = 5 * time.Second
	// The runner killed outright takes QEMU with it (its relays are gone anyway).
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		closeRelays(relays)
		return nil, fmt.Errorf("start qemu: %w", err)
	}
	m := &Machine{cmd: cmd, monitor: cfg.Monitor, relays: relays, done: make(chan struct{})}
	go func() {
		err := cmd.Wait()
		closeRelays(m.relays)
		if err != nil {
			m.err = fmt.Errorf("qemu: %w (the console file %s tells more)", err, cfg.Console)
		}
		close(m.done)
	}()
	return m, nil
}

// machineArgs is QEMU's command line for cfg, without its network.
func machineArgs(cfg MachineConfig) []string {
	args := []string{
		"-nodefaults", "-display", "none", "-no-reboot",
		"-chardev", "file,id=console,append=on,path=" + qemuOptValue(cfg.Console),
		"-serial", "chardev:console",
		"-qmp", "unix:" + qemuOptValue(cfg.Monitor) + ",server=on,wait=off",
		"-m", strconv.Itoa(cfg.MemoryMiB),
		"-cpu", "max",
		"-accel", "tcg,thread=single",
		"-smp", strconv.Itoa(cfg.CPUs),
		"-kernel", cfg.Kernel,
		"-initrd", cfg.Initrd,
		"-append", strings.Join(append([]string{
			"console=ttyS0", "root=/dev/vda", "rw", "quiet", "panic=-1", "net.ifnames=0",
			"lsm=" + LSMs, "cryptomgr.notests",
		}, cfg.KernelArgs...), " "),
		"-drive", "file=" + qemuOptValue(cfg.Disk) + ",format=" + cfg.DiskFormat + ",if=virtio,cache=writeback,discard=unmap",
	}
	for i, s := range cfg.Shares {
		id := "fs" + strconv.Itoa(i)
		fsdev := "local,id=" + id + ",path=" + s.Dir + ",security_model=none"
		if s.ReadOnly {
			fsdev += ",readonly=on"
		}
		args = append(args, "-fsdev", fsdev, "-device", "virtio-9p-pci,fsdev="+id+",mount_tag="+s.Tag)
	}
	return args
}

// qemuOptValue escapes a value for QEMU's KEY=VALUE,... option syntax.
func qemuOptValue(s string) string { return strings.ReplaceAll(s, ",", ",,") }

// Pid is QEMU's process id.
func (m *Machine) Pid() int { return m.cmd.Process.Pid }

// Done is closed when QEMU has exited.
func (m *Machine) Done() <-chan struct{} { return m.done }

// Wait waits for QEMU to exit and returns why, if not by the guest powering off.
func (m *Machine) Wait() error {
	<-m.done
	return m.err
}

// Shutdown presses the guest's power button (ACPI, through QEMU's monitor) and waits up
// to timeout for the guest to power off; then it kills QEMU. It returns an error if the
// guest did not power off by itself.
func (m *Machine) Shutdown(timeout time.Duration) error {
	select {
	case <-m.done:
		return nil
	default:
	}
	// A monitor connection was once reset before QEMU's greeting (on a busy host): try
	// a few times.
	var err error
	for attempt := 0; attempt < 5; attempt++ {
		if err = m.powerButton(); err == nil {
			break
		}
		select {
		case <-m.done:
			return nil
		case <-time.After(time.Second):
		}
	}
	if err != nil {
		m.Kill()
		return fmt.Errorf("press the power button: %w; killed the VM", err)
	}
	select {
	case <-m.done:
		return nil
	case <-time.After(timeout):
		m.Kill()
		return fmt.Errorf("the guest did not power off within %s; killed the VM", timeout)
	}
}

// Kill ends QEMU at once and waits for it.
func (m *Machine) Kill() {
	m.cmd.Process.Kill()
	<-m.done
}

// powerButton sends system_powerdown over QMP.
func (m *Machine) powerButton() error {
	c, err := net.DialTimeout("unix", m.monitor, 5*time.Second)
	if err != nil {
		return err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	r := bufio.NewReader(c)
	// The greeting, then one answer per command.
	if _, err := r.ReadBytes('\n'); err != nil {
		return fmt.Errorf("qmp greeting: %w", err)
	}
	for _, command := range []string{"qmp_capabilities", "system_powerdown"} {
		if err := json.NewEncoder(c).Encode(map[string]string{"execute": command}); err != nil {
			return err
		}
		for {
			line, err := r.ReadBytes('\n')
			if err != nil {
				return fmt.Errorf("qmp %s: %w", command, err)
			}
			var msg struct {
				Return any `json:"return"`
				Error  *struct {
					Desc string `json:"desc"`
				} `json:"error"`
			}
			if json.Unmarshal(line, &msg) != nil {
				continue
			}
			if msg.Error != nil {
				return fmt.Errorf("qmp %s: %s", command, msg.Error.Desc)
			}
			if msg.Return != nil {
				break // an event otherwise
			}
		}
	}
	return nil
}

// FreeLoopbackPort returns a TCP port of 127.0.0.1 that nothing listened on a moment
// ago, for a HostForward.
func FreeLoopbackPort() (int, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port, nil
}
