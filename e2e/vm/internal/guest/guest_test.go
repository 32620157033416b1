//go:build vmguest

package guest

import (
	"flag"
	"os"
	"slices"
	"strings"
	"syscall"
	"testing"
)

// series is the kernel series the host booted, e.g. "6.12"; the host passes it with
// -series, as a guest test can take any flag of its own.
var series = flag.String("series", "", "kernel series the VM booted")

// Filesystem magic numbers (statfs f_type), from linux/magic.h.
const (
	bpfFSMagic      = 0xcafe4a11
	cgroup2Magic    = 0x63677270
	securityFSMagic = 0x73636673
)

func TestRunsAsChildOfInit(t *testing.T) {
	if ppid := os.Getppid(); ppid != 1 {
		t.Errorf("parent pid %d, want 1 (/init)", ppid)
	}
	if uid := os.Getuid(); uid != 0 {
		t.Errorf("uid %d, want 0", uid)
	}
}

func TestMounts(t *testing.T) {
	tests := map[string]struct {
		path  string
		magic int64
	}{
		"bpffs is mounted where BPF objects are pinned": {"/sys/fs/bpf", bpfFSMagic},
		"cgroup2 is mounted where runc expects it":      {"/sys/fs/cgroup", cgroup2Magic},
		"securityfs is mounted":                         {"/sys/kernel/security", securityFSMagic},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			var st syscall.Statfs_t
			if err := syscall.Statfs(tc.path, &st); err != nil {
				t.Fatalf("statfs %s: %v", tc.path, err)
			}
			if st.Type != tc.magic {
				t.Errorf("%s has filesystem magic %#x, want %#x", tc.path, st.Type, tc.magic)
			}
		})
	}
}

func TestActiveLSMs(t *testing.T) {
	data, err := os.ReadFile("/sys/kernel/security/lsm")
	if err != nil {
		t.Fatal(err)
	}
	lsms := strings.Split(strings.TrimSpace(string(data)), ",")
	t.Logf("active LSMs: %s", data)
	for _, want := range []string{"apparmor", "bpf"} {
		if !slices.Contains(lsms, want) {
			t.Errorf("LSM %s is not active: %s", want, data)
		}
	}
}

func TestKernelSeries(t *testing.T) {
	var uts syscall.Utsname
	if err := syscall.Uname(&uts); err != nil {
		t.Fatal(err)
	}
	var release strings.Builder
	for _, c := range uts.Release {
		if c == 0 {
			break
		}
		release.WriteByte(byte(c))
	}
	t.Logf("kernel %s", release.String())
	if *series == "" || !strings.HasPrefix(release.String(), *series+".") {
		t.Errorf("kernel release %s, want series %q", release.String(), *series)
	}
}

func TestEnvironmentAndTestdata(t *testing.T) {
	if got := os.Getenv("PODARMOR_GUEST_PROBE"); got != "yes" {
		t.Errorf("PODARMOR_GUEST_PROBE=%q, want the host's \"yes\"", got)
	}
	data, err := os.ReadFile("testdata/hello.txt")
	if err != nil {
		t.Fatalf("the package's testdata is not in the working directory: %v", err)
	}
	if !strings.Contains(string(data), "guest test") {
		t.Errorf("testdata/hello.txt holds %q", data)
	}
}
