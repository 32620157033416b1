// Package bpf loads podarmor's BPF LSM programs (bpfprog/) into the kernel and keeps their
// maps: profiles, container registrations, counters and events. It is the only package
// that touches libbpfgo.
//
// State lives in the kernel, pinned under a bpffs directory (default
// /sys/fs/bpf/podarmor): maps under maps/, one link per program under links/. Killing the
// enforcer leaves every program attached and every map filled; a new enforcer loads the
// object against the pinned maps (libbpf reuses them), attaches its programs, then swaps
// each pinned link for its own with a rename, so old and new programs overlap and no
// sandbox is ever unenforced in between.
package bpf

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
	"unsafe"

	"github.com/aquasecurity/libbpfgo"
	"github.com/cilium/ebpf/btf"

	"github.com/podarmor/podarmor/bpfprog/object"
	"github.com/podarmor/podarmor/enforcer/hook"
	"github.com/podarmor/podarmor/enforcer/tables"
)

// DefaultPinDir is where the enforcer pins its maps and links.
const DefaultPinDir = "/sys/fs/bpf/podarmor"

// Capacity sizes the maps. The zero value of a field means its default.
type Capacity struct {
	// Containers is the number of container registrations (mount namespaces). Default 4096.
	Containers uint32
	// Profiles is the number of profiles loaded at once. Default 1024.
	Profiles uint32
	// Transitions is the total size of every profile's path DFA table, in entries of 2
	// bytes, rounded up to whole pages of 2 Mi entries (4 MiB): one profile's table (its
	// states times its byte classes) fits in a page. Default 4 Mi entries (8 MiB).
	Transitions uint32
	// AcceptStates is the number of accepting DFA states over every profile. Default 64 Ki.
	AcceptStates uint32
	// SubtreeStates is the number of DFA states that guard a directory's contents, over
	// every profile. Default 256 Ki.
	SubtreeStates uint32
	// SocketRules, EgressPrefixes and MountFSTypes bound those tables over every profile.
	// Default 64 Ki, 64 Ki and 16 Ki.
	SocketRules    uint32
	EgressPrefixes uint32
	MountFSTypes   uint32
	// Counters is the number of decision counters, one per (rule body, rule, action,
	// hook) that has decided something, plus one for decisions that found the map full.
	// Default 64 Ki.
	Counters uint32
	// EventBuffer is the ring buffer size in bytes, a power of two. Default 1 MiB.
	EventBuffer uint32
}

func (c Capacity) withDefaults() Capacity {
	def := func(v *uint32, d uint32) {
		if *v == 0 {
			*v = d
		}
	}
	def(&c.Containers, 4096)
	def(&c.Profiles, 1024)
	def(&c.Transitions, 1<<22)
	c.Transitions = (c.Transitions + tables.DFAPage - 1) / tables.DFAPage * tables.DFAPage
	def(&c.AcceptStates, 1<<16)
	def(&c.SubtreeStates, 1<<18)
	def(&c.SocketRules, 1<<16)
	def(&c.EgressPrefixes, 1<<16)
	def(&c.MountFSTypes, 1<<14)
	def(&c.Counters, 1<<16)
	def(&c.EventBuffer, 1<<20)
	return c
}

// Options configure Load.
type Options struct {
	// PinDir is the bpffs directory for pinned state; DefaultPinDir when empty.
	PinDir   string
	Capacity Capacity
	// HostMntns is the node's own mount namespace inode, whose tasks outside sandboxes are
	// host agents (see bpfprog/ptrace.h). 0 reads /proc/1/ns/mnt.
	HostMntns uint32
	// EventsPerSecond is each container's event budget; 0 means 100.
	EventsPerSecond uint32
	// Tables bound each profile's tables.
	Tables tables.Limits
	// ProgramStats turns on the kernel's run-time statistics of BPF programs
	// (BPF_ENABLE_STATS) while the enforcer runs, for Enforcer.ProgramStats. It costs
	// every BPF program on the node two clock reads per run. Where the kernel refuses
	// it, the enforcer logs why and runs without.
	ProgramStats bool
	Logger       *slog.Logger
}

// Hook is one LSM hook podarmor attaches a program to.
type Hook struct {
	// Name is the LSM hook, e.g. "file_open".
	Name string
	// Program is the BPF program's name.
	Program string
	// Attached is false when the running kernel lacks the hook; Reason says why.
	Attached bool
	Reason   string
}

// Enforcer is the loaded object and the bookkeeping of what is in its maps.
type Enforcer struct {
	log    *slog.Logger
	pinDir string
	cap    Capacity
	limits tables.Limits
	mod    *libbpfgo.Module
	maps   map[string]*libbpfgo.BPFMap
	hooks  []Hook

	// retireAfter is how long a replaced rule body is kept (the constant retireAfter).
	retireAfter time.Duration

	mu       sync.Mutex
	profiles map[string]*profileState // by profile ID
	slots    []bool                   // slot in use; slot 0 is never used
	bodies   []bodyState              // by body index; body 0 is never used
	trans    regions
	retired  map[Decision]uint64 // counts of retired bodies
	filter   *nsFilter           // the registration filter's mirror

	// stopReaders end the event readers of Events; readers counts those not stopped yet.
	stopReaders []context.CancelFunc
	readers     sync.WaitGroup

	// stats holds BPF_ENABLE_STATS's descriptor when Options.ProgramStats is set; progs
	// are the attached programs whose statistics ProgramStats reads.
	stats io.Closer
	progs []statProgram
}

// mapNames lists every map of the object; all are pinned.
var mapNames = []string{
	"settings", "enforcer_self", "containers", "task_identity", "profile_active", "profile_names",
	"profile_bodies", "dfa_classes", "dfa_trans", "dfa_accept", "dfa_subtree", "dfa_mount", "socket_rules",
	"egress4", "egress6", "mount_bodies", "mount_fstype", "counters", "drops", "ratelimit",
	"events", "scratch", "mount_scratch", "ns_filter",
}

// Load loads the object, adopting pinned state when there is some, and attaches every
// program whose hook the kernel has.
func Load(opts Options) (*Enforcer, error) {
	e := &Enforcer{
		retireAfter: retireAfter,
		log:         opts.Logger,
		pinDir:      opts.PinDir,
		cap:         opts.Capacity.withDefaults(),
		limits:      opts.Tables,
		maps:        map[string]*libbpfgo.BPFMap{},
		profiles:    map[string]*profileState{},
	}
	if e.log == nil {
		e.log = slog.Default()
	}
	if e.pinDir == "" {
		e.pinDir = DefaultPinDir
	}
	e.slots = make([]bool, e.cap.Profiles)
	e.bodies = make([]bodyState, 2*e.cap.Profiles)
	e.trans = newRegions(e.cap.Transitions)
	for _, d := range []string{"maps", "links"} {
		if err := os.MkdirAll(filepath.Join(e.pinDir, d), 0o700); err != nil {
			return nil, fmt.Errorf("bpf: pin directory: %w (is bpffs mounted at %s?)", err, filepath.Dir(e.pinDir))
		}
	}

	start := time.Now()
	kernel, err := btf.LoadKernelSpec()
	if err != nil {
		return nil, fmt.Errorf("bpf: the kernel's BTF (/sys/kernel/btf/vmlinux) is needed for CO-RE and hook probing: %w", err)
	}
	if err := requireKernel(kernel); err != nil {
		return nil, err
	}

	// libbpf's own messages go to the logger: warnings (a failed verification carries its
	// log) as warnings, the rest at debug level.
	log := e.log
	libbpfgo.SetLoggerCbs(libbpfgo.Callbacks{Log: func(level int, msg string) {
		msg = strings.TrimRight(msg, "\n")
		if level == libbpfgo.LibbpfWarnLevel {
			log.Warn("libbpf", "msg", msg)
		} else {
			log.Debug("libbpf", "msg", msg)
		}
	}})
	mod, err := libbpfgo.NewModuleFromBufferArgs(libbpfgo.NewModuleArgs{BPFObjBuff: object.Object, BPFObjName: "podarmor"})
	if err != nil {
		return nil, fmt.Errorf("bpf: open object: %w", err)
	}
	e.mod = mod
	if err := e.prepare(kernel); err != nil {
		mod.Close()
		return nil, err
	}
	prepared := time.Now()
	if err := mod.BPFLoadObject(); err != nil {
		mod.Close()
		return nil, fmt.Errorf("bpf: load object (a pinned map of another layout under %s/maps needs removing after an incompatible upgrade): %w", e.pinDir, err)
	}
	// libbpfgo's batch operations keep the descriptor a map had when it was looked up,
	// which is -1 before loading: look every map up again now that they exist.
	for _, name := range mapNames {
		if e.maps[name], err = mod.GetMap(name); err != nil {
			mod.Close()
			return nil, fmt.Errorf("bpf: map %s after load: %w", name, err)
		}
	}
	if err := e.configure(opts); err != nil {
		mod.Close()
		return nil, err
	}
	if err := e.adopt(); err != nil {
		mod.Close()
		return nil, err
	}
	// Before the programs attach: they find a registration only through its filter bit.
	if err := e.rebuildFilter(); err != nil {
		mod.Close()
		return nil, err
	}
	if opts.ProgramStats {
		// Statistics are for the operator; enforcement does not wait on them.
		if err := e.enableStats(); err != nil {
			e.closeStats()
			e.log.Error("BPF program statistics unavailable; enforcing without them", "error", err)
		}
	}
	loaded := time.Now()
	if err := e.attach(); err != nil {
		e.Close()
		return nil, err
	}
	// Where a start's time goes: reading the kernel's BTF and preparing the object, the
	// kernel's verification of every program (and adoption), attaching.
	e.log.Info("BPF LSM programs loaded and attached", "took", time.Since(start).Round(time.Millisecond),
		"prepare", prepared.Sub(start).Round(time.Millisecond), "load", loaded.Sub(prepared).Round(time.Millisecond),
		"attach", time.Since(loaded).Round(time.Millisecond))
	return e, nil
}

// requireKernel refuses kernels without what every program needs.
func requireKernel(kernel *btf.Spec) error {
	var ids *btf.Enum
	if err := kernel.TypeByName("bpf_func_id", &ids); err != nil {
		return fmt.Errorf("bpf: kernel BTF has no enum bpf_func_id: %w", err)
	}
	need := map[string]string{
		"BPF_FUNC_loop":             "bpf_loop (Linux 5.17)",
		"BPF_FUNC_d_path":           "bpf_d_path (Linux 5.10)",
		"BPF_FUNC_task_storage_get": "task storage (Linux 5.11)",
		"BPF_FUNC_ringbuf_reserve":  "ring buffers (Linux 5.8)",
	}
	have := map[string]bool{}
	for _, v := range ids.Values {
		have[v.Name] = true
	}
	var missing []string
	for name, what := range need {
		if !have[name] {
			missing = append(missing, what)
		}
	}
	if len(missing) > 0 {
		return fmt.Errorf("bpf: the kernel lacks %s; podarmor needs Linux 6.1 or newer with BPF LSM", strings.Join(missing, ", "))
	}
	return nil
}

// prepare sizes maps, sets pin paths and turns off programs whose hook the kernel lacks.
func (e *Enforcer) prepare(kernel *btf.Spec) error {
	sizes := map[string]uint32{
		"containers":     e.cap.Containers,
		"ratelimit":      e.cap.Containers,
		"profile_active": e.cap.Profiles,
		"profile_names":  e.cap.Profiles,
		"profile_bodies": 2 * e.cap.Profiles,
		"dfa_classes":    2 * e.cap.Profiles,
		"mount_bodies":   2 * e.cap.Profiles,
		"dfa_trans":      e.cap.Transitions / tables.DFAPage,
		"dfa_accept":     e.cap.AcceptStates,
		"dfa_mount":      e.cap.AcceptStates,
		"dfa_subtree":    e.cap.SubtreeStates,
		"socket_rules":   e.cap.SocketRules,
		"egress4":        e.cap.EgressPrefixes,
		"egress6":        e.cap.EgressPrefixes,
		"mount_fstype":   e.cap.MountFSTypes,
		"counters":       e.cap.Counters,
		"events":         e.cap.EventBuffer,
	}
	for _, name := range mapNames {
		m, err := e.mod.GetMap(name)
		if err != nil {
			return fmt.Errorf("bpf: object has no map %s: %w", name, err)
		}
		if n, ok := sizes[name]; ok {
			if err := m.SetMaxEntries(n); err != nil {
				return fmt.Errorf("bpf: size map %s to %d: %w", name, n, err)
			}
		}
		if err := m.SetPinPath(filepath.Join(e.pinDir, "maps", name)); err != nil {
			return fmt.Errorf("bpf: pin path of map %s: %w", name, err)
		}
		e.maps[name] = m
	}

	it := e.mod.Iterator()
	for p := it.NextProgram(); p != nil; p = it.NextProgram() {
		hook := p.SectionName()
		hook = hook[strings.IndexByte(hook, '/')+1:]
		h := Hook{Name: hook, Program: p.Name(), Attached: true}
		var fn *btf.Func
		if err := kernel.TypeByName("bpf_lsm_"+hook, &fn); err != nil {
			h.Attached = false
			h.Reason = "the kernel has no LSM hook " + hook
			if err := p.SetAutoload(false); err != nil {
				return fmt.Errorf("bpf: skip program %s: %w", p.Name(), err)
			}
			e.log.Warn("LSM hook missing from this kernel: rules that need it are not enforced", "hook", hook)
		}
		e.hooks = append(e.hooks, h)
	}
	return nil
}

// Hooks lists every hook with whether it is attached.
func (e *Enforcer) Hooks() []Hook { return append([]Hook(nil), e.hooks...) }

func (e *Enforcer) configure(opts Options) error {
	host := opts.HostMntns
	if host == 0 {
		var err error
		if host, err = hook.MountNamespace("/proc/1/ns/mnt"); err != nil {
			return fmt.Errorf("bpf: the host mount namespace: %w", err)
		}
	}
	cfg := tables.Config{HostMntns: host, EventsPerSec: opts.EventsPerSecond, EventsBurst: opts.EventsPerSecond}
	if cfg.EventsPerSec == 0 {
		cfg.EventsPerSec, cfg.EventsBurst = 100, 100
	}
	if err := e.put("settings", uint32(0), cfg); err != nil {
		return err
	}
	e.reserveUncounted()
	return e.claimSelf()
}

// reserveUncounted creates the counter of decisions that find the counters map full
// (tables.UncountedKey), unless adopted state has it already. Created before any program
// runs, it always exists when the map fills. Only the adoption of a full map from an
// enforcer without it can fail here: that is logged, and those decisions go uncounted.
func (e *Enforcer) reserveUncounted() {
	ncpu, err := libbpfgo.NumPossibleCPUs()
	if err == nil {
		k := encode(tables.UncountedKey)
		v := make([]byte, 8*ncpu) // one zero u64 per possible CPU
		err = e.maps["counters"].UpdateValueFlags(unsafe.Pointer(&k[0]), unsafe.Pointer(&v[0]), libbpfgo.MapFlagUpdateNoExist)
		if errors.Is(err, syscall.EEXIST) {
			err = nil
		}
	}
	if err != nil {
		e.log.Error("cannot create the counter of decisions the full counters map misses; they go uncounted", "err", err)
	}
}

// claimSelf writes this process into enforcer_self, replacing a previous enforcer's, so
// that the sandboxes' readby rules let it read their /proc/<pid>/ns links (bpfprog/ptrace.h).
// The kernel knows the process by its pid in the node's PID namespace: an enforcer in a
// PID namespace of its own (a pod without hostPID) is not exempt, and says so.
func (e *Enforcer) claimSelf() error {
	self, err := ownTask()
	if err != nil {
		return fmt.Errorf("bpf: the enforcer's own process: %w", err)
	}
	if self.TGID == 0 {
		e.log.Warn("the enforcer is not in the node's PID namespace (hostPID): sandboxes' readby rules refuse its reads of their /proc/<pid>/ns links")
	}
	return e.put("enforcer_self", uint32(0), self)
}

// initPIDNamespace is the inode of the kernel's initial PID namespace (PROC_PID_INIT_INO).
const initPIDNamespace = 0xEFFFFFFC

// ownTask is this process as struct enforcer_task: its pid and its start time in clock
// ticks since boot (field 22 of /proc/self/stat, which the programs compute from the
// task's start_boottime). Outside the initial PID namespace it is the zero value.
func ownTask() (tables.EnforcerTask, error) {
	var st syscall.Stat_t
	if err := syscall.Stat("/proc/self/ns/pid", &st); err != nil {
		return tables.EnforcerTask{}, fmt.Errorf("PID namespace: %w", err)
	}
	if st.Ino != initPIDNamespace {
		return tables.EnforcerTask{}, nil
	}
	stat, err := os.ReadFile("/proc/self/stat")
	if err != nil {
		return tables.EnforcerTask{}, err
	}
	start, err := statStartTicks(string(stat))
	if err != nil {
		return tables.EnforcerTask{}, err
	}
	return tables.EnforcerTask{TGID: uint32(os.Getpid()), StartTicks: start}, nil
}

// statStartTicks reads starttime, field 22, from a /proc/<pid>/stat line. The command
// name (field 2, in parentheses) may hold spaces and parentheses: the fields after it
// start after its last ')'.
func statStartTicks(stat string) (uint64, error) {
	i := strings.LastIndexByte(stat, ')')
	if i < 0 {
		return 0, fmt.Errorf("/proc/self/stat %q: no command name", stat)
	}
	fields := strings.Fields(stat[i+1:]) // from field 3 on
	const starttime = 22 - 3
	if len(fields) <= starttime {
		return 0, fmt.Errorf("/proc/self/stat %q: %d fields, want at least 22", stat, len(fields)+2)
	}
	v, err := strconv.ParseUint(fields[starttime], 10, 64)
	if err != nil {
		return 0, fmt.Errorf("/proc/self/stat: start time %q: %w", fields[starttime], err)
	}
	return v, nil
}

// attach attaches every loaded program and swaps it in for the pinned link of a previous
// enforcer, if any.
func (e *Enforcer) attach() error {
	for _, h := range e.hooks {
		if !h.Attached {
			continue
		}
		p, err := e.mod.GetProgram(h.Program)
		if err != nil {
			return fmt.Errorf("bpf: program %s: %w", h.Program, err)
		}
		link, err := p.AttachLSM()
		if err != nil {
			return fmt.Errorf("bpf: attach %s to LSM hook %s: %w", h.Program, h.Name, err)
		}
		final := filepath.Join(e.pinDir, "links", h.Program)
		tmp := final + "_new" // bpffs refuses names with dots
		_ = os.Remove(tmp)
		if err := link.Pin(tmp); err != nil {
			return fmt.Errorf("bpf: pin link of %s: %w", h.Program, err)
		}
		// The rename replaces (and so releases) the previous enforcer's link only now
		// that this one is attached: the two overlap, nothing is left unenforced.
		if err := os.Rename(tmp, final); err != nil {
			return fmt.Errorf("bpf: replace pinned link of %s: %w", h.Program, err)
		}
	}
	return nil
}

// Close releases this process's handles. Pinned programs, links and maps stay: the
// sandboxes remain enforced until Unpin.
func (e *Enforcer) Close() {
	e.mu.Lock()
	stops := e.stopReaders
	e.stopReaders = nil
	e.mu.Unlock()
	for _, stop := range stops {
		stop()
	}
	e.readers.Wait()
	e.closeStats()
	// Under the lock, which a pending cleanup of a replaced rule body (retire) takes
	// before it touches the maps.
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.mod != nil {
		e.mod.Close()
		e.mod = nil
	}
}

// Unpin removes every pinned link and map: once the last handle closes, the programs
// detach and no sandbox is enforced by BPF any more. For uninstalling only.
func (e *Enforcer) Unpin() error {
	return errors.Join(os.RemoveAll(filepath.Join(e.pinDir, "links")), os.RemoveAll(filepath.Join(e.pinDir, "maps")))
}
