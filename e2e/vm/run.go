package vm

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// LSMs is the lsm= list every VM boots with: Debian's order with AppArmor as the major
// LSM and BPF LSM last, as on a node that runs podarmor.
const LSMs = "landlock,lockdown,yama,apparmor,bpf"

// Defaults of Config.
const (
	DefaultMemoryMiB = 1024
	DefaultTimeout   = 5 * time.Minute
)

// defaultPath is the PATH of the guest's command.
const defaultPath = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

// Config describes one boot: the kernel, what the initramfs holds besides the base
// userland, and the one command the guest runs before it powers off.
type Config struct {
	// Kernel is the path of the kernel image, as Kernel returns it: a vmlinux ELF,
	// which QEMU boots directly (PVH). A bzImage (vmlinuz) boots too, 3-5 s slower
	// under TCG, where the kernel decompresses itself. Required.
	Kernel string
	// Command is the program and its arguments, run as root from /init (whose child
	// it is) with stdin from /dev/null. Required. The guest's PATH has /bin, /sbin,
	// /usr/bin, /usr/sbin and their local/ variants, where busybox's applets, runc and
	// apparmor_parser are.
	Command []string
	// Env holds KEY=VALUE pairs added to the command's environment, which otherwise
	// has PATH, HOME=/root and TERM=dumb only.
	Env []string
	// Dir is the command's working directory in the guest; default "/".
	Dir string
	// Files are put into the initramfs over the base userland. Dynamically linked ELF
	// executables among them bring their shared libraries along (found with ldd).
	Files []File
	// Dirs are directories to create in the guest (with their parents), mode 0755.
	Dirs []string
	// MemoryMiB is the guest's memory; default DefaultMemoryMiB.
	MemoryMiB int
	// Timeout bounds the whole boot, from starting QEMU to its exit; then QEMU is
	// killed. Default DefaultTimeout.
	Timeout time.Duration
	// CPUs is the number of vCPUs; default 1. More than one runs QEMU's multi-threaded
	// TCG, which (QEMU 7.2, Debian 12) corrupts the guest when the kernel patches its
	// own code while another vCPU runs it: toggling static keys, as attaching BPF
	// programs or enabling tracepoints does, ends in "Oops: int3" and a panic within
	// a minute on 6.12, and hung 6.1 once. Use 2 only for a test that needs two CPUs
	// and patches no kernel code while both run.
	CPUs int
	// Bench switches QEMU to deterministic mode for benchmarks: one vCPU, one TCG
	// thread and instruction counting (-icount shift=0,sleep=off), so the guest's clock
	// advances with the instructions it executes and a benchmark timed inside the
	// guest is repeatable. The wall clock runs slower than without it.
	Bench bool
	// Nice (1-19) lowers QEMU's CPU priority by that nice value. Each VM keeps a host
	// core busy (one TCG thread), so a long batch suite booting several VMs at once
	// takes the machine from tests that share it and have deadlines, such as a local
	// cluster's kubelet and its probes; niced, it takes the CPU they leave. 0 leaves
	// the priority as it is.
	Nice int
	// KernelArgs are appended to the kernel command line.
	KernelArgs []string
	// Forwards let the guest reach TCP ports on the host's loopback, e.g. a
	// kube-apiserver the test started: Forward{GuestAddr: ForwardIP + ":6443", Host:
	// "127.0.0.1:41234"}. With any, the VM gets a virtio NIC on QEMU's user-mode
	// network with restrict=on, eth0 is GuestIP/24, and each forward's GuestAddr is
	// relayed to its Host; the guest reaches nothing else: not the gateway, not DNS,
	// no other host port, no route out. /init loads the NIC's modules (kept beside
	// the kernel by hack/vm-kernels.sh) before the command starts, which adds under a
	// second to the boot. Without forwards the VM has no network device.
	Forwards []Forward
	// Output, if set, receives the command's output as it arrives, a line at a time.
	Output io.Writer
}

func (c *Config) defaults() error {
	if c.Kernel == "" {
		return errors.New("vm config: no kernel")
	}
	if len(c.Command) == 0 {
		return errors.New("vm config: no command")
	}
	// The command runs as `env -i VAR=... COMMAND`, where a first word with "=" would
	// be taken for a variable.
	if strings.Contains(c.Command[0], "=") {
		return fmt.Errorf("vm config: command %q contains \"=\"", c.Command[0])
	}
	for _, kv := range c.Env {
		if k, _, ok := strings.Cut(kv, "="); !ok || k == "" {
			return fmt.Errorf("vm config: environment entry %q is not KEY=VALUE", kv)
		}
	}
	if c.Dir == "" {
		c.Dir = "/"
	}
	if !path.IsAbs(c.Dir) {
		return fmt.Errorf("vm config: working directory %q is not absolute", c.Dir)
	}
	if c.MemoryMiB == 0 {
		c.MemoryMiB = DefaultMemoryMiB
	}
	if c.Timeout == 0 {
		c.Timeout = DefaultTimeout
	}
	if c.CPUs == 0 {
		c.CPUs = 1
	}
	if c.Nice < 0 || c.Nice > 19 {
		return fmt.Errorf("vm config: nice value %d is not in 0-19", c.Nice)
	}
	if c.CPUs < 0 || (c.Bench && c.CPUs != 1) {
		return fmt.Errorf("vm config: %d CPUs (a benchmark VM has exactly 1)", c.CPUs)
	}
	if err := validateForwards(c.Forwards); err != nil {
		return fmt.Errorf("vm config: %w", err)
	}
	return nil
}

// Result is what a boot did.
type Result struct {
	// ExitCode is the command's exit status (128+N when signal N ended it).
	ExitCode int
	// Output is what the command wrote to stdout and stderr, byte for byte,
	// interleaved as written. It comes through a serial port of its own, so no
	// kernel message is mixed in.
	Output string
	// Console is the whole boot: the kernel's console (with the quiet kernel, little
	// more than /init's markers and any warnings, oopses or panic) and the command's
	// output, merged line by line as they arrived.
	Console string
	// Boot is the wall time from starting QEMU until the command started.
	Boot time.Duration
	// GuestBoot is the guest's uptime when the command started (by its own clock:
	// under Bench, instructions executed).
	GuestBoot time.Duration
	// Elapsed is the wall time from starting QEMU until it exited.
	Elapsed time.Duration
}

// Run boots a VM on cfg.Kernel with the base userland and cfg's files, runs cfg.Command
// in it and returns its exit code and output. The error is nil whenever the command ran
// to its end, whatever its exit code; it says what went wrong otherwise (the kernel
// panicked, /init failed, the timeout killed QEMU), with the end of the console.
//
// QEMU runs with TCG (no KVM: nested KVM hangs on the machines we run on), one vCPU
// unless cfg.CPUs says otherwise, no network device unless cfg.Forwards asks for one,
// the console on a serial port, and
// -no-reboot and panic=-1 so that a kernel panic ends it at once.
func Run(ctx context.Context, cfg Config) (Result, error) {
	if err := cfg.defaults(); err != nil {
		return Result{}, err
	}
	qemu, err := hostTool("qemu-system-x86_64")
	if err != nil {
		return Result{}, err
	}
	nonce := make([]byte, 8)
	rand.Read(nonce)
	marker := hex.EncodeToString(nonce)

	dir, err := os.MkdirTemp("", "podarmor-vm-")
	if err != nil {
		return Result{}, err
	}
	defer os.RemoveAll(dir)
	files := append(slices.Clone(cfg.Files),
		File{Path: "/podarmor/run", Data: []byte("PODARMOR_NONCE=" + marker + "\n")},
		File{Path: "/podarmor/cmd", Data: commandScript(cfg)},
	)
	con := &console{nonce: marker, output: cfg.Output}
	args := qemuArgs(cfg, initrd(dir))
	if len(cfg.Forwards) > 0 {
		netFiles, err := netFiles(cfg.Kernel)
		if err != nil {
			return Result{}, err
		}
		files = append(files, netFiles...)
		busybox, err := hostTool("busybox")
		if err != nil {
			return Result{}, err
		}
		relays, err := startRelays(cfg.Forwards, con.note)
		if err != nil {
			return Result{}, err
		}
		// After QEMU has exited (deferred calls run last in first out).
		defer closeRelays(relays)
		ports := make([]int, len(relays))
		for i, r := range relays {
			ports[i] = r.port()
		}
		args = append(args, netArgs(cfg.Forwards, busybox, ports)...)
	}
	if err := writeInitramfs(initrd(dir), files, cfg.Dirs); err != nil {
		return Result{}, err
	}

	runCtx, cancel := context.WithTimeout(ctx, cfg.Timeout)
	defer cancel()
	cmd := qemuCommand(runCtx, qemu, args, cfg.Nice)
	cmd.WaitDelay = 5 * time.Second
	// A test binary killed outright (go test's own timeout, ^C) takes QEMU with it.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	consoleR, err := cmd.StdoutPipe()
	if err != nil {
		return Result{}, err
	}
	// The command's output port, ttyS1, is QEMU's fd 3.
	outputR, outputW, err := os.Pipe()
	if err != nil {
		return Result{}, err
	}
	defer outputR.Close()
	cmd.ExtraFiles = []*os.File{outputW}
	start := time.Now()
	con.setStart(start)
	err = cmd.Start()
	outputW.Close()
	if err != nil {
		return Result{}, fmt.Errorf("start %s: %w", qemu, err)
	}
	var wg sync.WaitGroup
	wg.Go(func() { con.readOutput(outputR) })
	con.readConsole(consoleR)
	wg.Wait()
	waitErr := cmd.Wait()

	res := con.result()
	res.Elapsed = time.Since(start)
	var fail error
	switch {
	case con.initFailed != "":
		fail = fmt.Errorf("guest /init: %s failed", con.initFailed)
	case !con.exited && ctx.Err() != nil:
		fail = fmt.Errorf("vm: %w", ctx.Err())
	case !con.exited && runCtx.Err() != nil:
		fail = fmt.Errorf("vm timed out after %s and was killed", cfg.Timeout)
	case !con.exited:
		fail = fmt.Errorf("vm ended without reporting the command's exit code (qemu: %v)", exitStatus(waitErr))
		if p := con.panicLine(); p != "" {
			fail = fmt.Errorf("vm ended with a kernel panic: %s", p)
		}
	case waitErr != nil:
		fail = fmt.Errorf("qemu after the command exited: %w", waitErr)
	}
	if fail != nil {
		return res, fmt.Errorf("%w\n%s", fail, diagnostics(res.Console, stderr.String()))
	}
	return res, nil
}

func exitStatus(err error) string {
	if err == nil {
		return "exit status 0"
	}
	return err.Error()
}

// diagnostics are the last lines of the console and QEMU's stderr, for an error.
func diagnostics(console, stderr string) string {
	const keep = 30
	lines := strings.Split(strings.TrimRight(console, "\n"), "\n")
	if len(lines) > keep {
		lines = lines[len(lines)-keep:]
	}
	var b strings.Builder
	fmt.Fprintf(&b, "--- last %d console lines:\n%s\n", len(lines), strings.Join(lines, "\n"))
	if s := strings.TrimSpace(stderr); s != "" {
		fmt.Fprintf(&b, "--- qemu stderr:\n%s\n", s)
	}
	return b.String()
}

// initrd is where Run writes the initramfs of a boot, in the boot's directory.
func initrd(dir string) string { return filepath.Join(dir, "initramfs") }

// qemuArgs is QEMU's command line for cfg, without its network (netArgs): the console
// on stdout, the command's output port on fd 3.
//
// The kernel's crypto self-tests are skipped (cryptomgr.notests): under TCG they take
// over a second of every 6.12 boot and test nothing of ours.
func qemuArgs(cfg Config, initrd string) []string {
	args := []string{
		"-nodefaults", "-nographic", "-no-reboot",
		"-serial", "stdio",
		"-serial", "file:/dev/fd/3",
		"-m", strconv.Itoa(cfg.MemoryMiB),
		"-cpu", "max",
		"-kernel", cfg.Kernel,
		"-initrd", initrd,
		"-append", strings.Join(append([]string{
			"console=ttyS0", "quiet", "panic=-1", "lsm=" + LSMs, "cryptomgr.notests",
		}, cfg.KernelArgs...), " "),
	}
	switch {
	case cfg.Bench:
		return append(args, "-accel", "tcg,thread=single", "-icount", "shift=0,sleep=off", "-smp", "1")
	case cfg.CPUs > 1:
		return append(args, "-accel", "tcg,thread=multi", "-smp", strconv.Itoa(cfg.CPUs))
	}
	return append(args, "-accel", "tcg", "-smp", "1")
}

// qemuCommand is QEMU with args, run through nice(1) for a nice value above 0: nice
// execs QEMU with the lower priority, which every thread QEMU starts inherits
// (setpriority after the start would miss the threads QEMU made first).
func qemuCommand(ctx context.Context, qemu string, args []string, nice int) *exec.Cmd {
	if nice > 0 {
		return exec.CommandContext(ctx, "nice", append([]string{"-n", strconv.Itoa(nice), qemu}, args...)...)
	}
	return exec.CommandContext(ctx, qemu, args...)
}

// commandScript is /podarmor/cmd, which /init runs with sh: the command with exactly
// the configured environment, in the configured directory.
func commandScript(cfg Config) []byte {
	var b bytes.Buffer
	fmt.Fprintf(&b, "cd %s || exit 126\nexec env -i", shellQuote(cfg.Dir))
	for _, kv := range append([]string{"PATH=" + defaultPath, "HOME=/root", "TERM=dumb"}, cfg.Env...) {
		b.WriteString(" " + shellQuote(kv))
	}
	for _, arg := range cfg.Command {
		b.WriteString(" " + shellQuote(arg))
	}
	b.WriteString("\n")
	return b.Bytes()
}

func shellQuote(s string) string {
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

// console follows the two serial ports of one boot.
type console struct {
	nonce  string
	output io.Writer
	start  time.Time

	mu         sync.Mutex
	all        strings.Builder // both ports, merged as lines arrive
	out        strings.Builder
	started    bool
	exited     bool
	code       int
	boot       time.Duration
	guestBoot  time.Duration
	initFailed string
}

// readConsole reads the console (ttyS0): kernel messages and /init's own markers.
func (c *console) readConsole(r io.Reader) {
	startMarker := "PODARMOR-VM-START " + c.nonce
	failMarker := "PODARMOR-VM-INIT-FAILED " + c.nonce + " "
	readLines(r, func(line string) {
		c.mu.Lock()
		defer c.mu.Unlock()
		line = strings.TrimRight(line, "\r\n")
		c.all.WriteString(line + "\n")
		if _, what, ok := strings.Cut(line, failMarker); ok {
			c.initFailed = what
		}
		if _, after, ok := strings.Cut(line, startMarker); ok && !c.started {
			c.started = true
			c.boot = time.Since(c.start)
			if s, err := strconv.ParseFloat(strings.TrimSpace(after), 64); err == nil {
				c.guestBoot = time.Duration(s * float64(time.Second))
			}
		}
	})
}

// readOutput reads the command's output port (ttyS1), which ends with the exit marker.
func (c *console) readOutput(r io.Reader) {
	exitMarker := "PODARMOR-VM-EXIT " + c.nonce + " "
	readLines(r, func(line string) {
		c.mu.Lock()
		defer c.mu.Unlock()
		if c.exited {
			return
		}
		// Output without a final newline ends on the marker's line.
		text, marker, exited := strings.Cut(line, exitMarker)
		c.out.WriteString(text)
		c.all.WriteString(text)
		if text != "" && !strings.HasSuffix(text, "\n") {
			c.all.WriteString("\n")
		}
		if c.output != nil && text != "" {
			io.WriteString(c.output, text)
		}
		if exited {
			code, err := strconv.Atoi(strings.TrimSpace(marker))
			if err != nil {
				code = -1
			}
			c.exited, c.code = true, code
			c.all.WriteString(exitMarker + strings.TrimSpace(marker) + "\n")
		}
	})
}

// readLines calls f with every line r yields, newline included (the last line may have
// none), until r ends.
func readLines(r io.Reader, f func(string)) {
	br := bufio.NewReaderSize(r, 64<<10)
	for {
		line, err := br.ReadString('\n')
		if line != "" {
			f(line)
		}
		if err != nil {
			return
		}
	}
}

// setStart sets the time QEMU started, from which the boot time counts.
func (c *console) setStart(t time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.start = t
}

// note adds a line of the host's own to the console log, e.g. a forward's failure.
func (c *console) note(line string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.all.WriteString(line + "\n")
}

func (c *console) result() Result {
	c.mu.Lock()
	defer c.mu.Unlock()
	return Result{
		ExitCode:  c.code,
		Output:    c.out.String(),
		Console:   c.all.String(),
		Boot:      c.boot,
		GuestBoot: c.guestBoot,
	}
}

func (c *console) panicLine() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	for line := range strings.Lines(c.all.String()) {
		if i := strings.Index(line, "Kernel panic - "); i >= 0 {
			return strings.TrimSpace(line[i:])
		}
	}
	return ""
}
