package event

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/podarmor/podarmor/enforcer/tables"
)

const mib = 1 << 20

// record is the n-th decision of writer w: a denied read through FromBPF, as the
// enforcer makes it, placed in a pod; w and n are in the pid and comm so that every line
// is recognisable.
func record(w, n int) Record {
	te := tables.Event{TGID: uint32(n), Container: 4026532300 + uint32(w), Action: tables.ActionEnforce,
		Hook: tables.HookFileOpen, Detail: uint32(tables.PermRead), Comm: comm(fmt.Sprintf("w%d", w))}
	r := FromBPF(te, "ap.shop.web", "builtin/disallow-read-serviceaccount-token",
		"/run/secrets/kubernetes.io/serviceaccount/token", netip.AddrPort{})
	r.Time = time.Date(2026, 11, 27, 10, 0, 0, n, time.UTC)
	r.Node, r.Namespace, r.Pod, r.ContainerName = "node-a", "shop", fmt.Sprintf("web-%d", w), "app"
	r.Container, r.Policy = strings.Repeat("ab", 32), "ArmorPolicy shop/web"
	return r
}

// logFile is one file of the log: the current one or a rotated one.
type logFile struct {
	name  string
	lines []string
	size  int64
}

// readLog reads the log's files oldest first (rotated files carry their time of
// rotation in their name; the current file is newest), gunzipping compressed ones.
func readLog(t *testing.T, dir string) []logFile {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range entries {
		if e.Name() != "events.jsonl" {
			names = append(names, e.Name())
		}
	}
	slices.Sort(names)
	names = append(names, "events.jsonl")
	var files []logFile
	for _, name := range names {
		data, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil {
			t.Fatal(err)
		}
		f := logFile{name: name, size: int64(len(data))}
		if strings.HasSuffix(name, ".gz") {
			zr, err := gzip.NewReader(bytes.NewReader(data))
			if err != nil {
				t.Fatalf("%s: %v", name, err)
			}
			if data, err = io.ReadAll(zr); err != nil {
				t.Fatalf("%s: %v", name, err)
			}
			f.size = int64(len(data))
		}
		if len(data) > 0 && data[len(data)-1] != '\n' {
			t.Errorf("%s ends in the middle of a line: %q", name, data[max(0, len(data)-40):])
		}
		sc := bufio.NewScanner(bytes.NewReader(data))
		sc.Buffer(nil, mib)
		for sc.Scan() {
			f.lines = append(f.lines, sc.Text())
		}
		files = append(files, f)
	}
	return files
}

// seen checks every line of files: whole JSON of a Record with exactly the fields of
// record(w, n), each written line at most once, each writer's lines in the order it
// wrote them. It returns the n of every line by writer.
func seen(t *testing.T, files []logFile, maxSize int64) map[int][]int {
	t.Helper()
	got := map[int][]int{}
	for _, f := range files {
		if f.size > maxSize {
			t.Errorf("%s: %d bytes, over the limit of %d", f.name, f.size, maxSize)
		}
		for i, line := range f.lines {
			dec := json.NewDecoder(strings.NewReader(line))
			dec.DisallowUnknownFields()
			var r Record
			if err := dec.Decode(&r); err != nil {
				t.Fatalf("%s line %d is not a whole record: %v\n%s", f.name, i+1, err, line)
			}
			var w int
			if _, err := fmt.Sscanf(r.Comm, "w%d", &w); err != nil {
				t.Fatalf("%s line %d: comm %q", f.name, i+1, r.Comm)
			}
			want, _ := json.Marshal(record(w, int(r.PID)))
			if line != string(want) {
				t.Fatalf("%s line %d:\n got %s\nwant %s", f.name, i+1, line, want)
			}
			if prev := got[w]; len(prev) > 0 && prev[len(prev)-1] >= int(r.PID) {
				t.Fatalf("%s line %d: writer %d's line %d after its line %d", f.name, i+1, w, r.PID, prev[len(prev)-1])
			}
			got[w] = append(got[w], int(r.PID))
		}
	}
	return got
}

// write writes n records from each of writers goroutines through one Writer.
func write(t *testing.T, log io.Writer, writers, n int) {
	t.Helper()
	ew := NewWriter(log)
	var wg sync.WaitGroup
	errs := make(chan error, writers)
	for w := range writers {
		wg.Go(func() {
			for i := range n {
				if err := ew.Write(record(w, i+1)); err != nil {
					errs <- err
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
}

// waitFiles waits until the log directory satisfies ok (lumberjack removes and
// compresses rotated files in the background).
func waitFiles(t *testing.T, dir, what string, ok func(names []string) bool) {
	t.Helper()
	var names []string
	for deadline := time.Now().Add(20 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		entries, err := os.ReadDir(dir)
		if err != nil {
			t.Fatal(err)
		}
		names = names[:0]
		for _, e := range entries {
			names = append(names, e.Name())
		}
		if ok(names) {
			return
		}
	}
	t.Fatalf("%s: the log directory holds %v", what, names)
}

func countIf(names []string, f func(string) bool) int {
	n := 0
	for _, s := range names {
		if f(s) {
			n++
		}
	}
	return n
}

func isBackup(s string) bool { return s != "events.jsonl" && strings.HasPrefix(s, "events-") }

func TestLogRotation(t *testing.T) {
	// A line is about 450 bytes: 9,000 of them are about 4 MiB, 3 rotations at 1 MiB.
	const writers, perWriter = 4, 2250
	tests := map[string]struct {
		cfg LogConfig
		// check gets the log's files after everything is written and closed.
		check func(t *testing.T, dir string, files []logFile, got map[int][]int)
	}{
		"every line is kept whole and once, in files no larger than the limit": {
			cfg: LogConfig{MaxSizeMB: 1},
			check: func(t *testing.T, dir string, files []logFile, got map[int][]int) {
				if len(files) < 4 {
					t.Errorf("%d files, want the current one and at least 3 rotated", len(files))
				}
				for w := range writers {
					if len(got[w]) != perWriter {
						t.Errorf("writer %d: %d of its %d lines in the log", w, len(got[w]), perWriter)
					}
				}
			},
		},
		"rotated files beyond MaxBackups are removed, the newest lines kept": {
			cfg: LogConfig{MaxSizeMB: 1, MaxBackups: 1},
			check: func(t *testing.T, dir string, files []logFile, got map[int][]int) {
				if len(files) != 2 {
					t.Fatalf("%d files, want the current one and 1 rotated", len(files))
				}
				// The rotated file kept is a full one.
				if files[0].size < mib-2048 {
					t.Errorf("rotated file %s: %d bytes, want about 1 MiB", files[0].name, files[0].size)
				}
				// What is kept of a writer's lines is its newest, without a gap (a
				// writer that finished early may have none left).
				for w := range writers {
					if ns := got[w]; len(ns) > 0 && (ns[len(ns)-1] != perWriter || ns[len(ns)-1]-ns[0]+1 != len(ns)) {
						t.Errorf("writer %d: kept lines %d..%d (%d of them), want its newest without a gap", w, ns[0], ns[len(ns)-1], len(ns))
					}
				}
			},
		},
		"rotated files are compressed, and nothing is lost": {
			cfg: LogConfig{MaxSizeMB: 1, Compress: true},
			check: func(t *testing.T, dir string, files []logFile, got map[int][]int) {
				for _, f := range files[:len(files)-1] {
					if !strings.HasSuffix(f.name, ".jsonl.gz") {
						t.Errorf("rotated file %s is not compressed", f.name)
					}
				}
				for w := range writers {
					if len(got[w]) != perWriter {
						t.Errorf("writer %d: %d of its %d lines in the log", w, len(got[w]), perWriter)
					}
				}
			},
		},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			dir := t.TempDir()
			tc.cfg.Path = filepath.Join(dir, "events.jsonl")
			log, err := OpenLog(tc.cfg, nil)
			if err != nil {
				t.Fatal(err)
			}
			write(t, log, writers, perWriter)
			if err := log.Close(); err != nil {
				t.Fatal(err)
			}
			if tc.cfg.MaxBackups > 0 {
				waitFiles(t, dir, "old files removed", func(names []string) bool {
					return countIf(names, isBackup) <= tc.cfg.MaxBackups
				})
			}
			if tc.cfg.Compress {
				waitFiles(t, dir, "rotated files compressed", func(names []string) bool {
					return countIf(names, func(s string) bool { return isBackup(s) && !strings.HasSuffix(s, ".gz") }) == 0
				})
			}
			files := readLog(t, dir)
			tc.check(t, dir, files, seen(t, files, int64(tc.cfg.MaxSizeMB)*mib))
		})
	}
}

func TestLogAppendsAcrossRestarts(t *testing.T) {
	path := filepath.Join(t.TempDir(), "events.jsonl")
	for w := range 2 {
		log, err := OpenLog(LogConfig{Path: path, MaxSizeMB: 1}, nil)
		if err != nil {
			t.Fatal(err)
		}
		if err := NewWriter(log).Write(record(w, 1)); err != nil {
			t.Fatal(err)
		}
		if err := log.Close(); err != nil {
			t.Fatal(err)
		}
	}
	got := seen(t, readLog(t, filepath.Dir(path)), mib)
	if len(got[0]) != 1 || len(got[1]) != 1 {
		t.Errorf("lines by writer %v, want one from each run", got)
	}
}

func TestLogStdout(t *testing.T) {
	var buf bytes.Buffer
	log, err := OpenLog(LogConfig{Path: Stdout, MaxSizeMB: DefaultMaxSizeMB}, &buf)
	if err != nil {
		t.Fatal(err)
	}
	if err := NewWriter(log).Write(record(0, 1)); err != nil {
		t.Fatal(err)
	}
	if err := log.Close(); err != nil {
		t.Fatal(err)
	}
	want, _ := json.Marshal(record(0, 1))
	if buf.String() != string(want)+"\n" {
		t.Errorf("stdout got %q, want %s", buf.String(), want)
	}
}

func TestLogConfigIsChecked(t *testing.T) {
	dir := t.TempDir()
	notDir := filepath.Join(dir, "file")
	if err := os.WriteFile(notDir, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	ok := LogConfig{Path: filepath.Join(dir, "events.jsonl"), MaxSizeMB: 1}
	tests := map[string]struct {
		change func(c *LogConfig)
		field  string // the SettingError's, or "" for an error of opening
	}{
		"a relative path":            {func(c *LogConfig) { c.Path = "events.jsonl" }, "Path"},
		"a directory":                {func(c *LogConfig) { c.Path = dir }, "Path"},
		"a size of 0":                {func(c *LogConfig) { c.MaxSizeMB = 0 }, "MaxSizeMB"},
		"a negative size":            {func(c *LogConfig) { c.MaxSizeMB = -1 }, "MaxSizeMB"},
		"a negative backup count":    {func(c *LogConfig) { c.MaxBackups = -1 }, "MaxBackups"},
		"a negative age":             {func(c *LogConfig) { c.MaxAgeDays = -1 }, "MaxAgeDays"},
		"stdout with a bad size":     {func(c *LogConfig) { c.Path, c.MaxSizeMB = Stdout, -5 }, "MaxSizeMB"},
		"a file that cannot be made": {func(c *LogConfig) { c.Path = filepath.Join(notDir, "events.jsonl") }, ""},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			c := ok
			tc.change(&c)
			_, err := OpenLog(c, io.Discard)
			var se *SettingError
			switch {
			case err == nil:
				t.Fatalf("OpenLog(%+v) succeeded", c)
			case tc.field == "" && errors.As(err, &se):
				t.Errorf("got the setting error %v, want one of opening", err)
			case tc.field == "" && !strings.Contains(err.Error(), c.Path):
				t.Errorf("error %q does not name %s", err, c.Path)
			case tc.field != "" && (!errors.As(err, &se) || se.Field != tc.field):
				t.Errorf("error %v, want a SettingError of %s", err, tc.field)
			}
		})
	}
	log, err := OpenLog(ok, io.Discard)
	if err != nil {
		t.Fatalf("a good configuration: %v", err)
	}
	log.Close()
	if fi, err := os.Stat(ok.Path); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("the log file after OpenLog: %v, %v; want it created, mode 0600", fi, err)
	}
}
