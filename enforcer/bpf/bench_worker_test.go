//go:build vmguest

package bpf

// The worker of the enforcer benchmark: this test binary, started in a sandbox with
// PODARMOR_BENCH_WORKER set. It stays for the whole benchmark, so that each sandbox
// starts once (a Go test binary takes a while to start under emulation): it prints
//
//	ready label=APPARMOR-LABEL
//
// then reads lines of workloads from its standard input, runs each line's workloads one
// after the other, times each by the guest's clock (which counts instructions in a
// benchmark VM) and answers
//
//	WORKLOAD ns=ELAPSED ops=N untimed=M     for each (M operations ran before the timed N)
//	end
//
// until its input ends. It takes over in init, before the testing framework (whose
// TestMain is the guest tests' helper dispatch) starts.

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"time"
	"unsafe"
)

// benchWorkerEnv marks a process as a benchmark worker.
const benchWorkerEnv = "PODARMOR_BENCH_WORKER"

func init() {
	if os.Getenv(benchWorkerEnv) == "" {
		return
	}
	fmt.Printf("ready label=%s\n", appArmorLabel())
	in := bufio.NewScanner(os.Stdin)
	for in.Scan() {
		if err := benchWork(strings.Fields(in.Text())); err != nil {
			fmt.Println("error", err)
			os.Exit(1)
		}
		fmt.Println("end")
	}
	os.Exit(0)
}

// benchWork runs the workloads its arguments name, each written WORKLOAD:ARG:...:
//
//	open:PATH:N      N times: stat, open, read 4 KiB, close
//	openclose:PATH:N N times: open, close (the loop of the anchors in ENVIRONMENT.md)
//	exec:PATH:N      N times: fork, exec PATH (argv[0] "true"), wait
//	connect:PORT:N   N times: TCP connect to 127.0.0.1:PORT, accept, close both
//	mixed:SCRIPT:DIR:TARBALL   sh SCRIPT DIR TARBALL, once
func benchWork(args []string) error {
	for _, arg := range args {
		f := strings.Split(arg, ":")
		var (
			n       = 1
			elapsed time.Duration
			err     error
		)
		if len(f) == 3 {
			n, err = strconv.Atoi(f[2])
		}
		switch {
		case err != nil:
		case f[0] == "open" && len(f) == 3:
			elapsed, err = benchOpen(f[1], n, true)
		case f[0] == "openclose" && len(f) == 3:
			elapsed, err = benchOpen(f[1], n, false)
		case f[0] == "exec" && len(f) == 3:
			elapsed, err = benchExec(f[1], n)
		case f[0] == "connect" && len(f) == 3:
			var port int
			if port, err = strconv.Atoi(f[1]); err == nil {
				elapsed, err = benchConnect(port, n)
			}
		case f[0] == "mixed" && len(f) == 4:
			elapsed, err = benchMixed(f[1], f[2], f[3])
		default:
			err = errors.New("unknown workload")
		}
		if err != nil {
			return fmt.Errorf("%s: %w", arg, err)
		}
		untimed := 0
		if f[0] != "mixed" {
			untimed = untimedOps(n)
		}
		fmt.Printf("%s ns=%d ops=%d untimed=%d\n", f[0], elapsed.Nanoseconds(), n, untimed)
	}
	return nil
}

// appArmorLabel is the AppArmor confinement of this process, with spaces replaced.
func appArmorLabel() string {
	for _, f := range []string{"/proc/self/attr/apparmor/current", "/proc/self/attr/current"} {
		if b, err := os.ReadFile(f); err == nil {
			return strings.ReplaceAll(strings.TrimSpace(strings.TrimRight(string(b), "\x00")), " ", "_")
		}
	}
	return "none"
}

// The loops make raw system calls (syscall.RawSyscall), which the Go scheduler does not
// see: under emulation a system call takes tens of microseconds of guest time, longer
// than the scheduler's monitor waits before it takes the processor of a goroutine in a
// system call away, and the hand-offs that follow would add work that varies from run to
// run. Each loop runs a tenth of its iterations untimed first.

// benchOpen opens and closes path n times, with a stat before and a read of 4 KiB in
// between if full is set.
func benchOpen(path string, n int, full bool) (time.Duration, error) {
	p, err := syscall.BytePtrFromString(path)
	if err != nil {
		return 0, err
	}
	var st syscall.Stat_t
	buf := make([]byte, 4096)
	loop := func(n int) error {
		for range n {
			if full {
				if _, _, e := syscall.RawSyscall6(syscall.SYS_NEWFSTATAT, atFDCWD, uintptr(unsafe.Pointer(p)), uintptr(unsafe.Pointer(&st)), 0, 0, 0); e != 0 {
					return fmt.Errorf("stat: %w", e)
				}
			}
			fd, _, e := syscall.RawSyscall6(syscall.SYS_OPENAT, atFDCWD, uintptr(unsafe.Pointer(p)), syscall.O_RDONLY|syscall.O_CLOEXEC, 0, 0, 0)
			if e != 0 {
				return fmt.Errorf("open: %w", e)
			}
			if full {
				if _, _, e := syscall.RawSyscall(syscall.SYS_READ, fd, uintptr(unsafe.Pointer(&buf[0])), uintptr(len(buf))); e != 0 {
					return fmt.Errorf("read: %w", e)
				}
			}
			if _, _, e := syscall.RawSyscall(syscall.SYS_CLOSE, fd, 0, 0); e != 0 {
				return fmt.Errorf("close: %w", e)
			}
		}
		return nil
	}
	return timed(n, loop)
}

// atFDCWD is AT_FDCWD as a system call argument.
const atFDCWD = ^uintptr(99) // -100

// untimedOps is how many operations a loop of n runs before it starts timing.
func untimedOps(n int) int { return max(1, n/10) }

// timed runs loop for untimedOps(n), then for n, and returns the time of the second.
func timed(n int, loop func(int) error) (time.Duration, error) {
	if err := loop(untimedOps(n)); err != nil {
		return 0, err
	}
	start := time.Now()
	err := loop(n)
	return time.Since(start), err
}

// benchExec runs path n times, one after the other.
func benchExec(path string, n int) (time.Duration, error) {
	attr := &syscall.ProcAttr{Env: []string{}, Files: []uintptr{0, 1, 2}}
	argv := []string{"true"}
	loop := func(n int) error {
		for range n {
			pid, err := syscall.ForkExec(path, argv, attr)
			if err != nil {
				return err
			}
			var ws syscall.WaitStatus
			if _, _, e := syscall.RawSyscall6(syscall.SYS_WAIT4, uintptr(pid), uintptr(unsafe.Pointer(&ws)), 0, 0, 0, 0); e != 0 {
				return fmt.Errorf("wait4: %w", e)
			}
			if !ws.Exited() || ws.ExitStatus() != 0 {
				return fmt.Errorf("%s: wait status %#x", path, ws)
			}
		}
		return nil
	}
	return timed(n, loop)
}

// benchConnect connects to a listener of its own on 127.0.0.1 n times. Each connection
// is accepted and both ends closed; the client closes first with a zero linger, which
// resets the connection instead of leaving it in TIME_WAIT, so the ephemeral ports
// never run out however many runs there are.
func benchConnect(port, n int) (time.Duration, error) {
	l, err := syscall.Socket(syscall.AF_INET, syscall.SOCK_STREAM|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		return 0, err
	}
	defer syscall.Close(l)
	if err := syscall.SetsockoptInt(l, syscall.SOL_SOCKET, syscall.SO_REUSEADDR, 1); err != nil {
		return 0, err
	}
	if err := syscall.Bind(l, &syscall.SockaddrInet4{Port: port, Addr: [4]byte{127, 0, 0, 1}}); err != nil {
		return 0, err
	}
	if err := syscall.Listen(l, 64); err != nil {
		return 0, err
	}
	sa := syscall.RawSockaddrInet4{Family: syscall.AF_INET, Port: uint16(port>>8 | port<<8&0xff00), Addr: [4]byte{127, 0, 0, 1}}
	linger := syscall.Linger{Onoff: 1, Linger: 0}
	loop := func(n int) error {
		for range n {
			c, _, e := syscall.RawSyscall(syscall.SYS_SOCKET, syscall.AF_INET, syscall.SOCK_STREAM|syscall.SOCK_CLOEXEC, 0)
			if e != 0 {
				return fmt.Errorf("socket: %w", e)
			}
			if _, _, e := syscall.RawSyscall6(syscall.SYS_SETSOCKOPT, c, syscall.SOL_SOCKET, syscall.SO_LINGER, uintptr(unsafe.Pointer(&linger)), unsafe.Sizeof(linger), 0); e != 0 {
				return fmt.Errorf("setsockopt: %w", e)
			}
			if _, _, e := syscall.RawSyscall(syscall.SYS_CONNECT, c, uintptr(unsafe.Pointer(&sa)), unsafe.Sizeof(sa)); e != 0 {
				return fmt.Errorf("connect: %w", e)
			}
			a, _, e := syscall.RawSyscall6(syscall.SYS_ACCEPT4, uintptr(l), 0, 0, syscall.SOCK_CLOEXEC, 0, 0)
			if e != 0 {
				return fmt.Errorf("accept: %w", e)
			}
			syscall.RawSyscall(syscall.SYS_CLOSE, c, 0, 0)
			syscall.RawSyscall(syscall.SYS_CLOSE, a, 0, 0)
		}
		return nil
	}
	return timed(n, loop)
}

// benchMixed runs the mixed workload's script.
func benchMixed(script, dir, tarball string) (time.Duration, error) {
	cmd := exec.Command("/bin/sh", script, dir, tarball)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	start := time.Now()
	err := cmd.Run()
	elapsed := time.Since(start)
	if err != nil {
		return 0, fmt.Errorf("sh %s: %w\n%s", script, err, out.String())
	}
	return elapsed, nil
}
