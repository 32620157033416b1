//go:build vmguest

package bpf

// The helper mode of the guest test binary: one operation, its outcome on stdout.

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/podarmor/podarmor/enforcer/hook"
	"github.com/podarmor/podarmor/policies/api/v1alpha1"
	"github.com/podarmor/podarmor/policies/compile/bpf"
	"github.com/podarmor/podarmor/policies/ruleset"
)

func TestMain(m *testing.M) {
	if os.Getenv(ociHookEnv) != "" {
		os.Exit(ociHook(os.Args[1:]))
	}
	if os.Getenv("PODARMOR_HELPER") != "" {
		if len(os.Args) == 2 && os.Args[1] == "worker" {
			os.Exit(worker())
		}
		os.Exit(helper(os.Args[1:]))
	}
	code := m.Run()
	closeSandboxes()
	os.Exit(code)
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
		fmt.Println("EPERM:", err, "[EPERM]")
		return 1
	default:
		fmt.Println("error:", err, errnoTag(err))
		return 2
	}
}

// errnoTag names the errno in err, in brackets ("[ENOENT]"), for tests that assert it.
func errnoTag(err error) string {
	var errno syscall.Errno
	if errors.As(err, &errno) {
		return "[" + unix.ErrnoName(errno) + "]"
	}
	return ""
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
	case "create": // creates and removes again, so that it can be tried twice
		f, err := os.OpenFile(a[1], os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
		if err != nil {
			return err
		}
		f.Close()
		return os.Remove(a[1])
	case "read-head":
		f, err := os.Open(a[1])
		if err != nil {
			return err
		}
		defer f.Close()
		_, err = f.Read(make([]byte, 16))
		return err
	case "mknod": // a character device, removed again
		if err := unix.Mknod(a[1], unix.S_IFCHR|0o600, int(unix.Mkdev(1, 3))); err != nil {
			return err
		}
		return os.Remove(a[1])
	case "pivot-root":
		return unix.PivotRoot(a[1], a[2])
	case "open-by-handle":
		h, mnt, err := unix.NameToHandleAt(unix.AT_FDCWD, a[1], 0)
		if err != nil {
			return fmt.Errorf("name_to_handle_at (not the operation tried): %w", err)
		}
		_ = mnt
		root, err := unix.Open("/", unix.O_RDONLY|unix.O_DIRECTORY, 0)
		if err != nil {
			return err
		}
		defer unix.Close(root)
		fd, err := unix.OpenByHandleAt(root, h, unix.O_RDONLY)
		if err == nil {
			unix.Close(fd)
		}
		return err
	case "chmod-sgid": // without CAP_FSETID the kernel drops the bit instead of failing
		if err := unix.Chmod(a[1], 0o2755); err != nil {
			return err
		}
		var st unix.Stat_t
		if err := unix.Stat(a[1], &st); err != nil {
			return err
		}
		if st.Mode&unix.S_ISGID == 0 {
			return fmt.Errorf("%w (the kernel cleared set-group-ID)", syscall.EPERM)
		}
		return nil
	case "kill-uid1":
		pid, err := os.ReadFile("/cat/uid1.pid")
		if err != nil {
			return err
		}
		return unix.Kill(atoi(string(pid)), 0)
	case "ptrace-read-uid1":
		pid, err := os.ReadFile("/cat/uid1.pid")
		if err != nil {
			return err
		}
		return operate([]string{"ptrace-read", string(pid)})
	case "setgid":
		return syscall.Setgid(atoi(a[1]))
	case "setuid":
		return syscall.Setuid(atoi(a[1]))
	case "capbset-drop":
		return unix.Prctl(unix.PR_CAPBSET_DROP, uintptr(atoi(a[1])), 0, 0, 0)
	case "listen": // a refused privileged port is EACCES
		l, err := net.Listen("tcp", a[1])
		if err != nil {
			var op *net.OpError
			if errors.As(err, &op) {
				err = op.Err
			}
			if errors.Is(err, syscall.EACCES) {
				return fmt.Errorf("%w (EACCES from bind)", syscall.EPERM)
			}
			return err
		}
		return l.Close()
	case "write-dac": // opening a read-only file for writing: root needs DAC_OVERRIDE
		f, err := os.OpenFile(a[1], os.O_WRONLY, 0)
		if errors.Is(err, syscall.EACCES) {
			return fmt.Errorf("%w (EACCES from open)", syscall.EPERM)
		}
		if err != nil {
			return err
		}
		return f.Close()
	case "ifflags-lo": // setting lo's flags to what they are needs CAP_NET_ADMIN
		fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM, 0)
		if err != nil {
			return err
		}
		defer unix.Close(fd)
		ifr, err := unix.NewIfreq("lo")
		if err != nil {
			return err
		}
		if err := unix.IoctlIfreq(fd, unix.SIOCGIFFLAGS, ifr); err != nil {
			return err
		}
		return unix.IoctlIfreq(fd, unix.SIOCSIFFLAGS, ifr)
	case "shm-create": // run as user 1: a segment it owns and created, mode 0600
		id, err := unix.SysvShmGet(unix.IPC_PRIVATE, 4096, unix.IPC_CREAT|0o600)
		if err != nil {
			return err
		}
		fmt.Println(id)
		return nil
	case "so-mark":
		fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM, 0)
		if err != nil {
			return err
		}
		defer unix.Close(fd)
		return unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_MARK, 1)
	case "mlock-big": // past RLIMIT_MEMLOCK, only CAP_IPC_LOCK lets it through; refused as ENOMEM
		lim := unix.Rlimit{Cur: 64 << 10, Max: 64 << 10}
		if err := unix.Setrlimit(unix.RLIMIT_MEMLOCK, &lim); err != nil {
			return err
		}
		b := make([]byte, 1<<20)
		err := unix.Mlock(b)
		if errors.Is(err, syscall.ENOMEM) {
			return fmt.Errorf("%w (ENOMEM from mlock)", syscall.EPERM)
		}
		if err == nil {
			unix.Munlock(b)
		}
		return err
	case "shm-of-uid1": // user 1's segment, mode 0600: only CAP_IPC_OWNER lets root read it
		id, err := os.ReadFile("/cat/uid1.shm")
		if err != nil {
			return err
		}
		var ds unix.SysvShmDesc
		_, err = unix.SysvShmCtl(atoi(strings.TrimSpace(string(id))), unix.IPC_STAT, &ds)
		if errors.Is(err, syscall.EACCES) {
			return fmt.Errorf("%w (EACCES from shmctl)", syscall.EPERM)
		}
		return err
	case "delete-module":
		return unix.DeleteModule(a[1], unix.O_NONBLOCK)
	case "ioperm":
		return unix.Ioperm(0x80, 1, 1)
	case "chroot":
		return syscall.Chroot(a[1])
	case "acct-off":
		_, _, errno := syscall.Syscall(unix.SYS_ACCT, 0, 0, 0)
		if errno != 0 {
			return errno
		}
		return nil
	case "sethostname":
		name, err := os.Hostname()
		if err != nil {
			return err
		}
		return unix.Sethostname([]byte(name))
	case "cad-off":
		return unix.Reboot(unix.LINUX_REBOOT_CMD_CAD_OFF)
	case "nice": // a refused lower nice value is EACCES
		err := syscall.Setpriority(syscall.PRIO_PROCESS, 0, atoi(a[1]))
		if errors.Is(err, syscall.EACCES) {
			return fmt.Errorf("%w (EACCES from setpriority)", syscall.EPERM)
		}
		return err
	case "raise-nofile":
		var r unix.Rlimit
		if err := unix.Getrlimit(unix.RLIMIT_NOFILE, &r); err != nil {
			return err
		}
		r.Max++
		return unix.Setrlimit(unix.RLIMIT_NOFILE, &r)
	case "settime":
		var tv unix.Timeval
		if err := unix.Gettimeofday(&tv); err != nil {
			return err
		}
		return unix.Settimeofday(&tv)
	case "vhangup":
		_, _, errno := syscall.Syscall(unix.SYS_VHANGUP, 0, 0, 0)
		if errno != 0 {
			return errno
		}
		return nil
	case "lease": // a lease on another user's file needs CAP_LEASE; refused as EACCES
		f, err := os.Open(a[1])
		if err != nil {
			return err
		}
		defer f.Close()
		_, err = unix.FcntlInt(f.Fd(), unix.F_SETLEASE, unix.F_RDLCK)
		if errors.Is(err, syscall.EACCES) {
			return fmt.Errorf("%w (EACCES from F_SETLEASE)", syscall.EPERM)
		}
		if err == nil {
			unix.FcntlInt(f.Fd(), unix.F_SETLEASE, unix.F_UNLCK)
		}
		return err
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
	case "daemon": // daemon PINDIR SOCKET: an enforcer with profile "killed" and a hook server
		return daemon(a[1], a[2])
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
	case "spawn": // spawn PATH ARGS...: PATH as a child, EPERM where its output says so
		// The child is forked into this namespace (no task storage) and exec'd, which
		// pins nothing: a static busybox applet that unshares first reaches the capable
		// hook without an identity of its own.
		out, err := exec.Command(a[1], a[2:]...).CombinedOutput()
		switch {
		case err != nil && strings.Contains(string(out), "Operation not permitted"):
			return fmt.Errorf("%s: %w", strings.TrimSpace(string(out)), syscall.EPERM)
		case err != nil:
			return fmt.Errorf("%v: %s", err, out)
		}
		return nil
	case "setns-child-then":
		// the rest of the arguments after setns into the new mount namespace of a child
		// (pinned at fork, cloned into it), which no registration names
		child := exec.Command("/bin/busybox", "sleep", "60")
		child.SysProcAttr = &syscall.SysProcAttr{Cloneflags: syscall.CLONE_NEWNS}
		if err := child.Start(); err != nil {
			return fmt.Errorf("a child in a new mount namespace: %w", err)
		}
		defer func() {
			child.Process.Kill()
			child.Wait()
		}()
		return onThread(func() error {
			if err := unix.Unshare(unix.CLONE_FS); err != nil {
				return fmt.Errorf("unshare(CLONE_FS): %w", err)
			}
			fd, err := unix.Open(fmt.Sprintf("/proc/%d/ns/mnt", child.Process.Pid), unix.O_RDONLY, 0)
			if err != nil {
				return err
			}
			defer unix.Close(fd)
			if err := unix.Setns(fd, unix.CLONE_NEWNS); err != nil {
				return fmt.Errorf("setns: %w", err)
			}
			return operate(a[1:])
		})
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
	case "mount-then-remount":
		if err := unix.Mount(a[1], a[2], a[1], 0, ""); err != nil {
			return fmt.Errorf("mount (not the operation tried): %w", err)
		}
		return unix.Mount("none", a[2], "", unix.MS_REMOUNT, "")
	case "recv-fd": // recv-fd SOCKET: receive one descriptor and read from it
		c, err := net.Dial("unix", a[1])
		if err != nil {
			return err
		}
		defer c.Close()
		uc := c.(*net.UnixConn)
		oob := make([]byte, unix.CmsgSpace(4))
		_, oobn, flags, _, err := uc.ReadMsgUnix(make([]byte, 1), oob)
		if err != nil {
			return err
		}
		msgs, err := unix.ParseSocketControlMessage(oob[:oobn])
		if err != nil {
			return err
		}
		var fds []int
		for _, m := range msgs {
			if got, err := unix.ParseUnixRights(&m); err == nil {
				fds = append(fds, got...)
			}
		}
		if len(fds) == 0 {
			if flags&unix.MSG_CTRUNC != 0 {
				// the kernel refused to install the descriptor (file_receive)
				return fmt.Errorf("%w (descriptor not received)", syscall.EPERM)
			}
			return fmt.Errorf("no descriptor received")
		}
		f := os.NewFile(uintptr(fds[0]), "received")
		defer f.Close()
		_, err = f.Read(make([]byte, 1))
		return err
	case "userns-then": // userns-then OP...: OP in a child in new user and mount namespaces
		cmd := exec.Command("/proc/self/exe", a[1:]...)
		cmd.Env = append(os.Environ(), "PODARMOR_HELPER=1")
		cmd.SysProcAttr = &syscall.SysProcAttr{
			Cloneflags:  syscall.CLONE_NEWUSER | syscall.CLONE_NEWNS,
			UidMappings: []syscall.SysProcIDMap{{ContainerID: 0, HostID: 0, Size: 1}},
			GidMappings: []syscall.SysProcIDMap{{ContainerID: 0, HostID: 0, Size: 1}},
		}
		out, err := cmd.CombinedOutput()
		fmt.Print(string(out))
		var ee *exec.ExitError
		if errors.As(err, &ee) && ee.ExitCode() == 1 {
			return fmt.Errorf("%w (in the nested namespaces)", syscall.EPERM)
		}
		return err
	case "until": // until STOPFILE: wait until STOPFILE exists
		for {
			if _, err := os.Stat(a[1]); err == nil {
				return nil
			}
			time.Sleep(20 * time.Millisecond)
		}
	case "read-until": // read-until STOPFILE PATH: read PATH until STOPFILE exists
		var ok, eperm int
		for {
			if _, err := os.Stat(a[1]); err == nil {
				break
			}
			_, err := os.ReadFile(a[2])
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
	case "read-cwd": // read-cwd DIR NAME: chdir to DIR, read /proc/self/cwd/NAME
		if err := os.Chdir(a[1]); err != nil {
			return err
		}
		_, err := os.ReadFile("/proc/self/cwd/" + a[2])
		return err
	case "chroot-check": // chroot-check ROOT PATH...: per path, "open chmod" outcomes
		return chrootCheck(os.Stdout, a[1], a[2:])
	case "fd-server": // fd-server SOCKET PATH: serve one descriptor of PATH
		return fdServer(a[1], a[2])
	case "ns-read": // ns-read PID: readlink /proc/PID/ns/mnt
		return nsRead(a[1])
	case "ns-open": // ns-open PID: open /proc/PID/ns/mnt
		return nsOpen(a[1])
	case "load-then-ns-read": // load-then-ns-read PINDIR PID: a second enforcer reads
		return loadThenNSRead(a[1], a[2])
	}
	if err, ok := attackOp(a); ok {
		return err
	}
	if err, ok := faultOp(a); ok {
		return err
	}
	return fmt.Errorf("unknown helper operation %q", a[0])
}

// chrootCheck chroots into root and writes, for each path, the outcomes of opening it
// and of a chmod to its own mode.
func chrootCheck(w io.Writer, root string, paths []string) error {
	if err := syscall.Chroot(root); err != nil {
		return err
	}
	if err := syscall.Chdir("/"); err != nil {
		return err
	}
	word := func(err error) string {
		switch {
		case err == nil:
			return "ok"
		case errors.Is(err, syscall.EPERM):
			return "EPERM"
		}
		return err.Error()
	}
	for _, p := range paths {
		fd, err := syscall.Open(p, syscall.O_RDONLY, 0)
		if err == nil {
			syscall.Close(fd)
		}
		var st syscall.Stat_t
		cerr := syscall.Stat(p, &st)
		if cerr == nil {
			cerr = syscall.Chmod(p, st.Mode&0o7777)
		}
		fmt.Fprintln(w, word(err), word(cerr))
	}
	return nil
}

// daemon runs an enforcer in this process: it loads the object pinned at pinDir,
// installs profile "killed" (reads of /killed/f refused), serves the OCI hook on socket,
// prints "ready" and serves until it is killed.
func daemon(pinDir, socket string) error {
	e, err := Load(Options{PinDir: pinDir})
	if err != nil {
		return err
	}
	if err := e.SetProfile(killedProfile()); err != nil {
		return err
	}
	srv, err := hook.Listen(hook.ServerConfig{Socket: socket, Handler: &testRegistrar{e: e, byID: map[string]uint32{}},
		Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		return err
	}
	fmt.Println("ready")
	return srv.Serve(context.Background())
}

func killedProfile() *bpf.Profile {
	return profileOf("killed", ruleset.Rule{ID: "custom/killed", Action: v1alpha1.ActionEnforce, Kind: ruleset.KindFile,
		File: &ruleset.File{Paths: []string{"/killed/f"}, Permissions: []v1alpha1.FilePermission{v1alpha1.FileRead}}})
}
