//go:build vmguest

package bpf

// The helper mode of the guest test binary: one operation, its outcome on stdout.

import (
	"bufio"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strconv"
	"syscall"
	"testing"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/podarmor/podarmor/policies/api/v1alpha1"
	"github.com/podarmor/podarmor/policies/compile/bpf"
	"github.com/podarmor/podarmor/policies/ruleset"
)

func TestMain(m *testing.M) {
	if os.Getenv("PODARMOR_HELPER") != "" {
		os.Exit(helper(os.Args[1:]))
	}
	os.Exit(m.Run())
}

func atoi(s string) int {
	n, err := strconv.Atoi(s)
	if err != nil {
		panic(err)
	}
	return n
}

// helper performs one operation and reports it.
func helper(args []string) int {
	err := operate(args)
	switch {
	case err == nil:
		fmt.Println("ok")
		return 0
	case errors.Is(err, syscall.EPERM):
		fmt.Println("EPERM:", err)
		return 1
	default:
		fmt.Println("error:", err)
		return 2
	}
}

func operate(a []string) error {
	switch a[0] {
	case "read":
		_, err := os.ReadFile(a[1])
		return err
	case "write":
		f, err := os.OpenFile(a[1], os.O_WRONLY, 0)
		if err != nil {
			return err
		}
		return f.Close()
	case "append":
		f, err := os.OpenFile(a[1], os.O_WRONLY|os.O_APPEND, 0)
		if err != nil {
			return err
		}
		return f.Close()
	case "create":
		f, err := os.OpenFile(a[1], os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
		if err != nil {
			return err
		}
		return f.Close()
	case "read-loop": // read-loop PATH N: N reads, counting outcomes; any other error fails
		var ok, eperm int
		for range atoi(a[2]) {
			_, err := os.ReadFile(a[1])
			switch {
			case err == nil:
				ok++
			case errors.Is(err, syscall.EPERM):
				eperm++
			default:
				return err
			}
			time.Sleep(2 * time.Millisecond)
		}
		fmt.Printf("ok=%d eperm=%d\n", ok, eperm)
		return nil
	case "daemon": // daemon PINDIR: an enforcer with profile "killed", registering on request
		return daemon(a[1])
	case "truncate":
		return os.Truncate(a[1], 0)
	case "unlink":
		return os.Remove(a[1])
	case "mkdir":
		return os.Mkdir(a[1], 0o755)
	case "rename":
		return os.Rename(a[1], a[2])
	case "link":
		return os.Link(a[1], a[2])
	case "symlink":
		return os.Symlink(a[1], a[2])
	case "chmod":
		m, _ := strconv.ParseUint(a[2], 8, 32)
		return os.Chmod(a[1], os.FileMode(m))
	case "chmod-raw":
		m, _ := strconv.ParseUint(a[2], 8, 32)
		return syscall.Chmod(a[1], uint32(m))
	case "chown":
		return os.Chown(a[1], atoi(a[2]), -1)
	case "exec": // exec PATH ARGV0 ARGS...
		return syscall.Exec(a[1], a[2:], os.Environ())
	case "socket":
		fd, err := syscall.Socket(atoi(a[1]), atoi(a[2]), atoi(a[3]))
		if err == nil {
			syscall.Close(fd)
		}
		return err
	case "connect":
		c, err := net.Dial(a[1], a[2])
		if err != nil {
			var op *net.OpError
			if errors.As(err, &op) {
				return op.Err
			}
			return err
		}
		return c.Close()
	case "sendto":
		c, err := net.ListenPacket("udp", ":0")
		if err != nil {
			return err
		}
		defer c.Close()
		dst, err := net.ResolveUDPAddr("udp", a[1])
		if err != nil {
			return err
		}
		_, err = c.WriteTo([]byte("x"), dst)
		var op *net.OpError
		if errors.As(err, &op) {
			return op.Err
		}
		return err
	case "bpf":
		// BPF_PROG_GET_NEXT_ID with a zeroed attribute: harmless, but a bpf() call.
		var attr [16]byte
		_, _, errno := syscall.Syscall(unix.SYS_BPF, 11, uintptr(unsafe.Pointer(&attr[0])), 16)
		if errno != 0 && errno != syscall.ENOENT {
			return errno
		}
		return nil
	case "userns":
		// a Go process has threads, which unshare(CLONE_NEWUSER) refuses: clone a child
		cmd := exec.Command("/bin/busybox", "true")
		cmd.SysProcAttr = &syscall.SysProcAttr{Cloneflags: syscall.CLONE_NEWUSER}
		return cmd.Run()
	case "unshare-mount-then":
		// a new mount namespace, then the rest of the arguments in it
		if err := unix.Unshare(unix.CLONE_NEWNS); err != nil {
			return err
		}
		return operate(a[1:])
	case "userfaultfd":
		fd, _, errno := syscall.Syscall(unix.SYS_USERFAULTFD, 0, 0, 0)
		if errno != 0 {
			return errno
		}
		syscall.Close(int(fd))
		return nil
	case "io_uring":
		var params [120]byte
		fd, _, errno := syscall.Syscall(unix.SYS_IO_URING_SETUP, 1, uintptr(unsafe.Pointer(&params[0])), 0)
		if errno != 0 {
			return errno
		}
		syscall.Close(int(fd))
		return nil
	case "perf":
		attr := unix.PerfEventAttr{Type: unix.PERF_TYPE_SOFTWARE, Config: unix.PERF_COUNT_SW_CPU_CLOCK, Size: uint32(unsafe.Sizeof(unix.PerfEventAttr{}))}
		fd, err := unix.PerfEventOpen(&attr, 0, -1, -1, 0)
		if err == nil {
			unix.Close(fd)
		}
		return err
	case "mount":
		return unix.Mount(a[1], a[2], a[3], 0, "")
	case "bind":
		return unix.Mount(a[1], a[2], "", unix.MS_BIND, "")
	case "umount":
		return unix.Unmount(a[1], 0)
	case "mount-then-umount":
		if err := unix.Mount(a[1], a[2], a[1], 0, ""); err != nil {
			return fmt.Errorf("mount (not the operation tried): %w", err)
		}
		return unix.Unmount(a[2], 0)
	case "init-module":
		// finit_module of a file that is not a module: the LSM hook runs first.
		f, err := os.Open(a[1])
		if err != nil {
			return err
		}
		defer f.Close()
		return unix.FinitModule(int(f.Fd()), "", 0)
	case "ptrace-read":
		// Reading another process's environ is a ptrace read check; procfs reports a
		// refusal as EACCES whatever the LSM returned, so EACCES counts as EPERM here.
		_, err := os.ReadFile("/proc/" + a[1] + "/environ")
		if errors.Is(err, syscall.EACCES) {
			return fmt.Errorf("%w (EACCES from procfs)", syscall.EPERM)
		}
		return err
	case "connect-mapped": // connect-mapped IPV4 PORT: TCP over IPv6 to ::ffff:IPV4
		fd, err := syscall.Socket(syscall.AF_INET6, syscall.SOCK_STREAM, 0)
		if err != nil {
			return err
		}
		defer syscall.Close(fd)
		sa := &syscall.SockaddrInet6{Port: atoi(a[2])}
		ip := net.ParseIP(a[1]).To16()
		copy(sa.Addr[:], ip)
		return syscall.Connect(fd, sa)
	}
	return fmt.Errorf("unknown helper operation %q", a[0])
}

// daemon runs an enforcer in this process: it loads the object pinned at pinDir, installs
// profile "killed" (reads of /killed/f refused), prints "ready", then registers each
// mount namespace number read from stdin, answering "ok" for each.
func daemon(pinDir string) error {
	e, err := Load(Options{PinDir: pinDir})
	if err != nil {
		return err
	}
	if err := e.SetProfile(killedProfile()); err != nil {
		return err
	}
	fmt.Println("ready")
	sc := bufio.NewScanner(os.Stdin)
	for sc.Scan() {
		ns, err := strconv.ParseUint(sc.Text(), 10, 32)
		if err != nil {
			return err
		}
		if err := e.Register(uint32(ns), "killed", false); err != nil {
			return err
		}
		fmt.Println("ok")
	}
	select {}
}

func killedProfile() *bpf.Profile {
	return profileOf("killed", ruleset.Rule{ID: "custom/killed", Action: v1alpha1.ActionEnforce, Kind: ruleset.KindFile,
		File: &ruleset.File{Paths: []string{"/killed/f"}, Permissions: []v1alpha1.FilePermission{v1alpha1.FileRead}}})
}
