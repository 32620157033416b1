//go:build vmguest

package bpf

import (
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"slices"
	"strings"
	"syscall"
	"testing"

	"github.com/podarmor/podarmor/enforcer/tables"
	"github.com/podarmor/podarmor/enforcer/trial"
	"github.com/podarmor/podarmor/policies/api/v1alpha1"
	"github.com/podarmor/podarmor/policies/catalog"
	"github.com/podarmor/podarmor/policies/compile"
	"github.com/podarmor/podarmor/policies/compile/bpf"
	"github.com/podarmor/podarmor/policies/ruleset"
)

// catalogOp is how the kernel test tries what a catalog entry denies: a helper operation
// (guest_ops_test.go) that the entry's rules must refuse with EPERM in a sandbox. Unless
// unconfinedOK is set, the same operation outside the sandbox only has to fail some other
// way (a mount of a missing disk fails with ENOENT, not EPERM).
type catalogOp struct {
	op           []string
	unconfinedOK bool
}

// uncoveredCapabilities are the capability entries the kernel test cannot observe alone,
// each with the reason. The capable hook treats every capability alike (one bit of a
// mask, bpfprog/podarmor.bpf.c), which the other capabilities' cases exercise.
var uncoveredCapabilities = map[string]string{
	"SYSLOG":             "the kernel accepts SYS_ADMIN in its place (check_syslog_permissions)",
	"PERFMON":            "the kernel accepts SYS_ADMIN in its place (perfmon_capable)",
	"BPF":                "the kernel accepts SYS_ADMIN in its place (bpf_capable)",
	"CHECKPOINT_RESTORE": "the kernel accepts SYS_ADMIN in its place (checkpoint_restore_ns_capable)",
	"NET_BROADCAST":      "no kernel path checks it",
	"MAC_OVERRIDE":       "only SELinux and Smack check it; the guest runs AppArmor",
	"MAC_ADMIN":          "AppArmor checks it with cap_capable directly, not through the LSM capable hook",
	"BLOCK_SUSPEND":      "the kernel drops EPOLLWAKEUP silently instead of refusing",
	"AUDIT_WRITE":        "checked on audit netlink messages, whose refusal arrives as an asynchronous ack",
	"AUDIT_CONTROL":      "checked on audit netlink messages, whose refusal arrives as an asynchronous ack",
	"AUDIT_READ":         "checked when binding the audit multicast group, which needs audit running",
	"LINUX_IMMUTABLE":    "the guest's root filesystem does not support the immutable flag",
	"SETFCAP":            "the guest's root filesystem (initramfs) has no xattr support for security.capability",
	"WAKE_ALARM":         "the guest has no alarm-capable real-time clock",
}

func catalogOps() map[string]catalogOp {
	ops := map[string]catalogOp{
		"runtime-default-proc-write":               {op: []string{"write", "/proc/sys/kernel/hostname"}, unconfinedOK: true},
		"runtime-default-sys-write":                {op: []string{"write", "/sys/kernel/mm/transparent_hugepage/enabled"}, unconfinedOK: true},
		"runtime-default-hidden-paths":             {op: []string{"read-head", "/proc/kcore"}, unconfinedOK: true},
		"runtime-default-mount":                    {op: []string{"mount", "tmpfs", "/mnt/t", "tmpfs"}, unconfinedOK: true},
		"runtime-default-ptrace":                   {op: []string{"ptrace-read", "1"}, unconfinedOK: true},
		"runtime-default-userns":                   {op: []string{"userns"}, unconfinedOK: true},
		"runtime-default-kernel-interfaces":        {op: []string{"bpf"}, unconfinedOK: true},
		"runtime-default-vsock":                    {op: []string{"socket", "40", "1", "0"}},
		"disallow-write-core-pattern":              {op: []string{"write", "/proc/sys/kernel/core_pattern"}, unconfinedOK: true},
		"disallow-write-kernel-helpers":            {op: []string{"write", "/proc/sys/kernel/modprobe"}, unconfinedOK: true},
		"disallow-write-release-agent":             {op: []string{"create", "/cat/cg/release_agent"}, unconfinedOK: true},
		"disallow-write-devices-allow":             {op: []string{"create", "/cat/cg/devices.allow"}, unconfinedOK: true},
		"disallow-write-cgroup-procs":              {op: []string{"write", "/sys/fs/cgroup/cgroup.procs"}, unconfinedOK: true},
		"disallow-mount-procfs":                    {op: []string{"mount", "proc", "/mnt/t", "proc"}, unconfinedOK: true},
		"disallow-mount-sysfs":                     {op: []string{"mount", "sysfs", "/mnt/t", "sysfs"}, unconfinedOK: true},
		"disallow-mount-securityfs":                {op: []string{"mount", "securityfs", "/mnt/t", "securityfs"}, unconfinedOK: true},
		"disallow-mount-cgroupfs":                  {op: []string{"mount", "cgroup2", "/mnt/t", "cgroup2"}, unconfinedOK: true},
		"disallow-mount-host-disk":                 {op: []string{"mount", "/dev/sda1", "/mnt/t", "ext4"}},
		"disallow-mount-kernel-interfaces":         {op: []string{"mount", "debugfs", "/mnt/t", "debugfs"}, unconfinedOK: true},
		"disallow-access-host-disk":                {op: []string{"read", "/dev/sda"}, unconfinedOK: true},
		"disallow-mknod":                           {op: []string{"mknod", "/cat/null"}, unconfinedOK: true},
		"disallow-load-kernel-module":              {op: []string{"init-module", "/cat/notamodule"}},
		"disallow-proc-root-mem-outside-container": {op: []string{"ptrace-read", "1"}, unconfinedOK: true},
		"disallow-mount":                           {op: []string{"mount", "tmpfs", "/mnt/t", "tmpfs"}, unconfinedOK: true},
		"disallow-umount":                          {op: []string{"mount-then-umount", "tmpfs", "/mnt/t"}, unconfinedOK: true},
		"disallow-pivot-root":                      {op: []string{"pivot-root", "/mnt", "/mnt/t"}},
		"disallow-write-sysrq-trigger":             {op: []string{"write", "/proc/sysrq-trigger"}, unconfinedOK: true},
		"disallow-load-bpf":                        {op: []string{"bpf"}, unconfinedOK: true},
		"disallow-create-userns":                   {op: []string{"userns"}, unconfinedOK: true},
		"disallow-userfaultfd":                     {op: []string{"userfaultfd"}, unconfinedOK: true},
		"disallow-io-uring":                        {op: []string{"io_uring"}, unconfinedOK: true},
		"disallow-perf-event":                      {op: []string{"perf"}, unconfinedOK: true},
		"disallow-read-kallsyms":                   {op: []string{"read-head", "/proc/kallsyms"}, unconfinedOK: true},
		"disallow-read-serviceaccount-token":       {op: []string{"read", "/var/run/secrets/kubernetes.io/serviceaccount/token"}, unconfinedOK: true},
		"disallow-read-proc-partitions":            {op: []string{"read", "/proc/partitions"}, unconfinedOK: true},
		"disallow-read-mountinfo":                  {op: []string{"read", "/proc/self/mountinfo"}, unconfinedOK: true},
		"disallow-read-arp-table":                  {op: []string{"read", "/proc/net/arp"}, unconfinedOK: true},
		"disallow-cloud-metadata-aws":              {op: []string{"connect", "tcp", "169.254.169.254:80"}},
		"disallow-cloud-metadata-gcp":              {op: []string{"connect", "tcp", "169.254.169.254:80"}},
		"disallow-cloud-metadata-azure":            {op: []string{"connect", "tcp", "168.63.129.16:80"}},
		"disallow-cloud-metadata-alibaba":          {op: []string{"connect", "tcp", "100.100.100.200:80"}},
		"disallow-cloud-metadata-oracle":           {op: []string{"connect", "tcp", "192.0.0.192:80"}},
		"disallow-cloud-metadata-volcengine":       {op: []string{"connect", "tcp", "100.96.0.96:80"}},
		"disallow-cloud-metadata-all":              {op: []string{"connect", "tcp", "100.96.0.96:80"}},
		"disallow-egress-apiserver":                {op: []string{"connect", "tcp", "127.0.0.9:6443"}},
		"disallow-write-etc":                       {op: []string{"write", "/etc/hostname"}, unconfinedOK: true},
		"disallow-write-account-files":             {op: []string{"write", "/etc/passwd"}, unconfinedOK: true},
		"disallow-read-shadow":                     {op: []string{"read", "/etc/shadow"}, unconfinedOK: true},
		"disallow-access-ssh":                      {op: []string{"read", "/root/.ssh/id_ed25519"}, unconfinedOK: true},
		"disallow-access-runtime-sockets":          {op: []string{"connect", "unix", "/run/containerd/containerd.sock"}, unconfinedOK: true},
		"disallow-exec-shell":                      {op: []string{"exec", "/usr/local/bin/sh", "true"}, unconfinedOK: true},
		"disallow-exec-busybox":                    {op: []string{"exec", "/bin/busybox", "true"}, unconfinedOK: true},
		"disallow-exec-wget":                       {op: []string{"exec", "/usr/local/bin/wget", "true"}, unconfinedOK: true},
		"disallow-exec-curl":                       {op: []string{"exec", "/usr/local/bin/curl", "true"}, unconfinedOK: true},
		"disallow-exec-su":                         {op: []string{"exec", "/usr/local/bin/su", "true"}, unconfinedOK: true},
		"disallow-exec-sudo":                       {op: []string{"exec", "/usr/local/bin/sudo", "true"}, unconfinedOK: true},
		"disallow-exec-chmod":                      {op: []string{"exec", "/usr/local/bin/chmod", "true"}, unconfinedOK: true},
		"disallow-chmod-setuid":                    {op: []string{"chmod-raw", "/cat/file", "4755"}, unconfinedOK: true},
		"disallow-network":                         {op: []string{"socket", "2", "1", "0"}, unconfinedOK: true},
		"disallow-network-all-families":            {op: []string{"socket", "1", "1", "0"}, unconfinedOK: true},
		"disallow-network-inet":                    {op: []string{"socket", "2", "2", "0"}, unconfinedOK: true},
		"disallow-network-inet6":                   {op: []string{"socket", "10", "1", "0"}, unconfinedOK: true},
		"disallow-network-unix":                    {op: []string{"socket", "1", "2", "0"}, unconfinedOK: true},
		"disallow-network-netlink":                 {op: []string{"socket", "16", "3", "0"}, unconfinedOK: true},
		"disallow-network-packet":                  {op: []string{"socket", "17", "3", "0"}, unconfinedOK: true},
		"disallow-network-alg":                     {op: []string{"socket", "38", "5", "0"}},
		"disallow-network-tcp":                     {op: []string{"socket", "2", "1", "0"}, unconfinedOK: true},
		"disallow-network-udp":                     {op: []string{"socket", "10", "2", "0"}, unconfinedOK: true},
		"disallow-network-icmp":                    {op: []string{"socket", "2", "2", "1"}},
		"disallow-network-raw":                     {op: []string{"socket", "2", "3", "1"}, unconfinedOK: true},
		"mitigate-cve-2019-5736-runc-overwrite":    {op: []string{"write", "/usr/local/bin/runc"}, unconfinedOK: true},
		"mitigate-cve-2022-0492-release-agent":     {op: []string{"mount", "cgroup", "/mnt/t", "cgroup"}},
		"mitigate-af-alg-kernel-bugs":              {op: []string{"socket", "38", "5", "0"}},
		"mitigate-cve-2025-1974-ingress-nightmare": {op: []string{"connect", "tcp", "127.0.8.8:8443"}},
	}
	for name, op := range map[string]catalogOp{
		"CHOWN":            {op: []string{"chown", "/cat/file", "2"}, unconfinedOK: true},
		"DAC_OVERRIDE":     {op: []string{"write-dac", "/cat/readonly"}, unconfinedOK: true},
		"DAC_READ_SEARCH":  {op: []string{"open-by-handle", "/cat/file"}, unconfinedOK: true},
		"FOWNER":           {op: []string{"chmod-raw", "/cat/owned-by-1", "0600"}, unconfinedOK: true},
		"FSETID":           {op: []string{"chmod-sgid", "/cat/group-1"}, unconfinedOK: true},
		"KILL":             {op: []string{"kill-uid1"}, unconfinedOK: true},
		"SETGID":           {op: []string{"setgid", "1"}, unconfinedOK: true},
		"SETUID":           {op: []string{"setuid", "1"}, unconfinedOK: true},
		"SETPCAP":          {op: []string{"capbset-drop", "22"}, unconfinedOK: true},
		"NET_BIND_SERVICE": {op: []string{"listen", "127.0.0.1:80"}, unconfinedOK: true},
		"NET_ADMIN":        {op: []string{"ifflags-lo"}, unconfinedOK: true},
		"NET_RAW":          {op: []string{"socket", "2", "3", "1"}, unconfinedOK: true},
		"IPC_LOCK":         {op: []string{"mlock-big"}, unconfinedOK: true},
		"IPC_OWNER":        {op: []string{"shm-of-uid1"}, unconfinedOK: true},
		"SYS_MODULE":       {op: []string{"delete-module", "podarmor_none"}},
		"SYS_RAWIO":        {op: []string{"ioperm"}, unconfinedOK: true},
		"SYS_CHROOT":       {op: []string{"chroot", "/"}, unconfinedOK: true},
		"SYS_PTRACE":       {op: []string{"ptrace-read-uid1"}, unconfinedOK: true},
		"SYS_PACCT":        {op: []string{"acct-off"}, unconfinedOK: true},
		"SYS_ADMIN":        {op: []string{"sethostname"}, unconfinedOK: true},
		"SYS_BOOT":         {op: []string{"cad-off"}, unconfinedOK: true},
		"SYS_NICE":         {op: []string{"nice", "-5"}, unconfinedOK: true},
		"SYS_RESOURCE":     {op: []string{"raise-nofile"}, unconfinedOK: true},
		"SYS_TIME":         {op: []string{"settime"}, unconfinedOK: true},
		"SYS_TTY_CONFIG":   {op: []string{"vhangup"}, unconfinedOK: true},
		"MKNOD":            {op: []string{"mknod", "/cat/null"}, unconfinedOK: true},
		"LEASE":            {op: []string{"lease", "/cat/owned-by-1"}, unconfinedOK: true},
	} {
		ops["disallow-cap-"+strings.ReplaceAll(strings.ToLower(name), "_", "-")] = op
	}
	ops["disallow-cap-all"] = catalogOp{op: []string{"chown", "/cat/file", "2"}, unconfinedOK: true}
	ops["disallow-cap-all-except-net-bind-service"] = catalogOp{op: []string{"chown", "/cat/file", "2"}, unconfinedOK: true}
	ops["disallow-cap-beyond-runtime-default"] = catalogOp{op: []string{"sethostname"}, unconfinedOK: true}
	return ops
}

// catalogMounts are the catalog containers' bind mounts: a stand-in for a host disk at
// /dev/sda (a regular file; runc gives /dev a tmpfs of its own), and the VM's
// /run/containerd, where a runtime socket listens, as a hostPath volume brings it in.
var catalogMounts = []trial.Mount{{Source: "/dev/sda", Destination: "/dev/sda"}, {Source: "/run/containerd", Destination: "/run/containerd"}}

// setupCatalogGuest makes what the operations need: files, a process of another user,
// addresses, copies of busybox under the names exec rules guard.
func setupCatalogGuest(t *testing.T) (stop func()) {
	t.Helper()
	mkdirs(t, "/cat/cg", "/mnt/t", "/root/.ssh", "/usr/local/bin", "/run/containerd")
	write(t, "/cat/file", "x")
	write(t, "/cat/notamodule", "x")
	write(t, "/cat/readonly", "x")
	both(t, "/cat/readonly", func(p string) error { return os.Chmod(p, 0o444) })
	write(t, "/cat/owned-by-1", "x")
	both(t, "/cat/owned-by-1", func(p string) error { return os.Chown(p, 1, 1) })
	write(t, "/cat/group-1", "x")
	both(t, "/cat/group-1", func(p string) error { return os.Chown(p, 0, 1) })
	must(t, os.WriteFile("/dev/sda", nil, 0o644))
	write(t, "/etc/shadow", "root:*:1::::::\n")
	write(t, "/etc/hostname", "guest\n")
	write(t, "/root/.ssh/id_ed25519", "key")
	// The service-account token is the one of the containers' pod files (trial).
	// Only in the containers' root: a busybox named runc on the VM would stand in for runc.
	busyboxAt(t, true, "/usr/local/bin/sh", "/usr/local/bin/wget", "/usr/local/bin/curl", "/usr/local/bin/su",
		"/usr/local/bin/sudo", "/usr/local/bin/chmod", "/usr/local/bin/runc")
	// the metadata and API server addresses, on loopback inside the guest only
	for _, a := range []string{"169.254.169.254/32", "168.63.129.16/32", "100.100.100.200/32", "192.0.0.192/32", "100.96.0.96/32"} {
		if out, err := exec.Command("/bin/busybox", "ip", "addr", "add", a, "dev", "lo").CombinedOutput(); err != nil {
			t.Fatalf("ip addr add %s: %v\n%s", a, err, out)
		}
	}
	// a unix socket at a runtime socket's path
	os.Remove("/run/containerd/containerd.sock")
	l, err := netListenUnix("/run/containerd/containerd.sock")
	must(t, err)
	// a process of user 1, for KILL and SYS_PTRACE
	sleeper := exec.Command("/bin/busybox", "sleep", "600")
	sleeper.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 1, Gid: 1}}
	must(t, sleeper.Start())
	write(t, "/cat/uid1.pid", fmt.Sprint(sleeper.Process.Pid))
	// a shared memory segment user 1 created, for IPC_OWNER
	shm := exec.Command(self(t), "shm-create")
	shm.Env = append(os.Environ(), "PODARMOR_HELPER=1")
	shm.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 1, Gid: 1}}
	out, err := shm.Output()
	must(t, err)
	write(t, "/cat/uid1.shm", strings.Fields(string(out))[0])
	return func() {
		sleeper.Process.Kill()
		sleeper.Wait()
		l.Close()
	}
}

func netListenUnix(path string) (net.Listener, error) { return net.Listen("unix", path) }

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// TestCatalogInKernel checks every catalog entry the BPF enforcer implements, alone in a
// profile (one profile, rewritten for each entry while its container runs): its operation is refused with EPERM in a container with the profile and counted
// under the entry's rule, and is not refused with EPERM in an unconfined container.
func TestCatalogInKernel(t *testing.T) {
	e := enforcer(t)
	stop := setupCatalogGuest(t)
	defer stop()
	cat, err := catalog.Load()
	must(t, err)
	opts := compile.Options{
		Catalog:      cat,
		APIServer:    []netip.Addr{netip.MustParseAddr("127.0.0.9")},
		ClusterCIDRs: []netip.Prefix{netip.MustParsePrefix("127.0.8.0/24")},
	}
	ops := catalogOps()
	for _, entry := range cat.Entries() {
		if !slices.Contains(entry.Enforcers, v1alpha1.EnforcerBPF) {
			continue
		}
		t.Run(entry.Name, func(t *testing.T) {
			op, ok := ops[entry.Name]
			if !ok {
				capName := strings.ToUpper(strings.ReplaceAll(strings.TrimPrefix(entry.Name, "disallow-cap-"), "-", "_"))
				if why, exempt := uncoveredCapabilities[capName]; exempt && strings.HasPrefix(entry.Name, "disallow-cap-") {
					t.Logf("not observable alone: %s", why)
					return
				}
				t.Fatalf("no kernel test operation for catalog entry %s: add one to catalogOps", entry.Name)
			}
			x, err := compile.ExpandEntry(entry, opts)
			must(t, err)
			var rules []ruleset.Rule
			for _, r := range x.Rules {
				if (bpf.Backend{}).Express(r) == nil {
					rules = append(rules, r)
				}
			}
			// One profile, rewritten for each entry, confines the one container that
			// tries every entry's operation.
			const id = "catalog"
			must(t, e.SetProfile(profileOf(id, rules...)))

			denied(t, strings.Join(op.op, " "), inBox(t, box{profile: id, socket: hookSocket(t, e), mounts: catalogMounts}, op.op...))
			c, err := e.Counters()
			must(t, err)
			if decided(c, id, "builtin/"+entry.Name, tables.ActionEnforce) == 0 {
				t.Errorf("no enforce decision counted for builtin/%s", entry.Name)
			}
			free := inBox(t, box{socket: hookSocket(t, e), mounts: catalogMounts}, op.op...)
			if op.unconfinedOK {
				allowed(t, "unconfined", free)
			} else if free.code == 1 {
				t.Errorf("unconfined: refused with EPERM too (%v): the operation does not tell the rule's effect", free)
			}
		})
	}
}
