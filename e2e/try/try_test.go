// Package try tests `podarmor try` end to end: the CLI boots a VM on a real kernel with
// the static podarmor-enforcer, which loads the policy, registers the container through
// the OCI hook and reports its events. Each case is one boot (20-60 s under TCG).
package try

import (
	"bytes"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/podarmor/podarmor/e2e/vm"
	"github.com/podarmor/podarmor/policies/cli"
)

const token = "/var/run/secrets/kubernetes.io/serviceaccount/token"

// enforcerBinary builds the static podarmor-enforcer once for every test.
var enforcerBinary = sync.OnceValues(func() (string, error) {
	out, err := exec.Command("../../hack/build-enforcer.sh").Output()
	if err != nil {
		if ee, ok := err.(*exec.ExitError); ok {
			return "", &buildError{err, string(ee.Stderr)}
		}
		return "", err
	}
	return strings.TrimSpace(string(out)), nil
})

type buildError struct {
	err    error
	stderr string
}

func (e *buildError) Error() string {
	return "hack/build-enforcer.sh: " + e.err.Error() + "\n" + e.stderr
}

// try runs `podarmor try` with args (the policy path relative to testdata) and returns
// its exit code, stdout and stderr.
func try(t *testing.T, args ...string) (int, string, string) {
	t.Helper()
	vm.Require(t)
	bin, err := enforcerBinary()
	if err != nil {
		t.Fatal(err)
	}
	args = append([]string{"try", "--enforcer-binary", bin}, args...)
	var stdout, stderr bytes.Buffer
	start := time.Now()
	code := cli.Run(args, &stdout, &stderr)
	t.Logf("podarmor %s: exit code %d in %s\n--- stdout:\n%s--- stderr:\n%s", strings.Join(args, " "), code,
		time.Since(start).Round(time.Millisecond), stdout.String(), stderr.String())
	return code, stdout.String(), stderr.String()
}

func policy(name string) string { return filepath.Join("testdata", name) }

func contains(t *testing.T, what, text string, want ...string) {
	t.Helper()
	for _, w := range want {
		if !strings.Contains(text, w) {
			t.Errorf("%s does not contain %q", what, w)
		}
	}
}

// TestTry runs the cases of podarmor try, on the newer kernel except where a case says
// otherwise.
func TestTry(t *testing.T) {
	t.Run("a BPF rule refuses to read the token, and its event names the rule", func(t *testing.T) {
		t.Parallel()
		for _, series := range vm.Series() {
			t.Run(series, func(t *testing.T) {
				t.Parallel()
				code, stdout, stderr := try(t, "-f", policy("bpf-seccomp.yaml"), "--kernel", series, "--",
					"sh", "-c", "mkdir /tmp/x || echo mkdir refused; exec cat "+token)
				if code != 1 {
					t.Errorf("exit code %d, want cat's 1", code)
				}
				contains(t, "stdout", stdout,
					"cat: can't open '"+token+"': Operation not permitted",
					// seccomp's custom rule: EPERM from the filter, and no event
					"mkdir: can't create directory '/tmp/x': Operation not permitted", "mkdir refused")
				contains(t, "stderr", stderr, "exit code 1", "1 event:",
					"denied   read /run/secrets/kubernetes.io/serviceaccount/token  rule builtin/disallow-read-serviceaccount-token  (BPF file_open, cat pid")
			})
		}
	})
	t.Run("unconfined, the same container reads the token, and the command's exit code is try's", func(t *testing.T) {
		t.Parallel()
		code, stdout, stderr := try(t, "-f", policy("bpf-seccomp.yaml"), "--unconfined", "--",
			"sh", "-c", "cat "+token+" && mkdir /tmp/x && hostname && exit 3")
		if code != 3 {
			t.Errorf("exit code %d, want 3", code)
		}
		contains(t, "stdout", stdout, "eyJ", "try\n")
		contains(t, "stderr", stderr, "--unconfined", "exit code 3")
		if strings.Contains(stderr, "event") {
			t.Errorf("events without a policy")
		}
	})
	t.Run("an AppArmor-only policy refuses the read, and the kernel's audit message becomes an event", func(t *testing.T) {
		t.Parallel()
		code, stdout, stderr := try(t, "-f", policy("apparmor.yaml"), "--", "cat", token)
		if code != 1 {
			t.Errorf("exit code %d, want 1", code)
		}
		contains(t, "stdout", stdout, "cat: can't open '"+token+"': Permission denied")
		contains(t, "stderr", stderr, "(profile ap.default.no-token-apparmor, EnhanceProtect, AppArmor)", "1 event:",
			"denied   read /run/secrets/kubernetes.io/serviceaccount/token  rule builtin/disallow-read-serviceaccount-token  (AppArmor open, cat pid")
	})
	t.Run("without the enforcer the hook refuses the container, or lets it run when set to allow", func(t *testing.T) {
		t.Parallel()
		vm.Require(t)
		bin, err := enforcerBinary()
		if err != nil {
			t.Fatal(err)
		}
		// Two containers in one boot, through the guest runner directly: try has no
		// flag to leave the enforcer out.
		script := `podarmor-enforcer try-guest --policy /podarmor/policy.yaml --without-enforcer --dir /run/t1 -- echo STARTED-REFUSE
echo "refuse: exit code $?"
podarmor-enforcer try-guest --policy /podarmor/policy.yaml --without-enforcer --on-unavailable allow --dir /run/t2 -- echo STARTED-ALLOW
echo "allow: exit code $?"
`
		res := vm.RunTest(t, vm.Config{
			Kernel:  vm.KernelT(t, vm.Series612),
			Command: []string{"sh", "-c", script},
			Files: []vm.File{
				{Path: "/usr/local/bin/podarmor-enforcer", Source: bin, Mode: 0o755},
				{Path: "/podarmor/policy.yaml", Source: policy("bpf-seccomp.yaml")},
			},
			Timeout: 5 * time.Minute,
		})
		contains(t, "output", res.Output,
			"podarmor: container try not started: the podarmor enforcer at /run/t1/enforcer.sock is unavailable",
			"refuse: exit code 125",
			"STARTED-ALLOW", "the hook let container try run without its BPF registration", "allow: exit code 0")
		if strings.Contains(res.Output, "STARTED-REFUSE") {
			t.Error("the refused container ran")
		}
	})
}
