package vm

import (
	"bytes"
	"context"
	"io"
	"os/exec"
	"slices"
	"strings"
	"testing"
	"time"
)

// These tests need no VM: they check how Run reads the serial ports and writes the
// command script.

func TestConsole(t *testing.T) {
	const nonce = "0123456789abcdef"
	tests := map[string]struct {
		console, output string
		wantExited      bool
		wantCode        int
		wantOutput      string
		wantInitFailed  string
	}{
		"the output comes through byte for byte and the code after it": {
			console:    "SeaBIOS\nPODARMOR-VM-START " + nonce + " 4.25\n[    5.0] reboot: Power down\n",
			output:     "one\n\ttwo  \r\n[    1.000000] not a kernel line\nPODARMOR-VM-EXIT " + nonce + " 3\n",
			wantExited: true, wantCode: 3,
			wantOutput: "one\n\ttwo  \r\n[    1.000000] not a kernel line\n",
		},
		"output without a final newline ends on the marker's line": {
			console:    "PODARMOR-VM-START " + nonce + " 1\n",
			output:     "partial" + "PODARMOR-VM-EXIT " + nonce + " 0\n",
			wantExited: true, wantCode: 0,
			wantOutput: "partial",
		},
		"a marker with another nonce is output like any other line": {
			console:    "PODARMOR-VM-START " + nonce + " 1\n",
			output:     "PODARMOR-VM-EXIT ffffffffffffffff 0\n",
			wantOutput: "PODARMOR-VM-EXIT ffffffffffffffff 0\n",
		},
		"a failed setup is reported and nothing runs": {
			console:        "PODARMOR-VM-INIT-FAILED " + nonce + " mount -t bpf bpf /sys/fs/bpf\n",
			wantInitFailed: "mount -t bpf bpf /sys/fs/bpf",
		},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			var streamed bytes.Buffer
			c := &console{nonce: nonce, output: &streamed, start: time.Now()}
			c.readConsole(strings.NewReader(tc.console))
			c.readOutput(strings.NewReader(tc.output))
			res := c.result()
			if c.exited != tc.wantExited || res.ExitCode != tc.wantCode {
				t.Errorf("exited %v with %d, want %v with %d", c.exited, res.ExitCode, tc.wantExited, tc.wantCode)
			}
			if res.Output != tc.wantOutput {
				t.Errorf("output %q, want %q", res.Output, tc.wantOutput)
			}
			if streamed.String() != tc.wantOutput {
				t.Errorf("streamed %q, want %q", streamed.String(), tc.wantOutput)
			}
			if c.initFailed != tc.wantInitFailed {
				t.Errorf("init failure %q, want %q", c.initFailed, tc.wantInitFailed)
			}
			if tc.console != "" && !strings.Contains(res.Console, strings.SplitN(tc.console, "\n", 2)[0]) {
				t.Errorf("the console log lacks the console's first line:\n%s", res.Console)
			}
		})
	}
}

func TestConsoleBootTimes(t *testing.T) {
	c := &console{nonce: "n", output: io.Discard, start: time.Now()}
	c.readConsole(strings.NewReader("PODARMOR-VM-START n 4.25\n"))
	if res := c.result(); res.GuestBoot != 4250*time.Millisecond || res.Boot <= 0 {
		t.Errorf("boot %s, guest boot %s; want > 0 and 4.25s", res.Boot, res.GuestBoot)
	}
}

// TestCommandScript runs /podarmor/cmd's script with the host's sh: the arguments and
// environment arrive exactly, and nothing else of the environment does.
func TestCommandScript(t *testing.T) {
	sh, err := exec.LookPath("sh")
	if err != nil {
		t.Skip("no sh")
	}
	dir := t.TempDir()
	cfg := Config{
		Kernel:  "unused",
		Command: []string{"sh", "-c", `printf '[%s]' "$@"; printf ' %s' "$PWD" "$QUOTED" "${HOSTONLY-unset}"`, "sh", "a b", "it's", `$HOME`, ""},
		Env:     []string{"QUOTED=x'y z"},
		Dir:     dir,
	}
	if err := cfg.defaults(); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(sh, "-c", string(commandScript(cfg)))
	cmd.Env = []string{"HOSTONLY=leaked"}
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	want := "[a b][it's][$HOME][] " + dir + " x'y z unset"
	if string(out) != want {
		t.Errorf("got  %q\nwant %q", out, want)
	}
}

func TestConfigDefaults(t *testing.T) {
	tests := map[string]struct {
		cfg     Config
		wantErr string
	}{
		"a kernel and a command are enough":    {cfg: Config{Kernel: "k", Command: []string{"true"}}},
		"no kernel":                            {cfg: Config{Command: []string{"true"}}, wantErr: "no kernel"},
		"no command":                           {cfg: Config{Kernel: "k"}, wantErr: "no command"},
		"a command env would take for a var":   {cfg: Config{Kernel: "k", Command: []string{"A=b"}}, wantErr: `contains "="`},
		"an environment entry without a value": {cfg: Config{Kernel: "k", Command: []string{"true"}, Env: []string{"A"}}, wantErr: "not KEY=VALUE"},
		"a relative working directory":         {cfg: Config{Kernel: "k", Command: []string{"true"}, Dir: "tmp"}, wantErr: "not absolute"},
		"a benchmark VM with two CPUs":         {cfg: Config{Kernel: "k", Command: []string{"true"}, Bench: true, CPUs: 2}, wantErr: "exactly 1"},
		"a nice value past 19":                 {cfg: Config{Kernel: "k", Command: []string{"true"}, Nice: 20}, wantErr: "nice value 20"},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			err := tc.cfg.defaults()
			switch {
			case tc.wantErr == "" && err != nil:
				t.Fatalf("unexpected error: %v", err)
			case tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)):
				t.Fatalf("error %v, want one containing %q", err, tc.wantErr)
			case err == nil && (tc.cfg.MemoryMiB != DefaultMemoryMiB || tc.cfg.Timeout != DefaultTimeout || tc.cfg.CPUs != 1 || tc.cfg.Dir != "/"):
				t.Errorf("defaults not applied: %+v", tc.cfg)
			}
		})
	}
}

func TestQEMUCommandNice(t *testing.T) {
	if got := qemuCommand(context.Background(), "/usr/bin/qemu", []string{"-m", "64"}, 0).Args; !slices.Equal(got, []string{"/usr/bin/qemu", "-m", "64"}) {
		t.Errorf("nice 0: %q", got)
	}
	if got := qemuCommand(context.Background(), "/usr/bin/qemu", []string{"-m", "64"}, 10).Args; !slices.Equal(got, []string{"nice", "-n", "10", "/usr/bin/qemu", "-m", "64"}) {
		t.Errorf("nice 10: %q", got)
	}
}
