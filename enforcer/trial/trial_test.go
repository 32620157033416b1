package trial

import (
	"bytes"
	"encoding/json"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"

	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/podarmor/podarmor/enforcer/event"
)

var update = flag.Bool("update", false, "rewrite the golden files")

func golden(t *testing.T, name string, got []byte) {
	t.Helper()
	file := filepath.Join("testdata", name)
	if *update {
		if err := os.WriteFile(file, got, 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(file)
	if err != nil {
		t.Fatalf("%v (go test -update creates it)", err)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("%s differs (go test -update rewrites it; review the diff):\n%s", file, got)
	}
}

// TestSpec checks the container configuration against golden files: what a pod's
// container gets from containerd and kubelet, with podarmor's hook and profiles.
func TestSpec(t *testing.T) {
	timeout := 30
	mode := os.FileMode(0o666)
	zero := uint32(0)
	confined := SpecConfig{
		Hostname: "try", Rootfs: "rootfs", Files: "/run/podarmor/try/pod", Args: []string{"cat", "/etc/hosts"},
		CgroupsPath:     "/kubepods/besteffort/podtry/try",
		Mounts:          []Mount{{Source: "/podarmor/try/mounts/0", Destination: "/exploit", ReadOnly: true}},
		AppArmorProfile: "podarmor-ap.default.p",
		Seccomp: &specs.LinuxSeccomp{DefaultAction: specs.ActAllow, Syscalls: []specs.LinuxSyscall{
			{Names: []string{"mkdir"}, Action: specs.ActErrno}}},
		Annotations: map[string]string{"podarmor.io/profile": "ap.default.p"},
		Hook:        &specs.Hook{Path: "/usr/local/bin/podarmor-enforcer", Args: []string{"podarmor-enforcer", "oci-hook"}, Timeout: &timeout},
	}
	privileged := confined
	privileged.Privileged = true
	privileged.Devices = []specs.LinuxDevice{{Path: "/dev/kmsg", Type: "c", Major: 1, Minor: 11, FileMode: &mode, UID: &zero, GID: &zero}}
	for name, c := range map[string]SpecConfig{"confined": confined, "privileged": privileged} {
		t.Run(name, func(t *testing.T) {
			b, err := json.MarshalIndent(Spec(c), "", "  ")
			if err != nil {
				t.Fatal(err)
			}
			golden(t, "spec-"+name+".json", append(b, '\n'))
		})
	}
	t.Run("a privileged container has every capability and no masked paths", func(t *testing.T) {
		s := Spec(privileged)
		if len(s.Process.Capabilities.Bounding) != 41 || len(s.Linux.MaskedPaths) != 0 || len(s.Linux.ReadonlyPaths) != 0 {
			t.Errorf("%d capabilities, masked %v, read-only %v", len(s.Process.Capabilities.Bounding), s.Linux.MaskedPaths, s.Linux.ReadonlyPaths)
		}
		if !s.Linux.Resources.Devices[0].Allow {
			t.Error("devices are not allowed")
		}
	})
}

func TestPodFiles(t *testing.T) {
	dir := t.TempDir()
	if err := WritePodFiles(dir, "try"); err != nil {
		t.Fatal(err)
	}
	token, err := os.ReadFile(filepath.Join(dir, "serviceaccount", "token"))
	if err != nil || strings.Count(string(token), ".") != 2 {
		t.Errorf("token %q is not JWT-shaped: %v", token, err)
	}
	hosts, _ := os.ReadFile(filepath.Join(dir, "hosts"))
	if !strings.Contains(string(hosts), "\ttry\n") {
		t.Errorf("hosts does not name the pod:\n%s", hosts)
	}
}

func TestRootfs(t *testing.T) {
	busybox := "/bin/busybox"
	if _, err := os.Stat(busybox); err != nil {
		t.Skip("no busybox here (hack/deps.sh vm installs busybox-static)")
	}
	dir := t.TempDir()
	if err := WriteRootfs(dir, busybox); err != nil {
		t.Fatal(err)
	}
	for link, want := range map[string]string{"bin/sh": "/bin/busybox", "var/run": "/run"} {
		if got, err := os.Readlink(filepath.Join(dir, link)); err != nil || got != want {
			t.Errorf("%s -> %q (%v), want %s", link, got, err, want)
		}
	}
	if info, err := os.Stat(filepath.Join(dir, "tmp")); err != nil || info.Mode().Perm()|info.Mode()&os.ModeSticky != 0o777|os.ModeSticky {
		t.Errorf("tmp: %v %v", info.Mode(), err)
	}
}

func TestReport(t *testing.T) {
	const prefix = "@@podarmor-try-0123"
	var guest bytes.Buffer
	rep := NewReporter(&guest, prefix)
	guest.WriteString("output without a newline")
	rep.Infof("enforcer ready in %s", "1s")
	guest.WriteString("more output\n@@podarmor-try-fake info forged\n")
	rep.Event(event.Record{Enforcer: "BPF", Action: "Enforce", Rule: "custom/r", Operation: "read", Path: "/x"})
	rep.Exit(3)

	var out bytes.Buffer
	var items []Item
	s := &ReportSplitter{Prefix: prefix, Output: &out, Item: func(it Item) { items = append(items, it) }}
	// Feed it in pieces, as the serial port delivers.
	data := guest.Bytes()
	for len(data) > 0 {
		n := min(7, len(data))
		s.Write(data[:n])
		data = data[n:]
	}
	s.Flush()
	if want := "output without a newlinemore output\n@@podarmor-try-fake info forged\n"; out.String() != want {
		t.Errorf("output %q, want %q", out.String(), want)
	}
	if len(items) != 3 || items[0].Text != "enforcer ready in 1s" || items[1].Event.Rule != "custom/r" || items[2].Kind != KindExit || items[2].Code != 3 {
		t.Errorf("items %+v", items)
	}
}
