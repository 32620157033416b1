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
//	WORKLOAD ns=ELAPSED ops=N     for each
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

	"golang.org/x/sys/unix"
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
			elapsed, err = benchOpen(f[1], n)
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
		fmt.Printf("%s ns=%d ops=%d\n", f[0], elapsed.Nanoseconds(), n)
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

// benchOpen stats, opens, reads and closes path n times, with raw system calls (os.Open
// would also register the file with the poller).
func benchOpen(path string, n int) (time.Duration, error) {
	var st syscall.Stat_t
	buf := make([]byte, 4096)
	start := time.Now()
	for range n {
		if err := syscall.Stat(path, &st); err != nil {
			return 0, err
		}
		fd, err := syscall.Open(path, syscall.O_RDONLY|syscall.O_CLOEXEC, 0)
		if err != nil {
			return 0, err
		}
		if _, err := syscall.Read(fd, buf); err != nil {
			return 0, err
		}
		if err := syscall.Close(fd); err != nil {
			return 0, err
		}
	}
	return time.Since(start), nil
}

// benchExec runs path n times, one after the other.
func benchExec(path string, n int) (time.Duration, error) {
	attr := &syscall.ProcAttr{Env: []string{}, Files: []uintptr{0, 1, 2}}
	argv := []string{"true"}
	start := time.Now()
	for range n {
		pid, err := syscall.ForkExec(path, argv, attr)
		if err != nil {
			return 0, err
		}
		var ws syscall.WaitStatus
		if _, err := syscall.Wait4(pid, &ws, 0, nil); err != nil {
			return 0, err
		}
		if !ws.Exited() || ws.ExitStatus() != 0 {
			return 0, fmt.Errorf("%s: wait status %#x", path, ws)
		}
	}
	return time.Since(start), nil
}

// benchConnect connects to a listener of its own on 127.0.0.1 n times. Each connection
// is accepted and both ends closed; the client closes first with a zero linger, which
// resets the connection instead of leaving it in TIME_WAIT, so the ephemeral ports
// never run out however many runs there are.
func benchConnect(port, n int) (time.Duration, error) {
	l, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return 0, err
	}
	defer unix.Close(l)
	if err := unix.SetsockoptInt(l, unix.SOL_SOCKET, unix.SO_REUSEADDR, 1); err != nil {
		return 0, err
	}
	addr := &unix.SockaddrInet4{Port: port, Addr: [4]byte{127, 0, 0, 1}}
	if err := unix.Bind(l, addr); err != nil {
		return 0, err
	}
	if err := unix.Listen(l, 64); err != nil {
		return 0, err
	}
	linger := &unix.Linger{Onoff: 1, Linger: 0}
	start := time.Now()
	for range n {
		c, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			return 0, err
		}
		if err := unix.SetsockoptLinger(c, unix.SOL_SOCKET, unix.SO_LINGER, linger); err != nil {
			return 0, err
		}
		if err := unix.Connect(c, addr); err != nil {
			return 0, err
		}
		a, _, err := unix.Accept4(l, unix.SOCK_CLOEXEC)
		if err != nil {
			return 0, err
		}
		if err := errors.Join(unix.Close(c), unix.Close(a)); err != nil {
			return 0, err
		}
	}
	return time.Since(start), nil
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
