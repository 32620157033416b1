package main

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/yaml"

	"github.com/podarmor/podarmor/deploy/helm"
	"github.com/podarmor/podarmor/enforcer/event"
)

// run runs a subcommand as main does, with args, and returns its exit code and what it
// wrote to stderr.
func run(t *testing.T, name string, args ...string) (int, string) {
	t.Helper()
	sc := subcommands[name]
	v, rest, err := loadConfig(name, sc, args)
	if err != nil {
		t.Fatalf("flags %v: %v", args, err)
	}
	stderr, err := os.Create(filepath.Join(t.TempDir(), "stderr"))
	if err != nil {
		t.Fatal(err)
	}
	saved := os.Stderr
	os.Stderr = stderr
	code := sc.run(t.Context(), v, rest)
	os.Stderr = saved
	out, err := os.ReadFile(stderr.Name())
	if err != nil {
		t.Fatal(err)
	}
	return code, string(out)
}

func TestEventLogSettingsFailAtStart(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "events.jsonl")
	notDir := filepath.Join(dir, "plain")
	if err := os.WriteFile(notDir, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	config := filepath.Join(dir, "config.yaml")
	if err := os.WriteFile(config, []byte("events: "+file+"\nevents-max-backups: -3\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	tests := map[string]struct {
		args []string
		env  map[string]string
		code int
		want string // in the error
	}{
		"a relative path":           {args: []string{"--events=events.jsonl"}, code: 2, want: "--events events.jsonl: want an absolute path"},
		"a directory":               {args: []string{"--events=" + dir}, code: 2, want: "--events " + dir + ": is a directory"},
		"a size of 0":               {args: []string{"--events=" + file, "--events-max-size-mb=0"}, code: 2, want: "--events-max-size-mb 0"},
		"a negative size on stdout": {args: []string{"--events-max-size-mb=-1"}, code: 2, want: "--events-max-size-mb -1"},
		"a negative backup count":   {args: []string{"--events=" + file, "--events-max-backups=-1"}, code: 2, want: "--events-max-backups -1"},
		"a negative age":            {args: []string{"--events=" + file, "--events-max-age-days=-7"}, code: 2, want: "--events-max-age-days -7"},
		"a negative age from the environment": {
			args: []string{"--events=" + file}, env: map[string]string{"PODARMOR_EVENTS_MAX_AGE_DAYS": "-2"},
			code: 2, want: "--events-max-age-days -2",
		},
		"a negative backup count from the configuration file": {args: []string{"--config=" + config}, code: 2, want: "--events-max-backups -3"},
		"a file that cannot be created": {
			args: []string{"--events=" + filepath.Join(notDir, "events.jsonl")}, code: 1, want: filepath.Join(notDir, "events.jsonl"),
		},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			for k, v := range tc.env {
				t.Setenv(k, v)
			}
			for _, sub := range []string{"standalone", "kubernetes"} {
				// Nothing else is configured: a subcommand that went past the event
				// log would fail later, on something else, or run.
				args := append([]string{"--socket=" + filepath.Join(t.TempDir(), "s.sock")}, tc.args...)
				code, stderr := run(t, sub, args...)
				if code != tc.code || !strings.Contains(stderr, tc.want) {
					t.Errorf("%s %v: exit %d, stderr %q; want exit %d naming %q", sub, tc.args, code, stderr, tc.code, tc.want)
				}
			}
		})
	}
}

func TestEventLogSettings(t *testing.T) {
	file := filepath.Join(t.TempDir(), "events.jsonl")
	tests := map[string]struct {
		args []string
		want event.LogConfig
	}{
		"the defaults: stdout": {
			want: event.LogConfig{Path: event.Stdout, MaxSizeMB: event.DefaultMaxSizeMB, MaxBackups: event.DefaultMaxBackups},
		},
		"a file, rotated as asked": {
			args: []string{"--events=" + file, "--events-max-size-mb=10", "--events-max-backups=0", "--events-max-age-days=30", "--events-compress"},
			want: event.LogConfig{Path: file, MaxSizeMB: 10, MaxBackups: 0, MaxAgeDays: 30, Compress: true},
		},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			v, _, err := loadConfig("kubernetes", subcommands["kubernetes"], tc.args)
			if err != nil {
				t.Fatal(err)
			}
			var c kubernetesConfig
			if err := v.Unmarshal(&c); err != nil {
				t.Fatal(err)
			}
			got, err := c.eventLog()
			if err != nil || got != tc.want {
				t.Errorf("event log %+v, %v; want %+v", got, err, tc.want)
			}
		})
	}
}

// TestChartArguments parses the arguments the Helm chart gives the enforcer with the
// event log in a file and BPF statistics on: every flag exists, and the settings arrive.
func TestChartArguments(t *testing.T) {
	root, err := filepath.Abs("../../..")
	if err != nil {
		t.Fatal(err)
	}
	bin, err := helm.HelmBinary(t.Context(), root)
	if err != nil {
		t.Fatal(err)
	}
	out, err := helm.Render(t.Context(), helm.RenderOptions{Helm: bin, Root: root, Set: []string{
		"enforcer.eventLog.destination=file", "enforcer.eventLog.hostPath=/var/log/pa", "enforcer.eventLog.maxSizeMB=7",
		"enforcer.eventLog.maxBackups=3", "enforcer.eventLog.maxAgeDays=14", "enforcer.eventLog.compress=true",
		"enforcer.bpfStats=true",
	}})
	if err != nil {
		t.Fatal(err)
	}
	var args []string
	for _, doc := range helm.Documents(out) {
		var ds struct {
			Kind string
			Spec struct{ Template struct{ Spec corev1.PodSpec } }
		}
		if err := yaml.Unmarshal(doc, &ds); err != nil {
			t.Fatal(err)
		}
		if ds.Kind == "DaemonSet" {
			c := ds.Spec.Template.Spec.Containers[0]
			if !slices.Equal(c.Command, []string{"/usr/local/bin/podarmor-enforcer", "kubernetes"}) {
				t.Fatalf("the DaemonSet runs %v, want podarmor-enforcer kubernetes", c.Command)
			}
			args = c.Args
		}
	}
	v, _, err := loadConfig("kubernetes", subcommands["kubernetes"], args)
	if err != nil {
		t.Fatalf("the chart's arguments %v: %v", args, err)
	}
	var c kubernetesConfig
	if err := v.Unmarshal(&c); err != nil {
		t.Fatal(err)
	}
	want := event.LogConfig{Path: "/var/log/pa/events.jsonl", MaxSizeMB: 7, MaxBackups: 3, MaxAgeDays: 14, Compress: true}
	if got, err := c.eventLog(); err != nil || got != want {
		t.Errorf("event log %+v, %v; want %+v", got, err, want)
	}
	if !c.BPFStats {
		t.Error("--bpf-stats is off")
	}
}
