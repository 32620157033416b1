//go:build vmguest

package bpf

// Faults of the enforcer process (issue 8): SIGKILLed over and over while a sandbox
// retries a denied read, and killed and restarted while containers are created through
// the OCI hook. The enforcer is this test binary in helper mode "fault-daemon": a
// process of its own, started as a restarted DaemonSet pod starts, with the pieces the
// real enforcer has: it loads (adopting the pinned state), installs profile "killed",
// registers late the containers the hook let run while it was away
// (registrar.AdoptUnprotected), reconciles the registrations it found in the kernel with
// the running containers it is told of (registrar.Reconcile, as the Kubernetes mode does
// with the runtime's list), and only then serves the hook socket with the registrar.

import (
	"bufio"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/podarmor/podarmor/enforcer/hook"
	"github.com/podarmor/podarmor/enforcer/registrar"
	"github.com/podarmor/podarmor/enforcer/tables"
)

// faultSecret is what /killed/f holds in these tests: a container that prints it read it.
const faultSecret = "the-killed-secret"

// readyTimeout bounds an enforcer's start, from its process to its hook socket. A load
// takes 12-64 s under emulation; in make test the suite's VMs run niced next to the
// local cluster's, and one load took over 2 minutes.
const readyTimeout = 8 * time.Minute

// faultOp runs the helper operations of this file.
func faultOp(a []string) (err error, ok bool) {
	switch a[0] {
	case "fault-daemon": // fault-daemon PINDIR SOCKET UNPROTECTED-DIR ARCHIVE-DIR JOURNAL RUNNING
		if len(a) != 7 {
			return fmt.Errorf("fault-daemon: %d arguments, want 6", len(a)-1), true
		}
		return faultDaemon(faultDaemonConfig{pinDir: a[1], socket: a[2], unprotected: a[3], archive: a[4], journal: a[5], running: a[6]}), true
	case "read-count": // read-count STOPFILE PATH COUNTFILE: read PATH until STOPFILE exists
		return readCount(a[1], a[2], a[3]), true
	}
	return nil, false
}

// readCount reads path until stop exists, counting reads allowed and refused, and keeps
// the counts in countFile (rewritten in place after every read, so that the test can
// read them at any moment) and, at the end, on stdout.
func readCount(stop, path, countFile string) error {
	f, err := os.OpenFile(countFile, os.O_RDWR|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		return err
	}
	defer f.Close()
	var ok, eperm int
	for {
		if _, err := os.Stat(stop); err == nil {
			break
		}
		_, err := os.ReadFile(path)
		switch {
		case err == nil:
			ok++
		case errors.Is(err, syscall.EPERM):
			eperm++
		default:
			return err
		}
		if _, err := f.WriteAt(fmt.Appendf(nil, "%010d %010d\n", ok, eperm), 0); err != nil {
			return err
		}
		// Under emulation on one vCPU a tighter loop slows the enforcer's load fourfold.
		time.Sleep(20 * time.Millisecond)
	}
	fmt.Printf("ok=%d eperm=%d\n", ok, eperm)
	return nil
}

// readCounts reads a read-count loop's counts from its file in the containers' root.
// The loop rewrites the file while it is read: a torn read is retried.
func readCounts(t *testing.T, countFile string) (ok, eperm int) {
	t.Helper()
	var last string
	for range 100 {
		b, err := os.ReadFile(inRoot(countFile))
		if errors.Is(err, os.ErrNotExist) || err == nil && len(b) == 0 {
			return 0, 0 // the loop has not counted yet
		}
		if err != nil {
			t.Fatalf("read counts: %v", err)
		}
		// two reads that agree and parse are not torn
		if s := string(b); s == last {
			if _, err := fmt.Sscanf(s, "%d %d", &ok, &eperm); err == nil {
				return ok, eperm
			}
		} else {
			last = s
		}
	}
	t.Fatalf("counts in %s: unreadable: %q", countFile, last)
	return 0, 0
}

type faultDaemonConfig struct {
	pinDir, socket string
	// unprotected is the hook's directory of containers it let run unregistered;
	// records are moved to unprotected+".staging" and linked into archive before the
	// registrar registers them late and removes them, so that the test knows every
	// record the hook ever wrote.
	unprotected, archive string
	// journal is a file to which every registration is appended: "reg NS" before the
	// kernel's table is written, "done CONTAINER NS" once the hook's request succeeded.
	journal string
	// running is a JSON file of []registrar.Running, "" for none.
	running string
}

// faultReport is what a fault daemon prints after "ready ".
type faultReport struct {
	// LoadMillis is how long Load, SetProfile, the late registrations and the
	// reconciliation took.
	LoadMillis int64 `json:"loadMillis"`
	// Slot is profile "killed"'s slot.
	Slot uint32 `json:"slot"`
	// Unprotected are the records of the hook registered late (or dropped).
	Unprotected []string `json:"unprotected"`
	// Adopted, Late, Failed, Removed and Unreadable are the reconciliation's.
	Adopted    []string          `json:"adopted"`
	Late       []string          `json:"late"`
	Failed     map[string]string `json:"failed"`
	Removed    []uint32          `json:"removed"`
	Unreadable int               `json:"unreadable"`
	// Registrations is the kernel's table once the daemon is ready.
	Registrations map[uint32]tables.Registration `json:"registrations"`
	// Orphans are the rule bodies that had entries in the pinned maps when the daemon
	// had loaded, though no profile used them: left by an enforcer killed while it
	// wrote a body, or before it cleaned a replaced one.
	Orphans []uint32 `json:"orphans"`
}

// orphanBodies lists the rule bodies that have entries in the maps but that no adopted
// profile uses.
func orphanBodies(e *Enforcer) ([]uint32, error) {
	e.mu.Lock()
	used := map[uint32]bool{}
	for _, ps := range e.profiles {
		used[ps.body] = true
	}
	n := uint32(len(e.bodies))
	e.mu.Unlock()
	found := map[uint32]bool{}
	for b := uint32(1); b < n; b++ {
		var pb tables.ProfileBody
		ok, err := e.get("profile_bodies", b, &pb)
		if err != nil {
			return nil, err
		}
		if ok && pb != (tables.ProfileBody{}) && !used[b] {
			found[b] = true
		}
	}
	for _, name := range []string{"dfa_accept", "dfa_subtree", "dfa_mount", "socket_rules", "mount_fstype", "egress4", "egress6"} {
		ks, err := keys(e.maps[name])
		if err != nil {
			return nil, err
		}
		off := 0
		if name == "egress4" || name == "egress6" {
			off = 4 // after the prefix length
		}
		for _, k := range ks {
			if b := binary.LittleEndian.Uint32(k[off:]); !used[b] {
				found[b] = true
			}
		}
	}
	return slices.Sorted(maps.Keys(found)), nil
}

// journaledRegistry appends every registration to the journal before it is made.
type journaledRegistry struct {
	*Enforcer
	journal *os.File
}

func (r journaledRegistry) Register(mntns uint32, id string, late bool) error {
	// One write(2): once it returns, a SIGKILL cannot lose the line.
	if _, err := fmt.Fprintf(r.journal, "reg %d\n", mntns); err != nil {
		return err
	}
	return r.Enforcer.Register(mntns, id, late)
}

// faultDaemon is the enforcer of the fault tests; see the top of the file.
func faultDaemon(cfg faultDaemonConfig) error {
	start := time.Now()
	ctx := context.Background()
	log := slog.New(slog.DiscardHandler)
	e, err := Load(Options{PinDir: cfg.pinDir, Logger: log})
	if err != nil {
		return err
	}
	rep := faultReport{Failed: map[string]string{}}
	if rep.Orphans, err = orphanBodies(e); err != nil {
		return err
	}
	if err := e.SetProfile(killedProfile()); err != nil {
		return err
	}
	journal, err := os.OpenFile(cfg.journal, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o644)
	if err != nil {
		return err
	}
	reg, err := registrar.New(registrar.Config{
		Registry: journaledRegistry{e, journal},
		Resolve: func(_ context.Context, req hook.Request) (string, error) {
			return req.Annotations[hook.AnnotationProfile], nil
		},
		Profiles: func(id string) (bool, bool, error) { return id == "killed", true, nil },
		Logger:   log,
	})
	if err != nil {
		return err
	}
	if rep.Unprotected, err = stageUnprotected(cfg.unprotected, cfg.archive); err != nil {
		return err
	}
	reg.AdoptUnprotected(ctx, cfg.unprotected+".staging")
	var running []registrar.Running
	if cfg.running != "" {
		b, err := os.ReadFile(cfg.running)
		if err != nil {
			return err
		}
		if err := json.Unmarshal(b, &running); err != nil {
			return fmt.Errorf("running containers %s: %w", cfg.running, err)
		}
	}
	res, err := reg.Reconcile(ctx, running)
	if err != nil {
		return err
	}
	rep.Adopted, rep.Late, rep.Removed, rep.Unreadable = res.Adopted, res.Registered, res.Removed, res.Unreadable
	for id, err := range res.Failed {
		rep.Failed[id] = err.Error()
	}
	rep.Slot, _ = e.Slot("killed")
	if rep.Registrations, err = e.Registered(); err != nil {
		return err
	}
	srv, err := hook.Listen(hook.ServerConfig{Socket: cfg.socket, Logger: log,
		Handler: hook.HandlerFunc(func(ctx context.Context, req hook.Request) (hook.Response, error) {
			resp, err := reg.Handle(ctx, req)
			if err == nil && req.Op == hook.OpRegister && resp.MountNamespace != 0 {
				fmt.Fprintf(journal, "done %s %d\n", req.ContainerID, resp.MountNamespace)
			}
			return resp, err
		})})
	if err != nil {
		return err
	}
	rep.LoadMillis = time.Since(start).Milliseconds()
	b, err := json.Marshal(rep)
	if err != nil {
		return err
	}
	fmt.Printf("ready %s\n", b)
	return srv.Serve(ctx)
}

// stageUnprotected moves the hook's records from dir to dir.staging, where the
// registrar takes them, after linking each into archive. Records left in staging by a
// daemon killed before it registered them stay there for this one.
func stageUnprotected(dir, archive string) ([]string, error) {
	staging := dir + ".staging"
	for _, d := range []string{dir, staging, archive} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			return nil, err
		}
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, err
	}
	for _, en := range entries {
		name := en.Name()
		if !strings.HasSuffix(name, ".json") || strings.HasPrefix(name, ".") {
			continue
		}
		if err := os.Link(filepath.Join(dir, name), filepath.Join(archive, name)); err != nil && !errors.Is(err, os.ErrExist) {
			return nil, err
		}
		if err := os.Rename(filepath.Join(dir, name), filepath.Join(staging, name)); err != nil {
			return nil, err
		}
	}
	staged, err := os.ReadDir(staging)
	if err != nil {
		return nil, err
	}
	var ids []string
	for _, en := range staged {
		ids = append(ids, strings.TrimSuffix(en.Name(), ".json"))
	}
	return ids, nil
}

// faultEnforcer starts, kills and restarts fault daemons. One goroutine uses it.
type faultEnforcer struct {
	cfg  faultDaemonConfig
	self string
	cmd  *exec.Cmd
	// lines are the current daemon's stdout lines; closed at its end.
	lines   chan string
	started time.Time
	ready   bool
	report  faultReport
	// starts, kills and killedReady count what happened; loadTime is the last time a
	// daemon took from its start to ready.
	starts, kills, killedReady int
	loadTime                   time.Duration
	// maxOrphans is the most orphaned rule bodies a daemon reported.
	maxOrphans int
}

func newFaultEnforcer(t *testing.T, name string) *faultEnforcer {
	t.Helper()
	containerRoot(t)
	dir := filepath.Join(ctrDir, name)
	os.RemoveAll(dir)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	f := &faultEnforcer{self: self(t), cfg: faultDaemonConfig{
		pinDir:      "/sys/fs/bpf/podarmor-" + name,
		socket:      filepath.Join(dir, "enforcer.sock"),
		unprotected: filepath.Join(dir, "unprotected"),
		archive:     filepath.Join(dir, "archive"),
		journal:     filepath.Join(dir, "journal"),
	}}
	os.RemoveAll(f.cfg.pinDir)
	t.Cleanup(func() {
		f.kill()
		// The links go with the pins: the programs of these daemons detach.
		if err := os.RemoveAll(f.cfg.pinDir); err != nil {
			t.Errorf("remove %s: %v", f.cfg.pinDir, err)
		}
	})
	return f
}

// start starts a daemon; the previous one must be dead.
func (f *faultEnforcer) start() error {
	cmd := exec.Command(f.self, "fault-daemon", f.cfg.pinDir, f.cfg.socket, f.cfg.unprotected, f.cfg.archive, f.cfg.journal, f.cfg.running)
	cmd.Env = append(os.Environ(), "PODARMOR_HELPER=1")
	cmd.Stderr = os.Stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		return err
	}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start the enforcer: %w", err)
	}
	lines := make(chan string, 4)
	go func() {
		sc := bufio.NewScanner(out)
		sc.Buffer(make([]byte, 64<<10), 4<<20)
		for sc.Scan() {
			lines <- sc.Text()
		}
		io.Copy(io.Discard, out)
		close(lines)
	}()
	f.cmd, f.lines, f.started, f.ready = cmd, lines, time.Now(), false
	f.starts++
	return nil
}

// waitReady waits for the current daemon to be ready, and keeps its report.
func (f *faultEnforcer) waitReady(timeout time.Duration) error {
	if f.ready {
		return nil
	}
	select {
	case line, ok := <-f.lines:
		rest, isReady := strings.CutPrefix(line, "ready ")
		if !ok || !isReady {
			return fmt.Errorf("the enforcer did not start: %q", line)
		}
		f.report = faultReport{}
		if err := json.Unmarshal([]byte(rest), &f.report); err != nil {
			return fmt.Errorf("the enforcer's report %q: %w", rest, err)
		}
		f.ready, f.loadTime = true, time.Since(f.started)
		f.maxOrphans = max(f.maxOrphans, len(f.report.Orphans))
		return nil
	case <-time.After(timeout):
		return fmt.Errorf("the enforcer was not ready within %s", timeout)
	}
}

// kill SIGKILLs the current daemon, if any, and waits until the process is gone.
func (f *faultEnforcer) kill() {
	if f.cmd == nil {
		return
	}
	f.cmd.Process.Kill()
	// Whether it was ready is in what it wrote before it died: read to the end (before
	// Wait, which closes the pipe).
	for line := range f.lines {
		if rest, ok := strings.CutPrefix(line, "ready "); ok && json.Unmarshal([]byte(rest), &f.report) == nil {
			f.ready = true
		}
	}
	f.cmd.Wait()
	f.cmd = nil
	f.kills++
	if f.ready {
		f.killedReady++
	}
}

// killAfter kills the current daemon at a point chosen by phase: soon after its start,
// during its load (a random point of the last load time), or a random while after it
// is ready (up to steady).
func (f *faultEnforcer) killAfter(phase int, steady time.Duration) error {
	switch phase % 3 {
	case 0:
		time.Sleep(time.Until(f.started.Add(rand.N(30 * time.Millisecond))))
	case 1:
		load := max(f.loadTime, 100*time.Millisecond)
		time.Sleep(time.Until(f.started.Add(rand.N(load))))
	default:
		if err := f.waitReady(readyTimeout); err != nil {
			return err
		}
		time.Sleep(rand.N(steady))
	}
	f.kill()
	return nil
}

// TestEnforcerKilledInALoop SIGKILLs the enforcer 6 times while a container it
// registered through the OCI hook reads a denied file in a loop, twice at each of three
// points: soon after the enforcer's start, during its load (adopting the pinned state,
// replacing the programs, rewriting the profile, reconciling) and while it serves, each
// time with a pause before the next starts. Not one read may succeed, reads must have
// been refused while no enforcer process existed, and the last enforcer must have
// adopted the container's registration (not registered it anew) and confine a new
// container.
func TestEnforcerKilledInALoop(t *testing.T) {
	closeSandboxes()
	write(t, "/killed/f", faultSecret)
	f := newFaultEnforcer(t, "killloop")
	if err := f.start(); err != nil {
		t.Fatal(err)
	}
	if err := f.waitReady(readyTimeout); err != nil {
		t.Fatal(err)
	}
	t.Logf("first enforcer ready in %s", f.loadTime.Round(time.Millisecond))

	const countFile = "/killloop/count"
	mkdirs(t, "/killloop")
	os.Remove(inRoot("/killloop/stop"))
	c := startContainer(t, box{profile: "killed", socket: f.cfg.socket}, "read-count", "/killloop/stop", "/killed/f", countFile)
	stopped := false
	defer func() {
		if !stopped {
			write(t, "/killloop/stop", "")
			<-c.done
		}
	}()
	pid := c.pid(t)
	ns, err := hook.MountNamespace(fmt.Sprintf("/proc/%d/ns/mnt", pid))
	must(t, err)
	// The running containers the later enforcers reconcile with, as a runtime lists them.
	f.cfg.running = filepath.Join(filepath.Dir(f.cfg.socket), "running.json")
	running, err := json.Marshal([]registrar.Running{{Request: hook.Request{ContainerID: c.id, PID: pid,
		Annotations: map[string]string{hook.AnnotationProfile: "killed"}}}})
	must(t, err)
	must(t, os.WriteFile(f.cfg.running, running, 0o644))
	for {
		if _, eperm := readCounts(t, countFile); eperm > 0 {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}

	const kills = 6
	var gapReads int
	var gapTime time.Duration
	start := time.Now()
	for i := range kills {
		must(t, f.killAfter(i, 500*time.Millisecond))
		// No enforcer process exists now, until the next starts.
		_, before := readCounts(t, countFile)
		gap := time.Duration(0)
		if i%2 == 0 {
			gap = rand.N(300 * time.Millisecond)
		}
		time.Sleep(gap)
		_, after := readCounts(t, countFile)
		gapReads += after - before
		gapTime += gap
		must(t, f.start())
		if ok, _ := readCounts(t, countFile); ok != 0 {
			t.Fatalf("after kill %d: %d reads succeeded", i+1, ok)
		}
	}
	must(t, f.waitReady(readyTimeout))
	ok, eperm := readCounts(t, countFile)
	t.Logf("%d SIGKILLs in %s (%d of a serving enforcer, %d before it was ready; the last load took %s): reads so far %d allowed, %d refused; %d refused in %s without an enforcer process",
		f.kills, time.Since(start).Round(100*time.Millisecond), f.killedReady, f.kills-f.killedReady, f.loadTime.Round(time.Millisecond), ok, eperm, gapReads, gapTime.Round(time.Millisecond))
	if f.killedReady == 0 || f.killedReady == f.kills {
		t.Errorf("enforcers killed while serving: %d of %d; want kills both before and after ready", f.killedReady, f.kills)
	}
	if gapReads == 0 {
		t.Errorf("no read was tried while no enforcer process existed (%s in all)", gapTime)
	}

	rep := f.report
	t.Logf("rule bodies left orphaned in the maps (by an enforcer killed while writing one or before cleaning a replaced one), as the last enforcer found them: %v; at most %d at a start",
		rep.Orphans, f.maxOrphans)
	if len(rep.Adopted) != 1 || rep.Adopted[0] != c.id || len(rep.Late) != 0 || len(rep.Failed) != 0 {
		t.Errorf("the last enforcer's reconciliation: adopted %v, registered late %v, failed %v; want container %s adopted, nothing else",
			rep.Adopted, rep.Late, rep.Failed, c.id)
	}
	if r, found := rep.Registrations[ns]; !found || r.ID.Profile != rep.Slot || r.ID.Container != ns || r.Armed != 1 {
		t.Errorf("the container's registration (mount namespace %d) in the last enforcer's table: %+v (found %v), want profile slot %d, armed",
			ns, r, found, rep.Slot)
	}
	denied(t, "a new container registered by the last enforcer", runContainer(t, box{profile: "killed", socket: f.cfg.socket}, "read", "/killed/f"))

	write(t, "/killloop/stop", "")
	stopped = true
	o := c.wait(t)
	if _, err := fmt.Sscanf(o.out, "ok=%d eperm=%d", &ok, &eperm); err != nil || o.code != 0 {
		t.Fatalf("read loop: %v", o)
	}
	t.Logf("reads in all: %d allowed, %d refused", ok, eperm)
	if ok != 0 || eperm == 0 {
		t.Fatalf("reads: %d allowed, %d refused; want none allowed", ok, eperm)
	}
}

// containerResult is how a container of TestEnforcerRestartedWhileContainersAreCreated
// ended.
type containerResult int

const (
	// refusedByHook: runc failed the container at its hook, the enforcer unavailable.
	refusedByHook containerResult = iota
	// deniedFirst: the container ran and its first operation was refused.
	deniedFirst
	// ranUnconfined: the container ran and read the file.
	ranUnconfined
)

// TestEnforcerRestartedWhileContainersAreCreated creates containers one after another,
// each of whose first instruction is a denied read (busybox cat), while another
// goroutine kills the enforcer (during its load, or after 4-12 s of serving) and restarts
// it after a pause. With the hook set to refuse, every
// container must either be refused by the hook (runc fails with the hook's error) or run
// with its read denied. With the hook set to allow, a container may also run unconfined,
// but only if the hook recorded it as unprotected; a recorded container whose read was
// denied must have had a registration of its mount namespace made (by an enforcer killed
// before it answered, or left by an earlier container whose namespace number it got). A
// container started while the enforcer is down, and still running when it is back, is
// registered late. Both outcomes a setting allows must occur (refused and denied, or
// unconfined and denied): when they have not after the planned number of containers,
// more are started, up to three times as many. At the end a restarted enforcer's
// reconciliation leaves no registration behind.
func TestEnforcerRestartedWhileContainersAreCreated(t *testing.T) {
	closeSandboxes()
	write(t, "/killed/f", faultSecret)
	for _, tc := range []struct {
		on hook.OnUnavailable
		n  int
	}{{hook.Refuse, 16}, {hook.Allow, 12}} {
		t.Run(string(tc.on), func(t *testing.T) {
			f := newFaultEnforcer(t, "restarts-"+string(tc.on))
			var late *container
			const lateCount = "/restarts/late-count"
			if tc.on == hook.Allow {
				// A container started while no enforcer exists: the hook lets it run.
				mkdirs(t, "/restarts")
				os.Remove(inRoot("/restarts/stop"))
				late = startContainer(t, box{profile: "killed", socket: f.cfg.socket, onUnavailable: hook.Allow, unprotected: f.cfg.unprotected},
					"read-count", "/restarts/stop", "/killed/f", lateCount)
				defer func() {
					write(t, "/restarts/stop", "")
					<-late.done
				}()
				late.pid(t)
				for {
					if ok, _ := readCounts(t, lateCount); ok > 0 {
						break
					}
					time.Sleep(20 * time.Millisecond)
				}
			}
			must(t, f.start())
			must(t, f.waitReady(readyTimeout))
			var lateOK, lateEPERM int
			if late != nil {
				if got := f.report.Unprotected; len(got) != 1 || got[0] != late.id {
					t.Fatalf("unprotected records the enforcer found: %v, want [%s]", got, late.id)
				}
				lateOK, lateEPERM = readCounts(t, lateCount)
				t.Logf("a container started without an enforcer read the file %d times before the enforcer registered it late", lateOK)
			}

			// The killer: kill, pause, restart, until told to stop; then the last one
			// is left ready.
			stop := make(chan struct{})
			killerDone := make(chan error, 1)
			go func() {
				for i := 0; ; i++ {
					select {
					case <-stop:
						killerDone <- f.waitReady(readyTimeout)
						return
					default:
					}
					// A load takes 15 s or more under emulation: most enforcers serve
					// for 4-12 s before they are killed (long enough for a container
					// start on a busy machine), every third dies loading.
					var err error
					if i%3 == 2 {
						err = f.killAfter(1, 0)
					} else if err = f.waitReady(readyTimeout); err == nil {
						time.Sleep(4*time.Second + rand.N(8*time.Second))
						f.kill()
					}
					if err != nil {
						killerDone <- err
						return
					}
					time.Sleep(200*time.Millisecond + rand.N(1500*time.Millisecond))
					if err := f.start(); err != nil {
						killerDone <- err
						return
					}
				}
			}()

			cat := box{profile: "killed", socket: f.cfg.socket, podLike: true, args: []string{"/bin/busybox", "cat", "/killed/f"},
				onUnavailable: tc.on, unprotected: f.cfg.unprotected}
			results := map[string]containerResult{}
			count := map[containerResult]int{}
			var order []string
			start := time.Now()
			var failed error
			// Both outcomes the setting allows must occur, or the test checked only
			// one: which occur depends on when the kills fall, so after tc.n containers
			// more are started (up to 3 tc.n) until both have.
			both := func() bool {
				if tc.on == hook.Refuse {
					return count[refusedByHook] > 0 && count[deniedFirst] > 0
				}
				return count[ranUnconfined] > 0 && count[deniedFirst] > 0
			}
			for i := 0; i < 3*tc.n && (i < tc.n || !both()); i++ {
				c := startContainer(t, cat)
				o, err := c.result()
				order = append(order, c.id)
				switch {
				case err != nil:
					failed = fmt.Errorf("container %s: %v", c.id, err)
				case o.code == 0 && strings.Contains(o.out, faultSecret):
					results[c.id] = ranUnconfined
				case o.code == 1 && strings.Contains(o.out, "Operation not permitted") && !strings.Contains(o.out, faultSecret):
					results[c.id] = deniedFirst
				case o.code != 0 && strings.Contains(o.out, "podarmor: container "+c.id+" not started") &&
					strings.Contains(o.out, "enforcer at "+f.cfg.socket+" is unavailable"):
					results[c.id] = refusedByHook
				default:
					failed = fmt.Errorf("container %s: want its read denied or runc to fail at the hook, got %v", c.id, o)
				}
				if failed != nil {
					break
				}
				count[results[c.id]]++
			}
			took := time.Since(start)
			close(stop)
			if err := <-killerDone; err != nil {
				t.Fatalf("the enforcer: %v", err)
			}
			if failed != nil {
				t.Fatal(failed)
			}
			t.Logf("%d containers in %s while the enforcer was killed %d times (%d of them serving) and restarted: %d refused by the hook, %d ran with their read denied, %d ran unconfined",
				len(order), took.Round(100*time.Millisecond), f.kills, f.killedReady, count[refusedByHook], count[deniedFirst], count[ranUnconfined])

			recorded := unprotectedRecords(t, f)
			if late != nil {
				if _, ok := recorded[late.id]; !ok {
					t.Errorf("the container started without an enforcer was not recorded as unprotected")
				}
				delete(recorded, late.id)
			}
			switch tc.on {
			case hook.Refuse:
				if count[ranUnconfined] != 0 {
					var which []string
					for _, id := range order {
						if results[id] == ranUnconfined {
							which = append(which, id)
						}
					}
					t.Errorf("HOLE: containers ran unconfined with the hook set to refuse: %v", which)
				}
				if len(recorded) != 0 {
					t.Errorf("the hook set to refuse recorded containers as unprotected: %v", recorded)
				}
				if count[refusedByHook] == 0 || count[deniedFirst] == 0 {
					t.Errorf("want containers both refused and denied as the enforcer came and went, got %v", count)
				}
			case hook.Allow:
				registered := journaledNamespaces(t, f)
				var unprotectedDenied int
				for _, id := range order {
					rec, isRecorded := recorded[id]
					switch results[id] {
					case refusedByHook:
						t.Errorf("container %s: refused with the hook set to allow", id)
					case ranUnconfined:
						if !isRecorded {
							t.Errorf("HOLE: container %s ran unconfined and the hook did not record it as unprotected", id)
						}
					case deniedFirst:
						if !isRecorded {
							continue
						}
						unprotectedDenied++
						if rec.MountNamespace == 0 || !registered[rec.MountNamespace] {
							t.Errorf("container %s: recorded as unprotected (mount namespace %d) and its read denied, but no enforcer registered that namespace", id, rec.MountNamespace)
						}
					}
				}
				t.Logf("recorded as unprotected: %d containers (%d ran unconfined, %d were denied by a registration of their mount namespace made before an enforcer died)",
					len(recorded), count[ranUnconfined], unprotectedDenied)
				if len(recorded) != count[ranUnconfined]+unprotectedDenied {
					t.Errorf("records of the hook: %d, want %d: %v", len(recorded), count[ranUnconfined]+unprotectedDenied, recorded)
				}
				if count[ranUnconfined] == 0 || count[deniedFirst] == 0 {
					t.Errorf("want containers both unconfined and denied as the enforcer came and went, got %v", count)
				}
				// The late container: not one read allowed since its late registration.
				write(t, "/restarts/stop", "")
				o := late.wait(t)
				var ok, eperm int
				if _, err := fmt.Sscanf(o.out, "ok=%d eperm=%d", &ok, &eperm); err != nil || o.code != 0 {
					t.Fatalf("the late container's read loop: %v", o)
				}
				t.Logf("the container registered late: %d reads allowed before, %d refused after (%d when the first enforcer was ready)", ok, eperm, lateEPERM)
				if ok != lateOK || eperm <= lateEPERM {
					t.Errorf("the container registered late: %d reads allowed in all, %d before its registration, and %d refused (%d at its registration); want none allowed since, more refused",
						ok, lateOK, eperm, lateEPERM)
				}
			}

			// Every container has ended: a restarted enforcer removes what registrations
			// are left of them (those its predecessors made for containers whose
			// poststop hook found no enforcer, or found one that did not know them).
			f.kill()
			must(t, f.start())
			must(t, f.waitReady(readyTimeout))
			rep := f.report
			t.Logf("the last restart removed %d registrations of ended containers", len(rep.Removed))
			if rep.Unreadable != 0 || len(rep.Registrations) != 0 {
				t.Errorf("after the last restart: %d processes unreadable, registrations left %v; want none", rep.Unreadable, rep.Registrations)
			}
		})
	}
}

// unprotectedRecords are the hook's records, whether an enforcer took them or not.
func unprotectedRecords(t *testing.T, f *faultEnforcer) map[string]hook.Unprotected {
	t.Helper()
	out := map[string]hook.Unprotected{}
	for _, dir := range []string{f.cfg.archive, f.cfg.unprotected, f.cfg.unprotected + ".staging"} {
		recs, _, err := hook.ReadUnprotected(dir)
		must(t, err)
		for _, r := range recs {
			out[r.ContainerID] = r
		}
	}
	return out
}

// journaledNamespaces are the mount namespaces any fault daemon began to register.
func journaledNamespaces(t *testing.T, f *faultEnforcer) map[uint32]bool {
	t.Helper()
	b, err := os.ReadFile(f.cfg.journal)
	must(t, err)
	out := map[uint32]bool{}
	for _, line := range strings.Split(string(b), "\n") {
		var ns uint32
		if _, err := fmt.Sscanf(line, "reg %d", &ns); err == nil {
			out[ns] = true
		}
	}
	return out
}

// TestAdoptionCleansLeftRuleBodies: an enforcer that ends within retireAfter of
// replacing a profile's rules leaves the replaced rule body in the pinned maps (as one
// killed while writing a body leaves that body). The next enforcer removes it when it
// adopts the pinned state, folding its counts into the profile's, so a profile written
// later under the same body index gets its own rules and nothing else.
func TestAdoptionCleansLeftRuleBodies(t *testing.T) {
	write(t, "/orphan/a", "a")
	write(t, "/orphan/b", "b")
	pinDir := "/sys/fs/bpf/podarmor-orphans"
	first, err := Load(Options{PinDir: pinDir})
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	serveHook(t, first, false)
	denyRead := func(name, path string) string {
		return policy(name, fmt.Sprintf(`  customRules:
    files:
    - name: deny
      paths: [%q]
      permissions: [read]
`, path))
	}
	id := install(t, first, denyRead("orphan-a", "/orphan/a"))
	denied(t, "read of /orphan/a under the first rules", inSandbox(t, first, id, "read", "/orphan/a"))
	counted := func(e *Enforcer, profile string) uint64 {
		c, err := e.Counters()
		must(t, err)
		var n uint64
		for d, v := range c {
			if d.Profile == profile {
				n += v
			}
		}
		return n
	}
	before := counted(first, id)
	entries := func(e *Enforcer, b uint32) map[string]int {
		n := map[string]int{}
		for _, name := range bodyMaps {
			ks, err := keys(e.maps[name])
			must(t, err)
			for _, k := range ks {
				if keyBody(name, k) == b {
					n[name]++
				}
			}
		}
		return n
	}
	first.mu.Lock()
	left := first.profiles[id].body
	first.mu.Unlock()
	// The same profile, now denying the other file: a new body, the old one retiring,
	// for longer than the enforcer lives (under emulation a second is not sure to be).
	first.retireAfter = time.Hour
	p := compilePolicy(t, denyRead("orphan-a", "/orphan/b"))
	must(t, first.SetProfile(p))
	if got := entries(first, left); got["dfa_accept"] == 0 || got["counters"] == 0 {
		t.Fatalf("the replaced body %d before the enforcer ends: %v; want its accepting states and counters", left, got)
	}
	first.Close()
	second, err := Load(Options{PinDir: pinDir})
	if err != nil {
		t.Fatalf("Load on the pinned state: %v", err)
	}
	t.Cleanup(func() {
		second.Unpin()
		second.Close()
	})
	serveHook(t, second, false)
	if got := entries(second, left); len(got) != 0 {
		t.Errorf("entries of the replaced rule body %d after the adoption: %v", left, got)
	}
	var pb tables.ProfileBody
	if _, err := second.get("profile_bodies", left, &pb); err != nil || pb != (tables.ProfileBody{}) {
		t.Errorf("profile_bodies[%d] after the adoption: %+v (%v), want it empty", left, pb, err)
	}
	if after := counted(second, id); after != before {
		t.Errorf("decisions counted under %s: %d before the enforcer ended, %d after the adoption", id, before, after)
	}
	denied(t, "read of /orphan/b under the adopted rules", inSandbox(t, second, id, "read", "/orphan/b"))
	allowed(t, "read of /orphan/a under the adopted rules", inSandbox(t, second, id, "read", "/orphan/a"))

	// Another profile, written under the freed index, has its own rules only.
	other := install(t, second, denyRead("orphan-other", "/orphan/b"))
	second.mu.Lock()
	reused := second.profiles[other].body
	second.mu.Unlock()
	if reused != left {
		t.Fatalf("the new profile got rule body %d, not the freed %d: the test does not reach the reuse", reused, left)
	}
	allowed(t, "read of /orphan/a under a profile written where the left body was", inSandbox(t, second, other, "read", "/orphan/a"))
	denied(t, "read of /orphan/b under that profile", inSandbox(t, second, other, "read", "/orphan/b"))
}
