package vm

import (
	"strings"
	"testing"
	"time"
)

// nodeProbe runs in the guest as a shell script. It checks what podarmor's enforcers
// need from a node, one step after the other, and exits 3 after the last, so the host
// also sees that exit codes come through. The container is runc's own default spec
// with three changes: no terminal, the command, and an AppArmor profile that the
// script loads first and that denies the container one file. The profile lets the
// container receive signals from unconfined processes, as docker-default does: runc
// signals its Go process in the container (SIGURG, the Go runtime's preemption), and
// logs "permission denied" errors when that is denied.
const nodeProbe = `set -e
echo "lsm: $(cat /sys/kernel/security/lsm)"

cat >/tmp/probe.profile <<'EOF'
abi <abi/3.0>,
profile podarmor-vm-probe flags=(attach_disconnected) {
  file,
  signal (receive) peer=unconfined,
  deny /**forbidden r,
}
EOF
apparmor_parser -r /tmp/probe.profile
grep '^podarmor-vm-probe ' /sys/kernel/security/apparmor/profiles

mkdir -p /tmp/bundle/rootfs/bin /tmp/bundle/rootfs/etc
cp /bin/busybox /tmp/bundle/rootfs/bin/busybox
/bin/busybox --install -s /tmp/bundle/rootfs/bin
echo secret >/tmp/bundle/rootfs/etc/forbidden
cat >/tmp/bundle/rootfs/probe.sh <<'EOF'
echo "hello from runc in $(cat /proc/self/attr/current)"
cat /etc/forbidden || echo "reading /etc/forbidden was denied"
EOF
cd /tmp/bundle
runc spec
sed -i \
	-e 's/"terminal": true/"terminal": false/' \
	-e 's|"sh"|"/bin/sh", "/probe.sh"|' \
	-e 's/"noNewPrivileges": true/"noNewPrivileges": true, "apparmorProfile": "podarmor-vm-probe"/' \
	config.json
runc run --no-pivot probe
exit 3
`

// TestNode boots each kernel and checks, in the guest, that AppArmor and BPF LSM are
// active, that apparmor_parser loads a profile, that runc runs a busybox container
// confined by it with its output reaching the host, and that the exit code comes back.
func TestNode(t *testing.T) {
	for _, series := range Series() {
		t.Run(series, func(t *testing.T) {
			t.Parallel()
			res := RunTest(t, Config{
				Kernel:  KernelT(t, series),
				Command: []string{"sh", "/podarmor/probe.sh"},
				Files:   []File{{Path: "/podarmor/probe.sh", Data: []byte(nodeProbe)}},
			})
			t.Logf("booted in %s (guest clock %s), %s in all", res.Boot.Round(time.Millisecond), res.GuestBoot, res.Elapsed.Round(time.Millisecond))
			if res.ExitCode != 3 {
				t.Errorf("exit code %d, want 3 (the probe stops at the first failing step)", res.ExitCode)
			}
			lsm := firstLine(res.Output, "lsm: ")
			for _, want := range []string{"apparmor", "bpf"} {
				if !strings.Contains(","+strings.TrimPrefix(lsm, "lsm: ")+",", ","+want+",") {
					t.Errorf("LSM %s is not active: %q", want, lsm)
				}
			}
			for _, want := range []string{
				"podarmor-vm-probe (enforce)",
				"hello from runc in podarmor-vm-probe (enforce)",
				"cat: can't open '/etc/forbidden': Permission denied",
				"reading /etc/forbidden was denied",
			} {
				if firstLine(res.Output, want) != want {
					t.Errorf("the output has no line %q", want)
				}
			}
		})
	}
}

// TestGoTestInGuest runs the Go tests of ./internal/guest inside each kernel's VM, built
// once for both.
func TestGoTestInGuest(t *testing.T) {
	Require(t)
	binary := BuildGoTest(t, GoTest{Package: "./internal/guest"})
	for _, series := range Series() {
		t.Run(series, func(t *testing.T) {
			t.Parallel()
			res := RunGoTest(t, series, GoTest{
				Package: "./internal/guest",
				Binary:  binary,
				Args:    []string{"-series=" + series},
				Env:     []string{"PODARMOR_GUEST_PROBE=yes"},
			})
			if !strings.Contains(res.Output, "--- PASS: TestMounts") {
				t.Errorf("the guest's output has no passing TestMounts:\n%s", res.Output)
			}
		})
	}
}

// TestFailures checks that a VM that dies without reporting an exit code gives an error
// that says why: a kernel panic, the timeout.
func TestFailures(t *testing.T) {
	Require(t)
	kernel := KernelT(t, Series61)
	tests := map[string]struct {
		cfg  Config
		want string
	}{
		"a kernel panic ends the VM at once and is named": {
			cfg:  Config{Command: []string{"sh", "-c", "echo c >/proc/sysrq-trigger"}},
			want: "kernel panic",
		},
		"a VM over its timeout is killed": {
			cfg:  Config{Command: []string{"sleep", "600"}, Timeout: 2 * time.Second},
			want: "timed out after 2s",
		},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			tc.cfg.Kernel = kernel
			_, err := Run(t.Context(), tc.cfg)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %v, want one saying %q", err, tc.want)
			}
		})
	}
}

func firstLine(output, prefix string) string {
	for line := range strings.Lines(output) {
		if strings.HasPrefix(line, prefix) {
			return strings.TrimRight(line, "\n")
		}
	}
	return ""
}
