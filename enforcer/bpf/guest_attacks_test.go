//go:build vmguest

package bpf

// Attacks on podarmor itself from inside a sandbox (issue 8): root in a container confined
// by the cluster's default policy (deploy/policies/default.yaml, compiled for all three
// enforcers) tries to switch podarmor off, reach its process, socket or token, change
// AppArmor policy or leave its confinement. docs/robustness.md holds the table of what was
// tried and what happened.

import (
	"bufio"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
	"unsafe"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"
	"sigs.k8s.io/yaml"

	"github.com/podarmor/podarmor/enforcer/hook"
	"github.com/podarmor/podarmor/enforcer/trial"
	"github.com/podarmor/podarmor/policies/api/v1alpha1"
	"github.com/podarmor/podarmor/policies/compile"
	"github.com/podarmor/podarmor/policies/compile/apparmor"
	"github.com/podarmor/podarmor/policies/compile/bpf"
	"github.com/podarmor/podarmor/policies/ruleset"
)

// defaultPolicyFile is deploy/policies/default.yaml, which TestInVM copies into the guest.
const defaultPolicyFile = "/podarmor/default-policy.yaml"

// Where the attacks find podarmor's things in their containers, bind-mounted as hostPath
// volumes would bring them in.
const (
	attackEnforcerSocket = "/run/podarmor/enforcer.sock"
	attackToken          = "/mnt/sa/token" // another pod's (the enforcer's) token, at a path of the attacker's choosing
	attackModprobeLog    = "/run/attack-modprobe.log"
	hostOnlyMarker       = ctrDir + "/bundles" // exists on the VM, not in the containers' root
)

// defaultPolicy compiles the default policy for every enforcer and loads its AppArmor
// profile; it returns the BPF profile, the AppArmor profile's name and the seccomp filter.
func defaultPolicy(t *testing.T) (*bpf.Profile, string, *specs.LinuxSeccomp) {
	t.Helper()
	doc, err := os.ReadFile(defaultPolicyFile)
	if err != nil {
		t.Fatalf("the default policy (TestInVM copies deploy/policies/default.yaml): %v", err)
	}
	var p v1alpha1.ClusterArmorPolicy
	if err := yaml.UnmarshalStrict(doc, &p); err != nil {
		t.Fatalf("default policy: %v", err)
	}
	res, errs := compile.Compile(compile.FromClusterArmorPolicy(&p), compile.Options{})
	if len(errs) > 0 {
		t.Fatalf("compile the default policy: %v", errs.ToAggregate())
	}
	var (
		bp   *bpf.Profile
		aa   string
		filt *specs.LinuxSeccomp
	)
	for _, prof := range res.Profiles {
		switch prof.Enforcer {
		case v1alpha1.EnforcerBPF:
			bp = &bpf.Profile{}
			if err := json.Unmarshal(prof.Content, bp); err != nil {
				t.Fatalf("BPF profile: %v", err)
			}
		case v1alpha1.EnforcerAppArmor:
			file := filepath.Join(t.TempDir(), "apparmor")
			if err := os.WriteFile(file, prof.Content, 0o644); err != nil {
				t.Fatal(err)
			}
			if out, err := exec.Command("apparmor_parser", "-r", file).CombinedOutput(); err != nil {
				t.Fatalf("apparmor_parser -r: %v\n%s", err, out)
			}
			aa = apparmor.ProfileName(res.RuleSet.ProfileID)
		case v1alpha1.EnforcerSeccomp:
			filt = runtimeDefaultSeccomp(t, &p, prof.Content)
		}
	}
	if bp == nil || aa == "" || filt == nil {
		t.Fatalf("the default policy compiled to BPF %v, AppArmor %q, seccomp %v: want all three", bp != nil, aa, filt != nil)
	}
	return bp, aa, filt
}

// runtimeDefaultSeccomp is the seccomp filter of policy p: content, or, where p's mode
// leaves seccomp to the runtime's own default profile (no content), the filter podarmor's
// runtime-default rules make of it: the same policy in mode EnhanceProtect with no rules
// added, which the runtime-default catalog entries mirror (there is no containerd here
// to ask for its profile).
func runtimeDefaultSeccomp(t *testing.T, p *v1alpha1.ClusterArmorPolicy, content []byte) *specs.LinuxSeccomp {
	t.Helper()
	if content == nil {
		if p.Spec.Mode != v1alpha1.ModeRuntimeDefault {
			t.Fatalf("policy %s in mode %s has no seccomp profile", p.Name, p.Spec.Mode)
		}
		q := p.DeepCopy()
		q.Spec.Mode = v1alpha1.ModeEnhanceProtect
		res, errs := compile.Compile(compile.FromClusterArmorPolicy(q), compile.Options{})
		if len(errs) > 0 {
			t.Fatalf("compile the runtime-default seccomp filter: %v", errs.ToAggregate())
		}
		for _, prof := range res.Profiles {
			if prof.Enforcer == v1alpha1.EnforcerSeccomp {
				content = prof.Content
			}
		}
	}
	var filt specs.LinuxSeccomp
	if err := json.Unmarshal(content, &filt); err != nil {
		t.Fatalf("seccomp profile: %v", err)
	}
	return &filt
}

// attack is one attempt, with what must come of it in each container: an errno name,
// "ok", or "" where the attempt means nothing there.
type attack struct {
	what string
	op   []string
	// dflt is the pod-like container under the whole default policy (BPF, AppArmor,
	// seccomp); priv the privileged one, which the runtime gives no seccomp filter;
	// unconf the privileged container without any policy (the comparison).
	dflt, priv, unconf string
	// marker, when set, is how the attempt shows: the module name the kernel asked
	// modprobe for (the op's own errno is the same either way).
	marker string
}

// TestAttacksFromSandbox: the attacks of issue 8 from root in a pod-like container and in a
// privileged one (all capabilities, devices, no masked paths, the node's PID namespace),
// both confined by the default policy, against the unconfined comparison.
func TestAttacksFromSandbox(t *testing.T) {
	e := loadWith(t, Options{})
	pinDir := e.pinDir
	bp, aaName, filt := defaultPolicy(t)
	if err := e.SetProfile(bp); err != nil {
		t.Fatal(err)
	}
	prof := bp.ProfileID

	// What the containers get: bpffs, securityfs, the enforcer's socket and another
	// pod's token, as hostPath volumes would bring them in.
	// The enforcer the attacks aim at: a second process that adopted the pinned state
	// (as a restarted DaemonSet pod does), on the VM (the node), and serves the OCI hook
	// that registers the containers: the enforcer's process and socket. It is the
	// enforcer the kernel knows (enforcer_self).
	socket := ctrDir + "/attack-enforcer.sock"
	d := exec.Command(self(t), "daemon", pinDir, socket)
	d.Env = append(os.Environ(), "PODARMOR_HELPER=1")
	d.Stderr = os.Stderr
	dout, _ := d.StdoutPipe()
	if err := d.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() {
		d.Process.Kill()
		d.Wait()
	}()
	if sc := bufio.NewScanner(dout); !sc.Scan() || sc.Text() != "ready" {
		t.Fatalf("enforcer daemon did not start: %q", sc.Text())
	}
	epid := strconv.Itoa(d.Process.Pid)
	addr := mappedAddress(t, d.Process.Pid)

	write(t, "/run/attack/sa/token", "the-enforcers-token")
	mounts := []trial.Mount{
		{Source: "/sys/fs/bpf", Destination: "/sys/fs/bpf"},
		{Source: "/sys/kernel/security", Destination: "/sys/kernel/security"},
		{Source: socket, Destination: attackEnforcerSocket},
		{Source: "/run/attack/sa/token", Destination: attackToken, ReadOnly: true},
	}
	dflt := box{profile: prof, socket: socket, podLike: true, appArmor: aaName, seccomp: filt, mounts: mounts}
	priv := box{profile: prof, socket: socket, appArmor: aaName, mounts: mounts}
	unconf := box{socket: socket, mounts: mounts}

	// Another container, whose namespaces the attacks try to enter.
	mkdirs(t, "/attack/m")
	os.Remove(inRoot("/attack/stop"))
	other := startContainer(t, box{socket: socket}, "until", "/attack/stop")
	opid := strconv.Itoa(other.pid(t))
	defer func() {
		write(t, "/attack/stop", "")
		other.wait(t)
	}()

	// Module autoload: the kernel runs modprobe_path for a module it wants; a script
	// there records each request.
	write(t, "/run/attack-modprobe.sh", "#!/bin/sh\necho \"$@\" >> "+attackModprobeLog+"\n")
	if err := os.Chmod("/run/attack-modprobe.sh", 0o755); err != nil {
		t.Fatal(err)
	}
	oldModprobe, err := os.ReadFile("/proc/sys/kernel/modprobe")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile("/proc/sys/kernel/modprobe", []byte("/run/attack-modprobe.sh"), 0o644); err != nil {
		t.Fatal(err)
	}
	defer os.WriteFile("/proc/sys/kernel/modprobe", oldModprobe, 0o644)

	settingsID := pinnedID(t, filepath.Join(pinDir, "maps", "settings"))
	linkID := pinnedID(t, filepath.Join(pinDir, "links", "file_open"))
	pin := filepath.Join(pinDir, "links", "file_open")
	mkdirs(t, "/sys/fs/bpf/attack-dummy")

	attacks := []attack{
		// bpf(): the runtime-default seccomp filter refuses it, and BPF in every sandbox
		{what: "bpf(BPF_PROG_GET_NEXT_ID)", op: []string{"bpf"}, dflt: "EPERM", priv: "EPERM", unconf: "ok"},
		{what: "bpf(BPF_MAP_CREATE)", op: []string{"bpf-map-create"}, dflt: "EPERM", priv: "EPERM", unconf: "ok"},
		{what: "bpf(BPF_OBJ_GET) of a pinned map", op: []string{"bpf-obj-get", filepath.Join(pinDir, "maps", "settings")}, dflt: "EPERM", priv: "EPERM", unconf: "ok"},
		{what: "read podarmor's settings map by id", op: []string{"bpf-map-read", fmt.Sprint(settingsID)}, dflt: "EPERM", priv: "EPERM", unconf: "ok"},
		// kernel modules
		{what: "init_module", op: []string{"init-module-raw"}, dflt: "EPERM", priv: "EPERM", unconf: "ENOEXEC"},
		{what: "finit_module", op: []string{"init-module", "/attack/notamodule"}, dflt: "EPERM", priv: "EPERM", unconf: "ENOEXEC"},
		{what: "module autoload by an unknown socket family", op: []string{"socket", "36", "2", "0"}, marker: "net-pf-36"},
		// the enforcer's process (on the node: only a container in its PID namespace sees it)
		{what: "PTRACE_ATTACH to the enforcer", op: []string{"ptrace-attach", epid}, dflt: "ESRCH", priv: "EPERM", unconf: "ok"},
		{what: "process_vm_readv of the enforcer", op: []string{"process-vm-readv", epid, addr}, dflt: "ESRCH", priv: "EPERM", unconf: "ok"},
		{what: "open /proc/<enforcer>/mem", op: []string{"open", "/proc/" + epid + "/mem"}, dflt: "ENOENT", priv: "EACCES", unconf: "ok"},
		{what: "read /proc/<enforcer>/environ", op: []string{"read", "/proc/" + epid + "/environ"}, dflt: "ENOENT", priv: "EACCES", unconf: "ok"},
		{what: "signal 0 to the enforcer", op: []string{"kill", epid, "0"}, dflt: "ESRCH", priv: "EPERM", unconf: "ok"},
		// tokens and the socket. The default policy guards no token: a container reads
		// what is mounted into it, wherever (docs/robustness.md).
		{what: "read another pod's token mounted at another path", op: []string{"read", attackToken}, dflt: "ok", priv: "ok", unconf: "ok"},
		{what: "connect to the enforcer's socket", op: []string{"connect", "unix", attackEnforcerSocket}, dflt: "EPERM", priv: "EPERM", unconf: "ok"},
		// AppArmor policy
		{what: "open .replace for writing", op: []string{"write", "/sys/kernel/security/apparmor/.replace"}, dflt: "EACCES", priv: "EACCES", unconf: "ok"},
		{what: "open .remove for writing", op: []string{"write", "/sys/kernel/security/apparmor/.remove"}, dflt: "EACCES", priv: "EACCES", unconf: "ok"},
		{what: "change_profile to unconfined (/proc/thread-self/attr/current)", op: []string{"aa-change", "current", "changeprofile unconfined"}, dflt: "EACCES", priv: "EACCES", unconf: "ok"},
		{what: "exec unconfined (/proc/thread-self/attr/apparmor/exec)", op: []string{"aa-change", "apparmor/exec", "exec unconfined"}, dflt: "EACCES", priv: "EACCES", unconf: "ok"},
		// new namespaces: refused, or the mount stays refused in them
		{what: "unshare -m, then mount", op: []string{"ns-then", "mnt", "mount", "tmpfs", "/attack/m", "tmpfs"}, dflt: "EPERM", priv: "EPERM", unconf: "ok"},
		{what: "unshare -p, then mount", op: []string{"ns-then", "pid", "mount", "tmpfs", "/attack/m", "tmpfs"}, dflt: "EPERM", priv: "EPERM", unconf: "ok"},
		{what: "unshare -U", op: []string{"ns-then", "user", "mount", "tmpfs", "/attack/m", "tmpfs"}, dflt: "EPERM", priv: "EPERM", unconf: ""},
		// setns
		{what: "setns into the node's mount namespace (/proc/1/ns/mnt)", op: []string{"setns-path", "/proc/1/ns/mnt", hostOnlyMarker}, dflt: "EPERM", priv: "EACCES", unconf: "ok"},
		{what: "setns into the node's mount namespace by pidfd", op: []string{"setns-pidfd", "1", hostOnlyMarker}, dflt: "EPERM", priv: "EPERM", unconf: "ok"},
		// The default box has a PID namespace of its own, where the other container's pid
		// is usually no process (ENOENT); once, on 6.1 in make test, it was EPERM, which
		// is a refusal too (see outcomeIs).
		{what: "setns into another container's mount namespace", op: []string{"setns-path", "/proc/" + opid + "/ns/mnt", ""}, dflt: "ENOENT|EPERM", priv: "EACCES", unconf: "ok"},
		// exec tricks: confinement survives them
		{what: "fexecve of a memfd copy, then mount", op: []string{"memfd-exec", "mount", "tmpfs", "/attack/m", "tmpfs"}, dflt: "EPERM", priv: "EPERM", unconf: "ok"},
		{what: "execveat(AT_EMPTY_PATH), then mount", op: []string{"execveat-empty", "mount", "tmpfs", "/attack/m", "tmpfs"}, dflt: "EPERM", priv: "EPERM", unconf: "ok"},
		{what: "exec via /proc/self/fd, then mount", op: []string{"exec-procfd", "mount", "tmpfs", "/attack/m", "tmpfs"}, dflt: "EPERM", priv: "EPERM", unconf: "ok"},
		// io_uring (its openat under a profile that allows io_uring: below)
		{what: "io_uring_setup", op: []string{"io_uring"}, dflt: "EPERM", priv: "EPERM", unconf: "ok"},
		{what: "IORING_OP_OPENAT of /proc/kcore", op: []string{"uring-open", "/proc/kcore"}, dflt: "EPERM", priv: "EPERM", unconf: "ok"},
		// last, as they would switch podarmor off if they worked
		{what: "write podarmor's settings map by id", op: []string{"bpf-map-write", fmt.Sprint(settingsID)}, dflt: "EPERM", priv: "EPERM", unconf: ""},
		{what: "detach a program by its link id", op: []string{"bpf-link-detach", fmt.Sprint(linkID)}, dflt: "EPERM", priv: "EPERM", unconf: ""},
		{what: "rename a pin", op: []string{"rename", pin, pin + "_moved"}, dflt: "EACCES", priv: "EACCES", unconf: ""},
		{what: "unlink a pin", op: []string{"unlink", pin}, dflt: "EACCES", priv: "EACCES", unconf: ""},
		{what: "rename a directory of bpffs (comparison)", op: []string{"rename", "/sys/fs/bpf/attack-dummy", "/sys/fs/bpf/attack-dummy2"}, dflt: "EACCES", priv: "EACCES", unconf: "ok"},
		{what: "unregister itself over the enforcer's socket", op: []string{"hook-unregister-self", attackEnforcerSocket}, dflt: "EPERM", priv: "EPERM", unconf: "ok"},
		{what: "SIGKILL the enforcer", op: []string{"kill", epid, "9"}, dflt: "ESRCH", priv: "EPERM", unconf: ""},
	}
	write(t, "/attack/notamodule", "not a module")
	for _, a := range attacks {
		t.Run(a.what, func(t *testing.T) {
			for _, c := range []struct {
				name, want string
				b          box
			}{{"default", a.dflt, dflt}, {"privileged", a.priv, priv}, {"unconfined", a.unconf, unconf}} {
				if a.marker != "" {
					os.Remove(attackModprobeLog)
					o := inBox(t, c.b, a.op...)
					log, _ := os.ReadFile(attackModprobeLog)
					asked := strings.Contains(string(log), a.marker)
					t.Logf("%s: %v; modprobe asked for %s: %v", c.name, o, a.marker, asked)
					if wantAsked := c.name == "unconfined"; asked != wantAsked {
						t.Errorf("%s: the kernel asked for module %s: %v, want %v (%v)", c.name, a.marker, asked, wantAsked, o)
					}
					continue
				}
				if c.want == "" {
					continue
				}
				o := inBox(t, c.b, a.op...)
				t.Logf("%s: %v", c.name, o)
				if !outcomeIs(o, c.want) {
					t.Errorf("%s: want %s, got %v", c.name, c.want, o)
				}
			}
		})
	}

	// io_uring's openat meets the file rules: a BPF-only profile that allows io_uring
	// and refuses reading /proc/kcore, in a privileged container.
	if err := e.SetProfile(profileOf("attack-uring", ruleset.Rule{ID: "custom/kcore", Action: v1alpha1.ActionEnforce, Kind: ruleset.KindFile,
		File: &ruleset.File{Paths: []string{"/proc/kcore"}, Permissions: []v1alpha1.FilePermission{v1alpha1.FileRead}}})); err != nil {
		t.Fatal(err)
	}
	uring := box{profile: "attack-uring", socket: hookSocket(t, e)}
	if o := inBox(t, uring, "uring-open", "/proc/kcore"); !outcomeIs(o, "EPERM") {
		t.Errorf("IORING_OP_OPENAT of /proc/kcore under a file rule: want EPERM, got %v", o)
	}

	// podarmor still enforces: in the containers already running (mounts are BPF's
	// alone in the privileged one: AppArmor allows them), in a new one, and its
	// programs are still attached through their pins; the enforcer still runs.
	denied(t, "mount in the privileged sandbox after the attacks", inBox(t, priv, "mount", "tmpfs", "/attack/m", "tmpfs"))
	denied(t, "bpf() in the privileged sandbox after the attacks", inBox(t, priv, "bpf"))
	denied(t, "mount in a new privileged container after the attacks", runContainer(t, box{profile: prof, socket: socket}, "mount", "tmpfs", "/attack/m", "tmpfs"))
	for _, h := range e.Hooks() {
		if _, err := os.Stat(filepath.Join(pinDir, "links", h.Program)); h.Attached && err != nil {
			t.Errorf("pin of %s after the attacks: %v", h.Program, err)
		}
	}
	if err := d.Process.Signal(syscall.Signal(0)); err != nil {
		t.Errorf("the enforcer process after the attacks: %v", err)
	}
}

// outcomeIs tells whether o is want: "ok", or an errno name or several joined by "|".
func outcomeIs(o outcome, want string) bool {
	if want == "ok" {
		return o.code == 0
	}
	for errno := range strings.SplitSeq(want, "|") {
		if o.code != 0 && strings.Contains(o.out, "["+errno+"]") {
			return true
		}
	}
	return false
}

// pinnedID is the kernel's id of the map or link pinned at path (both info structs
// start with type and id).
func pinnedID(t *testing.T, path string) uint32 {
	t.Helper()
	fd, err := bpfObjGet(path)
	if err != nil {
		t.Fatalf("BPF_OBJ_GET %s: %v", path, err)
	}
	defer unix.Close(fd)
	info := make([]byte, 128)
	var attr [16]byte
	binary.LittleEndian.PutUint32(attr[0:], uint32(fd))
	binary.LittleEndian.PutUint32(attr[4:], uint32(len(info)))
	binary.LittleEndian.PutUint64(attr[8:], uint64(uintptr(unsafe.Pointer(&info[0]))))
	if _, err := bpfCall(unix.BPF_OBJ_GET_INFO_BY_FD, attr[:]); err != nil {
		t.Fatalf("BPF_OBJ_GET_INFO_BY_FD %s: %v", path, err)
	}
	return binary.LittleEndian.Uint32(info[4:])
}

// mappedAddress is the start of a readable mapping of process pid, in hex.
func mappedAddress(t *testing.T, pid int) string {
	t.Helper()
	maps, err := os.ReadFile(fmt.Sprintf("/proc/%d/maps", pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(maps), "\n") {
		f := strings.Fields(line)
		if len(f) > 1 && strings.HasPrefix(f[1], "r") {
			start, _, _ := strings.Cut(f[0], "-")
			return start
		}
	}
	t.Fatalf("no readable mapping in /proc/%d/maps", pid)
	return ""
}

func bpfCall(cmd int, attr []byte) (int, error) {
	r, _, errno := syscall.Syscall(unix.SYS_BPF, uintptr(cmd), uintptr(unsafe.Pointer(&attr[0])), uintptr(len(attr)))
	runtime.KeepAlive(attr)
	if errno != 0 {
		return -1, errno
	}
	return int(r), nil
}

func bpfObjGet(path string) (int, error) {
	p, err := unix.BytePtrFromString(path)
	if err != nil {
		return -1, err
	}
	var attr [16]byte
	binary.LittleEndian.PutUint64(attr[0:], uint64(uintptr(unsafe.Pointer(p))))
	fd, err := bpfCall(unix.BPF_OBJ_GET, attr[:])
	runtime.KeepAlive(p)
	return fd, err
}

// bpfFDByID opens the map or link of id with cmd (BPF_MAP_GET_FD_BY_ID,
// BPF_LINK_GET_FD_BY_ID).
func bpfFDByID(cmd int, id string) (int, error) {
	n, err := strconv.ParseUint(id, 10, 32)
	if err != nil {
		return -1, err
	}
	var attr [16]byte
	binary.LittleEndian.PutUint32(attr[0:], uint32(n))
	return bpfCall(cmd, attr[:])
}

// bpfMapElem looks up (or updates with value) key 0 of map fd.
func bpfMapElem(cmd, fd int, value []byte) error {
	var key uint32
	var attr [32]byte
	binary.LittleEndian.PutUint32(attr[0:], uint32(fd))
	binary.LittleEndian.PutUint64(attr[8:], uint64(uintptr(unsafe.Pointer(&key))))
	binary.LittleEndian.PutUint64(attr[16:], uint64(uintptr(unsafe.Pointer(&value[0]))))
	_, err := bpfCall(cmd, attr[:])
	runtime.KeepAlive(value)
	runtime.KeepAlive(&key)
	return err
}

// execveat runs the helper with op through execveat(dirfd, path, flags).
func execveat(dirfd int, path string, flags int, op []string) error {
	p, err := unix.BytePtrFromString(path)
	if err != nil {
		return err
	}
	argv, err := syscall.SlicePtrFromStrings(append([]string{helperPath}, op...))
	if err != nil {
		return err
	}
	envv, err := syscall.SlicePtrFromStrings(append(os.Environ(), "PODARMOR_HELPER=1"))
	if err != nil {
		return err
	}
	_, _, errno := syscall.Syscall6(unix.SYS_EXECVEAT, uintptr(dirfd), uintptr(unsafe.Pointer(p)),
		uintptr(unsafe.Pointer(&argv[0])), uintptr(unsafe.Pointer(&envv[0])), uintptr(flags), 0)
	return errno
}

// onThread runs f on a locked thread of its own (credentials, AppArmor attributes and
// namespaces are per thread); the thread ends with it.
func onThread(f func() error) error {
	done := make(chan error)
	go func() {
		runtime.LockOSThread() // never unlocked: the thread may have changed
		done <- f()
	}()
	return <-done
}

// attackOp runs the attacks' helper operations; ok is false for another operation.
func attackOp(a []string) (err error, ok bool) {
	switch a[0] {
	case "bpf-map-create":
		var attr [32]byte
		binary.LittleEndian.PutUint32(attr[0:], unix.BPF_MAP_TYPE_ARRAY)
		binary.LittleEndian.PutUint32(attr[4:], 4)
		binary.LittleEndian.PutUint32(attr[8:], 4)
		binary.LittleEndian.PutUint32(attr[12:], 1)
		fd, err := bpfCall(unix.BPF_MAP_CREATE, attr[:])
		if err == nil {
			unix.Close(fd)
		}
		return err, true
	case "bpf-obj-get": // bpf-obj-get PATH
		fd, err := bpfObjGet(a[1])
		if err == nil {
			unix.Close(fd)
		}
		return err, true
	case "bpf-map-read", "bpf-map-write": // bpf-map-read ID: key 0; -write writes back what it read
		fd, err := bpfFDByID(unix.BPF_MAP_GET_FD_BY_ID, a[1])
		if err != nil {
			return err, true
		}
		defer unix.Close(fd)
		value := make([]byte, 256)
		if err := bpfMapElem(unix.BPF_MAP_LOOKUP_ELEM, fd, value); err != nil || a[0] == "bpf-map-read" {
			return err, true
		}
		return bpfMapElem(unix.BPF_MAP_UPDATE_ELEM, fd, value), true
	case "bpf-link-detach": // bpf-link-detach ID
		fd, err := bpfFDByID(unix.BPF_LINK_GET_FD_BY_ID, a[1])
		if err != nil {
			return err, true
		}
		defer unix.Close(fd)
		var attr [8]byte
		binary.LittleEndian.PutUint32(attr[0:], uint32(fd))
		_, err = bpfCall(unix.BPF_LINK_DETACH, attr[:])
		return err, true
	case "init-module-raw": // init_module of bytes that are no module
		// as long as an ELF header: a shorter image is refused before the LSM hook
		return unix.InitModule(make([]byte, 128), ""), true
	case "kill": // kill PID SIGNAL
		return unix.Kill(atoi(a[1]), syscall.Signal(atoi(a[2]))), true
	case "ptrace-attach": // ptrace-attach PID: attach, then detach again
		return onThread(func() error {
			pid := atoi(a[1])
			if err := unix.PtraceAttach(pid); err != nil {
				return err
			}
			var ws unix.WaitStatus
			unix.Wait4(pid, &ws, unix.WALL, nil)
			return unix.PtraceDetach(pid)
		}), true
	case "process-vm-readv": // process-vm-readv PID HEXADDR: one byte of PID's memory
		addr, err := strconv.ParseUint(a[2], 16, 64)
		if err != nil {
			return err, true
		}
		buf := make([]byte, 1)
		_, err = unix.ProcessVMReadv(atoi(a[1]), []unix.Iovec{{Base: &buf[0], Len: 1}},
			[]unix.RemoteIovec{{Base: uintptr(addr), Len: 1}}, 0)
		return err, true
	case "open": // open PATH for reading
		f, err := os.Open(a[1])
		if err == nil {
			f.Close()
		}
		return err, true
	case "aa-change": // aa-change ATTR TEXT: write TEXT to /proc/thread-self/attr/ATTR
		return onThread(func() error {
			return os.WriteFile("/proc/thread-self/attr/"+a[1], []byte(a[2]), 0)
		}), true
	case "ns-then": // ns-then mnt|pid|user OP...: OP in a child in a new namespace
		flags := map[string]uintptr{"mnt": syscall.CLONE_NEWNS, "pid": syscall.CLONE_NEWPID, "user": syscall.CLONE_NEWUSER}[a[1]]
		cmd := exec.Command("/proc/self/exe", a[2:]...)
		cmd.Env = append(os.Environ(), "PODARMOR_HELPER=1")
		cmd.SysProcAttr = &syscall.SysProcAttr{Cloneflags: flags}
		out, err := cmd.CombinedOutput()
		fmt.Print(string(out))
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			return fmt.Errorf("in the new %s namespace: exit %d", a[1], ee.ExitCode()), true
		}
		return err, true
	case "setns-path", "setns-pidfd": // setns-path NSFILE MARKER, setns-pidfd PID MARKER: enter, then stat MARKER
		return onThread(func() error {
			// setns into a mount namespace needs a private fs struct; where unshare is
			// refused, setns is tried anyway (and refused for the same reason, or EINVAL)
			_ = unix.Unshare(unix.CLONE_FS)
			var fd int
			var err error
			if a[0] == "setns-path" {
				fd, err = unix.Open(a[1], unix.O_RDONLY, 0)
			} else {
				fd, err = unix.PidfdOpen(atoi(a[1]), 0)
			}
			if err != nil {
				return err
			}
			defer unix.Close(fd)
			if err := unix.Setns(fd, unix.CLONE_NEWNS); err != nil {
				return err
			}
			if a[2] == "" {
				return nil
			}
			var st unix.Stat_t
			return unix.Stat(a[2], &st)
		}), true
	case "memfd-exec": // memfd-exec OP...: the helper copied into a memfd, run with fexecve
		bin, err := os.ReadFile("/proc/self/exe")
		if err != nil {
			return err, true
		}
		fd, err := unix.MemfdCreate("attack", 0)
		if err != nil {
			return err, true
		}
		if _, err := unix.Write(fd, bin); err != nil {
			return err, true
		}
		return execveat(fd, "", unix.AT_EMPTY_PATH, a[1:]), true
	case "execveat-empty": // execveat-empty OP...: the helper through an O_PATH descriptor
		fd, err := unix.Open(helperPath, unix.O_PATH, 0)
		if err != nil {
			return err, true
		}
		return execveat(fd, "", unix.AT_EMPTY_PATH, a[1:]), true
	case "exec-procfd": // exec-procfd OP...: the helper as /proc/self/fd/N
		fd, err := unix.Open(helperPath, unix.O_RDONLY, 0)
		if err != nil {
			return err, true
		}
		return execveat(unix.AT_FDCWD, fmt.Sprintf("/proc/self/fd/%d", fd), 0, a[1:]), true
	case "uring-open": // uring-open PATH: IORING_OP_OPENAT of PATH for reading
		return uringOpen(a[1]), true
	case "hook-unregister-self": // hook-unregister-self SOCKET: ask the enforcer to forget this container
		id, err := os.Hostname() // the tests' containers are named by their id
		if err != nil {
			return err, true
		}
		_, err = hook.Client{Socket: a[1], Timeout: 10 * time.Second}.Do(context.Background(),
			hook.Request{Op: hook.OpUnregister, ContainerID: id, Status: "stopped"})
		return err, true
	}
	return nil, false
}

// uringOpen opens path for reading with IORING_OP_OPENAT on a ring of one entry.
func uringOpen(path string) error {
	var params struct {
		SqEntries, CqEntries, Flags, SqThreadCPU, SqThreadIdle, Features, WqFD uint32
		Resv                                                                   [3]uint32
		Sq                                                                     [10]uint32 // head tail ring_mask ring_entries flags dropped array resv1 user_addr(2)
		Cq                                                                     [10]uint32 // head tail ring_mask ring_entries overflow cqes flags resv1 user_addr(2)
	}
	fd, _, errno := syscall.Syscall(unix.SYS_IO_URING_SETUP, 1, uintptr(unsafe.Pointer(&params)), 0)
	if errno != 0 {
		return fmt.Errorf("io_uring_setup: %w", errno)
	}
	ring := int(fd)
	defer unix.Close(ring)
	const (
		offSQRing = 0
		offCQRing = 0x8000000
		offSQEs   = 0x10000000
		opOpenat  = 18
		sqeSize   = 64
		cqeSize   = 16
	)
	sq, err := unix.Mmap(ring, offSQRing, int(params.Sq[6]+params.SqEntries*4), unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED|unix.MAP_POPULATE)
	if err != nil {
		return fmt.Errorf("mmap sq ring: %w", err)
	}
	defer unix.Munmap(sq)
	cq, err := unix.Mmap(ring, offCQRing, int(params.Cq[5]+params.CqEntries*cqeSize), unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED|unix.MAP_POPULATE)
	if err != nil {
		return fmt.Errorf("mmap cq ring: %w", err)
	}
	defer unix.Munmap(cq)
	sqes, err := unix.Mmap(ring, offSQEs, int(params.SqEntries*sqeSize), unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED|unix.MAP_POPULATE)
	if err != nil {
		return fmt.Errorf("mmap sqes: %w", err)
	}
	defer unix.Munmap(sqes)

	p, err := unix.BytePtrFromString(path)
	if err != nil {
		return err
	}
	sqe := sqes[:sqeSize]
	clear(sqe)
	sqe[0] = opOpenat
	at := int32(unix.AT_FDCWD)
	binary.LittleEndian.PutUint32(sqe[4:], uint32(at))
	binary.LittleEndian.PutUint64(sqe[16:], uint64(uintptr(unsafe.Pointer(p))))
	binary.LittleEndian.PutUint32(sqe[28:], unix.O_RDONLY)
	tail := (*uint32)(unsafe.Pointer(&sq[params.Sq[1]]))
	mask := *(*uint32)(unsafe.Pointer(&sq[params.Sq[2]]))
	*(*uint32)(unsafe.Pointer(&sq[params.Sq[6]+(*tail&mask)*4])) = 0
	*tail++ // the kernel reads the tail in io_uring_enter, after this store
	const enterGetEvents = 1
	_, _, errno = syscall.Syscall6(unix.SYS_IO_URING_ENTER, fd, 1, 1, enterGetEvents, 0, 0)
	runtime.KeepAlive(p)
	if errno != 0 {
		return fmt.Errorf("io_uring_enter: %w", errno)
	}
	head := *(*uint32)(unsafe.Pointer(&cq[params.Cq[0]]))
	cmask := *(*uint32)(unsafe.Pointer(&cq[params.Cq[2]]))
	cqe := cq[params.Cq[5]+(head&cmask)*cqeSize:]
	res := int32(binary.LittleEndian.Uint32(cqe[8:]))
	if res < 0 {
		return fmt.Errorf("IORING_OP_OPENAT: %w", syscall.Errno(-res))
	}
	unix.Close(int(res))
	return nil
}
