//go:build vmguest

package bpf

// The tests in files tagged vmguest run inside a VM on a real kernel with BPF LSM
// (e2e/vm); the host suite builds and boots them (vm_test.go).

import (
	"bufio"
	"context"
	"encoding/binary"
	"fmt"
	"maps"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/sys/unix"

	"github.com/podarmor/podarmor/enforcer/tables"
	"github.com/podarmor/podarmor/enforcer/trial"
	"github.com/podarmor/podarmor/policies/api/v1alpha1"
	"github.com/podarmor/podarmor/policies/compile/bpf"
	"github.com/podarmor/podarmor/policies/ruleset"
)

func TestLoadAttachesEveryHook(t *testing.T) {
	e := load(t)
	for _, h := range e.Hooks() {
		if !h.Attached {
			t.Errorf("hook %s not attached: %s", h.Name, h.Reason)
		}
	}
}

func TestFileRules(t *testing.T) {
	e := enforcer(t)
	write(t, "/secret/a", "secret")
	write(t, "/secret/sub/b", "secret")
	write(t, "/guard/w.txt", "guarded")
	write(t, "/open/o.txt", "open")
	symlink(t, "/secret/a", "/open/link")
	prof := install(t, e, policy("files", `  customRules:
    files:
    - name: no-secrets
      paths: ["/secret/**"]
      permissions: [read]
    - name: guard-w
      paths: ["/guard/w.txt"]
      permissions: [write, create, delete]
`))
	other := install(t, e, policy("other", ""))

	for _, tc := range []struct {
		what string
		op   []string
	}{
		{"read", []string{"read", "/secret/a"}},
		{"read below", []string{"read", "/secret/sub/b"}},
		{"read through ..", []string{"read", "/secret/sub/../a"}},
		{"read through //", []string{"read", "//secret//a"}},
		{"read through /proc/self/root", []string{"read", "/proc/self/root/secret/a"}},
		{"read through a symlink", []string{"read", "/open/link"}},
		{"read through /proc/self/cwd", []string{"read-cwd", "/secret/sub", "../a"}},
		{"bind mount the directory elsewhere (mounts are denied)", []string{"bind", "/secret", "/open"}},
		{"read after unshare -m", []string{"unshare-mount-then", "read", "/secret/a"}},
		{"hard link", []string{"link", "/secret/a", "/open/hard"}},
		{"rename the file away", []string{"rename", "/secret/a", "/open/moved"}},
		{"rename the directory away", []string{"rename", "/secret/sub", "/open/sub"}},
		{"write", []string{"write", "/guard/w.txt"}},
		{"append (write covers it)", []string{"append", "/guard/w.txt"}},
		{"truncate", []string{"truncate", "/guard/w.txt"}},
		{"delete", []string{"unlink", "/guard/w.txt"}},
		{"replace by rename", []string{"rename", "/open/o.txt", "/guard/w.txt"}},
	} {
		t.Run(tc.what, func(t *testing.T) {
			denied(t, "sandbox", inSandbox(t, e, prof, tc.op...))
		})
	}
	// The same operations succeed elsewhere (read-only ones, so that nothing moves).
	for _, op := range [][]string{{"read", "/secret/a"}, {"read", "/open/link"}, {"write", "/guard/w.txt"}} {
		allowed(t, "unconfined "+op[0], inSandbox(t, e, "", op...))
		allowed(t, "host "+op[0], onHost(t, op...))
		allowed(t, "other profile "+op[0], inSandbox(t, e, other, op...))
	}
	denied(t, "receive a descriptor of a guarded file", withFDServer(t, "/secret/a", func(sock string) outcome {
		return inSandbox(t, e, prof, "recv-fd", sock)
	}))
	allowed(t, "receive a descriptor of an open file", withFDServer(t, "/open/o.txt", func(sock string) outcome {
		return inSandbox(t, e, prof, "recv-fd", sock)
	}))
	allowed(t, "read an open file", inSandbox(t, e, prof, "read", "/open/o.txt"))

	// A profile that lets the container create user namespaces (unlike the runtime
	// default): the nested namespaces change nothing.
	if err := e.SetProfile(profileOf("nested", ruleset.Rule{ID: "custom/no-secrets", Action: v1alpha1.ActionEnforce, Kind: ruleset.KindFile,
		File: &ruleset.File{Paths: []string{"/secret/**"}, Permissions: []v1alpha1.FilePermission{v1alpha1.FileRead}}})); err != nil {
		t.Fatal(err)
	}
	allowed(t, "read an open file in new user and mount namespaces", inSandbox(t, e, "nested", "userns-then", "read", "/open/o.txt"))
	denied(t, "read in new user and mount namespaces", inSandbox(t, e, "nested", "userns-then", "read", "/secret/a"))
	// A task is pinned at its first hook; one that has had none (a child forked and
	// exec'd into busybox) is pinned by the capable hook before it unshares.
	denied(t, "read after busybox unshare -m", inSandbox(t, e, "nested", "spawn", "/bin/busybox", "unshare", "-m", "/bin/busybox", "cat", "/secret/a"))
	allowed(t, "read after busybox unshare -m, unconfined", inSandbox(t, e, "", "spawn", "/bin/busybox", "unshare", "-m", "/bin/busybox", "cat", "/secret/a"))
	// setns into a mount namespace that no registration names.
	allowed(t, "read an open file after setns into a child's mount namespace", inSandbox(t, e, "nested", "setns-child-then", "read", "/open/o.txt"))
	denied(t, "read after setns into a child's mount namespace", inSandbox(t, e, "nested", "setns-child-then", "read", "/secret/a"))
	allowed(t, "read after setns into a child's mount namespace, unconfined", inSandbox(t, e, "", "setns-child-then", "read", "/secret/a"))
	allowed(t, "read the guarded file", inSandbox(t, e, prof, "read", "/guard/w.txt"))
}

// TestFileRulesInAVolume checks rules on files of another mount than the container's
// root, as a pod's volumes are: the path hooks, which resolve paths with the enforcer's
// own walk, cross from the volume's root to its mount point two directories below the
// container's root, so a rule on the container's path holds there; file_open resolves
// with bpf_d_path.
func TestFileRulesInAVolume(t *testing.T) {
	e := enforcer(t)
	vol := t.TempDir()
	for _, d := range []string{"guard/sub", "free"} {
		if err := os.MkdirAll(filepath.Join(vol, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	for _, f := range []string{"guard/f", "free/f"} {
		if err := os.WriteFile(filepath.Join(vol, f), []byte("x"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	prof := install(t, e, policy("volume", `  customRules:
    files:
    - name: guard-volume
      paths: ["/srv/vol/guard/**"]
      permissions: [write, create, delete, chmod, chown]
`))
	mounts := []trial.Mount{{Source: vol, Destination: "/srv/vol"}}
	sandbox := box{profile: prof, socket: hookSocket(t, e), mounts: mounts}
	unconfined := box{socket: hookSocket(t, e), mounts: mounts}
	for _, tc := range []struct {
		what string
		op   []string
	}{
		{"write (file_open)", []string{"write", "/srv/vol/guard/f"}},
		{"create (path_mknod)", []string{"create", "/srv/vol/guard/new"}},
		{"mkdir (path_mkdir)", []string{"mkdir", "/srv/vol/guard/dir"}},
		{"symlink (path_symlink)", []string{"symlink", "/srv/vol/free/f", "/srv/vol/guard/ln"}},
		{"unlink (path_unlink)", []string{"unlink", "/srv/vol/guard/f"}},
		{"rmdir (path_rmdir)", []string{"unlink", "/srv/vol/guard/sub"}},
		{"chmod (path_chmod)", []string{"chmod", "/srv/vol/guard/f", "600"}},
		{"chown (path_chown)", []string{"chown", "/srv/vol/guard/f", "1"}},
		{"truncate (path_truncate)", []string{"truncate", "/srv/vol/guard/f"}},
		{"rename in (path_rename)", []string{"rename", "/srv/vol/free/f", "/srv/vol/guard/f"}},
		{"hard link in (path_link)", []string{"link", "/srv/vol/free/f", "/srv/vol/guard/hard"}},
	} {
		t.Run(tc.what, func(t *testing.T) {
			denied(t, "sandbox", inBox(t, sandbox, tc.op...))
		})
	}
	allowed(t, "create beside the guarded directory", inBox(t, sandbox, "create", "/srv/vol/free/new"))
	allowed(t, "chmod beside the guarded directory", inBox(t, sandbox, "chmod", "/srv/vol/free/f", "644"))
	allowed(t, "unconfined chmod", inBox(t, unconfined, "chmod", "/srv/vol/guard/f", "644"))
	allowed(t, "unconfined create", inBox(t, unconfined, "create", "/srv/vol/guard/new"))
}

func TestExecRules(t *testing.T) {
	e := enforcer(t)
	busyboxAt(t, false, "/tools/nc", "/tools/ok")
	symlink(t, "/tools/nc", "/tools/alias")
	prof := install(t, e, policy("exec", `  customRules:
    exec:
    - paths: ["/tools/nc"]
`))
	// the copies are busybox: argv[0] "true" picks the applet
	denied(t, "exec", inSandbox(t, e, prof, "exec", "/tools/nc", "true"))
	denied(t, "exec through a symlink", inSandbox(t, e, prof, "exec", "/tools/alias", "true"))
	allowed(t, "exec another binary", inSandbox(t, e, prof, "exec", "/tools/ok", "true"))
	allowed(t, "exec unconfined", inSandbox(t, e, "", "exec", "/tools/nc", "true"))
	allowed(t, "exec on the host", onHost(t, "exec", "/tools/nc", "true"))
}

func TestCapabilityAndOperationRules(t *testing.T) {
	e := enforcer(t)
	write(t, "/capfile", "x")
	prof := install(t, e, policy("caps", `  customRules:
    capabilities:
    - capabilities: [CHOWN]
    operations:
    - operations: [bpf, usernsCreate, userfaultfd, ioUring, perfEvent, kernelModule, chmodSetuid]
`))
	for _, tc := range []struct {
		what string
		op   []string
	}{
		{"chown needs CAP_CHOWN", []string{"chown", "/capfile", "1"}},
		{"bpf()", []string{"bpf"}},
		{"user namespace", []string{"userns"}},
		{"userfaultfd", []string{"userfaultfd"}},
		{"io_uring", []string{"io_uring"}},
		{"perf_event_open", []string{"perf"}},
		{"finit_module", []string{"init-module", "/capfile"}},
		{"chmod u+s", []string{"chmod-raw", "/capfile", "4755"}},
	} {
		t.Run(tc.what, func(t *testing.T) {
			denied(t, "sandbox", inSandbox(t, e, prof, tc.op...))
			if tc.op[0] != "init-module" {
				allowed(t, "unconfined", inSandbox(t, e, "", tc.op...))
			}
		})
	}
	allowed(t, "chmod without set-id bits", inSandbox(t, e, prof, "chmod-raw", "/capfile", "0755"))
}

func TestNetworkRules(t *testing.T) {
	e := enforcer(t)
	for _, addr := range []string{"127.0.0.1:8080", "127.0.0.2:8080", "127.0.0.2:8081", "[::1]:8080"} {
		l, err := net.Listen("tcp", addr)
		if err != nil {
			t.Fatalf("listen %s: %v", addr, err)
		}
		defer l.Close()
		go func() {
			for {
				c, err := l.Accept()
				if err != nil {
					return
				}
				c.Close()
			}
		}()
	}
	prof := install(t, e, policy("net", `  customRules:
    network:
    - sockets: {families: [packet]}
    - sockets: {families: [inet], types: [raw]}
    - egress:
        addresses: ["127.0.0.2", "10.99.0.0/16"]
        ports: [{port: 8080}]
        protocols: [tcp]
    - egress:
        addresses: ["::1"]
    - egress:
        addresses: ["127.0.0.3"]
        protocols: [udp]
`))
	for _, tc := range []struct {
		what string
		op   []string
	}{
		{"packet socket", []string{"socket", "17", "3", "0"}},
		{"raw inet socket", []string{"socket", "2", "3", "1"}},
		{"connect to a denied address and port", []string{"connect", "tcp", "127.0.0.2:8080"}},
		{"connect to a denied IPv6 address", []string{"connect", "tcp", "[::1]:8080"}},
		{"connect through an IPv4-mapped IPv6 address", []string{"connect-mapped", "127.0.0.2", "8080"}},
		{"send a datagram to a denied address", []string{"sendto", "127.0.0.3:9999"}},
	} {
		t.Run(tc.what, func(t *testing.T) {
			denied(t, "sandbox", inSandbox(t, e, prof, tc.op...))
		})
	}
	for _, tc := range []struct {
		what string
		op   []string
	}{
		{"inet stream socket", []string{"socket", "2", "1", "0"}},
		{"connect to an allowed address", []string{"connect", "tcp", "127.0.0.1:8080"}},
		{"connect to a denied address on another port", []string{"connect", "tcp", "127.0.0.2:8081"}},
		{"send a datagram to an allowed address", []string{"sendto", "127.0.0.1:9999"}},
	} {
		t.Run(tc.what, func(t *testing.T) {
			allowed(t, "sandbox", inSandbox(t, e, prof, tc.op...))
		})
	}
	allowed(t, "unconfined packet socket", inSandbox(t, e, "", "socket", "17", "3", "0"))
	allowed(t, "unconfined connect", inSandbox(t, e, "", "connect", "tcp", "127.0.0.2:8080"))
	allowed(t, "unconfined connect through an IPv4-mapped address", inSandbox(t, e, "", "connect-mapped", "127.0.0.2", "8080"))
}

// profileOf builds a BPF profile from rules directly, for rule shapes the runtime-default
// rules of a compiled policy would mask (every mount is denied there).
func profileOf(id string, rules ...ruleset.Rule) *bpf.Profile {
	return &bpf.Profile{FormatVersion: bpf.FormatVersion, ProfileID: id, Policy: "test", Default: ruleset.Allow, Rules: rules}
}

func TestMountRules(t *testing.T) {
	e := enforcer(t)
	mkdirs(t, "/mnt/p", "/mnt/guard/in", "/mnt/free", "/mnt/t")
	p := profileOf("mounts",
		ruleset.Rule{ID: "custom/no-proc", Action: v1alpha1.ActionEnforce, Kind: ruleset.KindMount,
			Mount: &ruleset.Mount{Operations: []v1alpha1.MountOperation{v1alpha1.MountMount}, FSTypes: []string{"proc"}}},
		ruleset.Rule{ID: "custom/no-bind-guard", Action: v1alpha1.ActionEnforce, Kind: ruleset.KindMount,
			Mount: &ruleset.Mount{Operations: []v1alpha1.MountOperation{v1alpha1.MountMount}, Flags: []v1alpha1.MountFlag{"bind"}, Targets: []string{"/mnt/guard/**"}}},
		ruleset.Rule{ID: "custom/no-umount-tmpfs", Action: v1alpha1.ActionEnforce, Kind: ruleset.KindMount,
			Mount: &ruleset.Mount{Operations: []v1alpha1.MountOperation{v1alpha1.MountUmount}, FSTypes: []string{"tmpfs"}}},
		ruleset.Rule{ID: "custom/no-remount-tmpfs", Action: v1alpha1.ActionEnforce, Kind: ruleset.KindMount,
			Mount: &ruleset.Mount{Operations: []v1alpha1.MountOperation{v1alpha1.MountMount}, FSTypes: []string{"tmpfs"}, Flags: []v1alpha1.MountFlag{"remount"}}},
	)
	if err := e.SetProfile(p); err != nil {
		t.Fatal(err)
	}
	denied(t, "mount proc", inSandbox(t, e, "mounts", "mount", "proc", "/mnt/p", "proc"))
	allowed(t, "mount sysfs", inSandbox(t, e, "mounts", "mount", "sysfs", "/mnt/p", "sysfs"))
	denied(t, "bind onto a guarded target", inSandbox(t, e, "mounts", "bind", "/mnt/free", "/mnt/guard/in"))
	allowed(t, "bind elsewhere", inSandbox(t, e, "mounts", "bind", "/mnt/free", "/mnt/t"))
	denied(t, "umount tmpfs", inSandbox(t, e, "mounts", "mount-then-umount", "tmpfs", "/mnt/t"))
	// sb_mount sees no fs type on a remount; sb_remount sees the superblock's
	denied(t, "remount tmpfs", inSandbox(t, e, "mounts", "mount-then-remount", "tmpfs", "/mnt/t"))
	allowed(t, "unconfined mount proc", inSandbox(t, e, "", "mount", "proc", "/mnt/p", "proc"))
}

func TestRuntimeDefaultRules(t *testing.T) {
	e := enforcer(t)
	mkdirs(t, "/mnt/t")
	prof := install(t, e, policy("rd", ""))
	denied(t, "mount", inSandbox(t, e, prof, "mount", "tmpfs", "/mnt/t", "tmpfs"))
	denied(t, "write /proc/sys", inSandbox(t, e, prof, "write", "/proc/sys/kernel/hostname"))
	denied(t, "read /proc/kcore", inSandbox(t, e, prof, "read", "/proc/kcore"))
	denied(t, "user namespace", inSandbox(t, e, prof, "userns"))
	denied(t, "read a host process's environ", inSandbox(t, e, prof, "ptrace-read", "1"))
	allowed(t, "read its own environ", inSandbox(t, e, prof, "ptrace-read", "self"))
	allowed(t, "unconfined reads a host process's environ", inSandbox(t, e, "", "ptrace-read", "1"))
}

func TestCountersEventsAndAudit(t *testing.T) {
	e := enforcer(t)
	write(t, "/counted/f", "x")
	write(t, "/audited/f", "x")
	prof := install(t, e, policy("count", `  customRules:
    files:
    - name: counted
      paths: ["/counted/f"]
      permissions: [read, write]
    - name: audited
      action: Audit
      paths: ["/audited/f"]
      permissions: [read]
`))
	const n = 5
	for range n {
		denied(t, "read", inSandbox(t, e, prof, "read", "/counted/f"))
		denied(t, "truncate", inSandbox(t, e, prof, "truncate", "/counted/f"))
		allowed(t, "audited read", inSandbox(t, e, prof, "read", "/audited/f"))
	}
	c, err := e.Counters()
	if err != nil {
		t.Fatal(err)
	}
	// One rule decided through two hooks: each has its own counter, and nothing else of
	// the profile was counted.
	want := map[Decision]uint64{
		{Profile: prof, Rule: "custom/counted", Hook: tables.HookFileOpen, Action: tables.ActionEnforce}: n,
		{Profile: prof, Rule: "custom/counted", Hook: tables.HookPath, Action: tables.ActionEnforce}:     n,
		{Profile: prof, Rule: "custom/audited", Hook: tables.HookFileOpen, Action: tables.ActionAudit}:   n,
	}
	got := map[Decision]uint64{}
	for d, v := range c {
		if d.Profile == prof {
			got[d] = v
		}
	}
	if !maps.Equal(got, want) {
		t.Errorf("counters of profile %s = %v, want %v", prof, got, want)
	}
	if u, err := e.Uncounted(); err != nil || u != 0 {
		t.Errorf("uncounted decisions = %d (%v), want 0", u, err)
	}
	// the same counts through the Prometheus collector, with the hooks the events name
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(NewCollector(e))
	for _, l := range []struct{ rule, hook, action string }{
		{"custom/counted", "file_open", "enforce"},
		{"custom/counted", "path", "enforce"},
		{"custom/audited", "file_open", "audit"},
	} {
		got, err := metricValue(reg, "podarmor_enforcer_decisions_total", map[string]string{"profile": prof, "rule": l.rule, "hook": l.hook, "action": l.action})
		if err != nil || got != n {
			t.Errorf("podarmor_enforcer_decisions_total{rule=%q,hook=%q,action=%q} = %v (%v), want %d", l.rule, l.hook, l.action, got, err, n)
		}
	}
	if _, err := metricValue(reg, "podarmor_enforcer_decisions_total", map[string]string{"profile": prof, "rule": "custom/audited", "hook": "path"}); err == nil {
		t.Errorf("podarmor_enforcer_decisions_total has a sample of custom/audited at hook path, which never decided it")
	}
	if got, err := metricValue(reg, "podarmor_enforcer_decisions_uncounted_total", nil); err != nil || got != 0 {
		t.Errorf("podarmor_enforcer_decisions_uncounted_total = %v (%v), want 0", got, err)
	}
	if got, err := metricValue(reg, "podarmor_enforcer_lsm_hook_attached", map[string]string{"hook": "file_open"}); err != nil || got != 1 {
		t.Errorf("podarmor_enforcer_lsm_hook_attached{hook=file_open} = %v (%v), want 1", got, err)
	}

	ev := waitEvent(t, "deny of /counted/f", func(ev Event) bool {
		return ev.Profile == prof && ev.Rule == "custom/counted" && ev.Action == tables.ActionEnforce && ev.Hook == tables.HookFileOpen
	})
	if ev.PathText != "/counted/f" || ev.Detail != uint32(tables.PermRead) {
		t.Errorf("event = path %q detail %d, want /counted/f, read", ev.PathText, ev.Detail)
	}
	ev = waitEvent(t, "truncate of /counted/f", func(ev Event) bool {
		return ev.Profile == prof && ev.Rule == "custom/counted" && ev.Action == tables.ActionEnforce && ev.Hook == tables.HookPath
	})
	if ev.PathText != "/counted/f" || ev.Detail != uint32(tables.PermWrite) || ev.Hook.String() != "path" {
		t.Errorf("event = path %q hook %s detail %d, want /counted/f, path, write", ev.PathText, ev.Hook, ev.Detail)
	}
	waitEvent(t, "audit of /audited/f", func(ev Event) bool {
		return ev.Profile == prof && ev.Rule == "custom/audited" && ev.Action == tables.ActionAudit && ev.PathText == "/audited/f"
	})
}

// TestRuleUpdateUnderLoad rewrites a profile over and over while a sandbox reads a file
// in a loop: every read either succeeds or is refused, as one rule set or the other says,
// and the last rule set is the one in force for the running container.
func TestRuleUpdateUnderLoad(t *testing.T) {
	e := enforcer(t)
	write(t, "/upd/f", "x")
	deny := policy("upd", `  customRules:
    files:
    - paths: ["/upd/f"]
      permissions: [read]
`)
	allow := policy("upd", `  customRules:
    files:
    - paths: ["/upd/other"]
      permissions: [read]
`)
	prof := install(t, e, allow)
	c := startContainer(t, box{profile: prof, socket: hookSocket(t, e)}, "read-loop", "/upd/f", "400")
	c.pid(t)
	for i := range 20 {
		doc := allow
		if i%2 == 0 {
			doc = deny
		}
		install(t, e, doc)
		time.Sleep(50 * time.Millisecond)
	}
	install(t, e, deny)
	o := c.wait(t)
	if o.code != 0 {
		t.Fatalf("read loop: %v", o)
	}
	var ok, eperm int
	if _, err := fmt.Sscanf(o.out, "ok=%d eperm=%d", &ok, &eperm); err != nil {
		t.Fatalf("read loop output %q: %v", o.out, err)
	}
	t.Logf("reads: %d allowed, %d refused while the rules changed", ok, eperm)
	if ok == 0 || eperm == 0 {
		t.Errorf("want reads both allowed and refused as the rules changed, got %d and %d", ok, eperm)
	}
	denied(t, "read after the last update", inSandbox(t, e, prof, "read", "/upd/f"))
}

// TestEnforcementSurvivesSIGKILL kills an enforcer process while a container it
// registered through the OCI hook tries a denied read in a loop, then has a new enforcer
// adopt the pinned state, replace the programs and rewrite the profile while the loop
// goes on: not one read may succeed.
func TestEnforcementSurvivesSIGKILL(t *testing.T) {
	write(t, "/killed/f", "x")
	pinDir := "/sys/fs/bpf/podarmor-killed"
	socket := ctrDir + "/killed.sock"
	d := exec.Command(self(t), "daemon", pinDir, socket)
	d.Env = append(os.Environ(), "PODARMOR_HELPER=1")
	d.Stderr = os.Stderr
	outPipe, _ := d.StdoutPipe()
	if err := d.Start(); err != nil {
		t.Fatal(err)
	}
	replies := bufio.NewScanner(outPipe)
	if !replies.Scan() || replies.Text() != "ready" {
		t.Fatalf("enforcer daemon did not start: %q", replies.Text())
	}
	c := startContainer(t, box{profile: "killed", socket: socket}, "read-until", "/killed/stop", "/killed/f")
	c.pid(t)
	time.Sleep(300 * time.Millisecond)
	if err := d.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	d.Wait()
	t.Log("enforcer killed with SIGKILL during the loop")

	// A new enforcer takes over while the loop goes on: it adopts the pinned profile,
	// swaps in its own programs and rewrites the profile, with no gap.
	e, err := Load(Options{PinDir: pinDir})
	if err != nil {
		t.Fatalf("a new enforcer on the pinned state: %v", err)
	}
	defer func() {
		e.Unpin()
		e.Close()
	}()
	if got := e.Profiles(); len(got) != 1 || got[0] != "killed" {
		t.Fatalf("adopted profiles = %v, want [killed]", got)
	}
	if err := e.SetProfile(killedProfile()); err != nil {
		t.Fatal(err)
	}
	serveHook(t, e, false)
	t.Log("a new enforcer adopted the state, replaced the programs and rewrote the profile during the loop")
	write(t, "/killed/stop", "")
	o := c.wait(t)
	var ok, eperm int
	if _, err := fmt.Sscanf(o.out, "ok=%d eperm=%d", &ok, &eperm); err != nil || o.code != 0 {
		t.Fatalf("read loop: %v", o)
	}
	t.Logf("reads during the kill and the takeover: %d allowed, %d refused", ok, eperm)
	if ok != 0 || eperm == 0 {
		t.Fatalf("reads: %d allowed, %d refused; want none allowed", ok, eperm)
	}
	denied(t, "read in a new container under the new enforcer", inSandbox(t, e, "killed", "read", "/killed/f"))
}

// withFDServer serves one descriptor of path, opened on the VM outside any container, on
// a unix socket in the containers' root, and runs client with the socket's path in a
// container. The server is a process of its own: no sandbox may connect to a socket the
// enforcer (this process) listens on (bpfprog/self.h).
func withFDServer(t *testing.T, path string, client func(sock string) outcome) outcome {
	t.Helper()
	containerRoot(t)
	sock := fmt.Sprintf("/tmp/fd-%d.sock", time.Now().UnixNano()) // in the containers' root
	srv := exec.Command(self(t), "fd-server", inRoot(sock), path)
	srv.Env = append(os.Environ(), "PODARMOR_HELPER=1")
	srv.Stderr = os.Stderr
	out, err := srv.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() {
		srv.Process.Kill()
		srv.Wait()
	}()
	if sc := bufio.NewScanner(out); !sc.Scan() || sc.Text() != "ready" {
		t.Fatalf("descriptor server did not start: %q", sc.Text())
	}
	return client(sock)
}

// fdServer listens on socket, prints "ready", and sends one descriptor of path to the
// first client.
func fdServer(socket, path string) error {
	l, err := net.Listen("unix", socket)
	if err != nil {
		return err
	}
	defer l.Close()
	fmt.Println("ready")
	c, err := l.Accept()
	if err != nil {
		return err
	}
	defer c.Close()
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	_, _, err = c.(*net.UnixConn).WriteMsgUnix([]byte{0}, unix.UnixRights(int(f.Fd())), nil)
	return err
}

// TestPtraceBetweenContainers: two containers of one profile are still two containers;
// neither may read the other's ptrace-guarded /proc files, while a host agent may.
func TestPtraceBetweenContainers(t *testing.T) {
	e := enforcer(t)
	prof := install(t, e, policy("ptr", ""))
	mkdirs(t, "/ptr")
	os.Remove(inRoot("/ptr/stop"))
	first := startContainer(t, box{profile: prof, socket: hookSocket(t, e)}, "until", "/ptr/stop")
	pid := first.pid(t)
	denied(t, "another container reads its environ", inSandbox(t, e, prof, "ptrace-read", fmt.Sprint(pid)))
	allowed(t, "a host agent reads its environ", onHost(t, "ptrace-read", fmt.Sprint(pid)))
	write(t, "/ptr/stop", "")
	allowed(t, "the first container", first.wait(t))
}

// metricValue gathers reg and returns the value of the sample of name with the labels.
func metricValue(reg *prometheus.Registry, name string, labels map[string]string) (float64, error) {
	families, err := reg.Gather()
	if err != nil {
		return 0, err
	}
	for _, f := range families {
		if f.GetName() != name {
			continue
		}
	metrics:
		for _, m := range f.GetMetric() {
			for _, l := range m.GetLabel() {
				if want, ok := labels[l.GetName()]; ok && want != l.GetValue() {
					continue metrics
				}
			}
			if c := m.GetCounter(); c != nil {
				return c.GetValue(), nil
			}
			return m.GetGauge().GetValue(), nil
		}
	}
	return 0, fmt.Errorf("no sample of %s%v", name, labels)
}

// TestEventRateLimit: over its budget of events per second a container's decisions are
// still counted exactly, and the events not sent are counted as drops.
func TestEventRateLimit(t *testing.T) {
	dir := "/sys/fs/bpf/podarmor-ratelimit"
	e, err := Load(Options{PinDir: dir, EventsPerSecond: 5})
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		e.Unpin()
		e.Close()
	}()
	serveHook(t, e, false)
	write(t, "/limited/f", "x")
	if err := e.SetProfile(profileOf("limited", ruleset.Rule{ID: "custom/limited", Action: v1alpha1.ActionEnforce, Kind: ruleset.KindFile,
		File: &ruleset.File{Paths: []string{"/limited/f"}, Permissions: []v1alpha1.FilePermission{v1alpha1.FileRead}}})); err != nil {
		t.Fatal(err)
	}
	before, err := e.Drops()
	if err != nil {
		t.Fatal(err)
	}
	o := inSandbox(t, e, "limited", "read-loop", "/limited/f", "200")
	var ok, eperm int
	if _, err := fmt.Sscanf(o.out, "ok=%d eperm=%d", &ok, &eperm); err != nil || eperm != 200 {
		t.Fatalf("read loop: %v", o)
	}
	c, err := e.Counters()
	if err != nil {
		t.Fatal(err)
	}
	if got := c[Decision{Profile: "limited", Rule: "custom/limited", Hook: tables.HookFileOpen, Action: tables.ActionEnforce}]; got != 200 {
		t.Errorf("decisions counted: %d, want 200", got)
	}
	after, err := e.Drops()
	if err != nil {
		t.Fatal(err)
	}
	dropped := after[tables.DropRateLimit] - before[tables.DropRateLimit]
	t.Logf("200 denials at a budget of 5 events a second: %d events dropped by the rate limit", dropped)
	if dropped == 0 || dropped >= 200 {
		t.Errorf("rate-limited events: %d, want some but not all of 200", dropped)
	}
}

// TestEventRingBufferFull fills a one-page ring buffer that nothing reads, with a budget
// of events the rate limit never reaches: the events that do not fit are counted as
// ringbuf drops, exactly. Every decision is counted; those whose event was reserved are
// delivered once a reader starts, the others are the drops.
func TestEventRingBufferFull(t *testing.T) {
	dir := "/sys/fs/bpf/podarmor-ringbuf"
	e, err := Load(Options{PinDir: dir, EventsPerSecond: 1 << 20, Capacity: Capacity{EventBuffer: 4096}})
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		e.Unpin()
		e.Close()
	}()
	serveHook(t, e, false)
	write(t, "/flooded/f", "x")
	if err := e.SetProfile(profileOf("flooded", ruleset.Rule{ID: "custom/flooded", Action: v1alpha1.ActionEnforce, Kind: ruleset.KindFile,
		File: &ruleset.File{Paths: []string{"/flooded/f"}, Permissions: []v1alpha1.FilePermission{v1alpha1.FileRead}}})); err != nil {
		t.Fatal(err)
	}
	const n = 300
	o := inSandbox(t, e, "flooded", "read-loop", "/flooded/f", fmt.Sprint(n))
	var ok, eperm int
	if _, err := fmt.Sscanf(o.out, "ok=%d eperm=%d", &ok, &eperm); err != nil || eperm != n {
		t.Fatalf("read loop: %v", o)
	}
	c, err := e.Counters()
	if err != nil {
		t.Fatal(err)
	}
	decision := Decision{Profile: "flooded", Rule: "custom/flooded", Hook: tables.HookFileOpen, Action: tables.ActionEnforce}
	if got := c[decision]; got != n {
		t.Fatalf("decisions counted: %d, want %d (all: %v)", got, n, c)
	}
	drops, err := e.Drops()
	if err != nil {
		t.Fatal(err)
	}
	if drops[tables.DropRateLimit] != 0 || drops[tables.DropPath] != 0 {
		t.Errorf("drops = %v, want only ring buffer drops", drops)
	}
	dropped := drops[tables.DropRingbuf]
	if dropped == 0 || dropped >= n {
		t.Fatalf("ring buffer drops: %d, want some but not all of %d events (a %d-byte record in a 4096-byte buffer)", dropped, n, binary.Size(tables.Event{}))
	}

	// A reader now gets what the buffer held: every decision not dropped, and no more.
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	ch, err := e.Events(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var received uint64
	quiet := time.NewTimer(10 * time.Second)
	for done := false; !done; {
		select {
		case ev := <-ch:
			if ev.Profile != "flooded" || ev.Rule != "custom/flooded" || ev.Hook != tables.HookFileOpen || ev.PathText != "/flooded/f" {
				t.Errorf("unexpected event: %+v", ev)
				continue
			}
			received++
			if received == n-dropped { // wait a little longer for one too many
				quiet.Reset(500 * time.Millisecond)
			}
		case <-quiet.C:
			done = true
		}
	}
	t.Logf("%d denials, a 4096-byte ring buffer not read: %d events delivered once read, %d dropped", n, received, dropped)
	if received+dropped != n {
		t.Errorf("events delivered (%d) + dropped (%d) = %d, want the %d decisions counted", received, dropped, received+dropped, n)
	}
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(NewCollector(e))
	if got, err := metricValue(reg, "podarmor_enforcer_events_dropped_total", map[string]string{"reason": "ringbuf"}); err != nil || got != float64(dropped) {
		t.Errorf("podarmor_enforcer_events_dropped_total{reason=ringbuf} = %v (%v), want %d", got, err, dropped)
	}
	if got, err := metricValue(reg, "podarmor_enforcer_decisions_total", map[string]string{"profile": "flooded", "rule": "custom/flooded", "hook": "file_open", "action": "enforce"}); err != nil || got != n {
		t.Errorf("podarmor_enforcer_decisions_total of custom/flooded = %v (%v), want %d", got, err, n)
	}
}
