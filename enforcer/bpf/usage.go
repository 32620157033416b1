package bpf

import (
	"fmt"
	"time"

	"github.com/aquasecurity/libbpfgo"
	"github.com/cilium/ebpf"
	"golang.org/x/sys/unix"
)

// MapUsage is how full one of the maps with a fixed capacity is.
type MapUsage struct {
	// Map is the BPF map's name (bpfprog/maps.h).
	Map string
	// Entries are the entries in use, MaxEntries the map's capacity.
	Entries, MaxEntries uint64
}

// usageMaps are the maps whose filling can refuse a profile or a registration, in the
// order MapUsage reports them. Hash and LPM maps are counted by walking their keys
// (their entries are exactly what the walk finds); in the array maps an entry always
// exists, so what is in use is this enforcer's bookkeeping: profile slots, rule bodies
// and runs of the transition table it handed out. ratelimit (an LRU map, which evicts)
// and the ring buffer are left out.
var usageMaps = []string{
	"containers", "profile_active", "profile_bodies", "dfa_trans", "dfa_accept", "dfa_subtree",
	"dfa_mount", "socket_rules", "egress4", "egress6", "mount_fstype", "counters",
}

// MapUsage reports the entries in use and the capacity of each map with a limit. It
// walks the hash maps, one system call per entry in use: exact, where counts kept at
// each insert would miss the kernel's own inserts (counters) and need a lookup before
// every write to tell an overwrite of an existing key (registrations) from a new one.
func (e *Enforcer) MapUsage() ([]MapUsage, error) {
	// Every writer of these maps but the programs (which only add counters) holds e.mu:
	// no key is deleted during a walk, which would restart it from the first key.
	e.mu.Lock()
	defer e.mu.Unlock()
	out := make([]MapUsage, 0, len(usageMaps))
	for _, name := range usageMaps {
		u := MapUsage{Map: name, MaxEntries: uint64(e.maps[name].MaxEntries())}
		switch name {
		case "profile_active":
			for _, used := range e.slots {
				if used {
					u.Entries++
				}
			}
		case "profile_bodies":
			for _, b := range e.bodies {
				if b.used {
					u.Entries++
				}
			}
		case "dfa_trans":
			// The map's entries are pages; its capacity is counted in transitions.
			u.Entries = uint64(e.cap.Transitions - e.trans.free())
			u.MaxEntries = uint64(e.cap.Transitions)
		default:
			n, err := count(e.maps[name])
			if err != nil {
				return nil, fmt.Errorf("bpf: count entries of map %s: %w", name, err)
			}
			u.Entries = n
		}
		out = append(out, u)
	}
	return out, nil
}

// count walks a hash or LPM map's keys.
func count(m *libbpfgo.BPFMap) (uint64, error) {
	var n uint64
	it := m.Iterator()
	for it.Next() {
		n++
	}
	return n, it.Err()
}

// ProgramStats is what the kernel's bpf_stats measured of one program.
type ProgramStats struct {
	// Program is the BPF program's name, Hook its LSM hook.
	Program, Hook string
	// Runs is how often it ran, RunTime how long it ran in all, since it was loaded
	// and while statistics were enabled.
	Runs    uint64
	RunTime time.Duration
}

// enableStats turns on the kernel's run-time statistics of BPF programs for as long as
// this enforcer holds the descriptor BPF_ENABLE_STATS returns (released on Close, or when
// the process exits, so a killed enforcer leaves no cost behind). The kernel then
// timestamps every run of every BPF program on the node, ours and others': some tens
// of nanoseconds each, which is why it is off unless asked for.
func (e *Enforcer) enableStats() error {
	closer, err := ebpf.EnableStats(uint32(unix.BPF_STATS_RUN_TIME))
	if err != nil {
		return fmt.Errorf("bpf: enable run-time statistics (BPF_ENABLE_STATS, Linux 5.8): %w", err)
	}
	e.stats = closer
	for _, h := range e.hooks {
		if !h.Attached {
			continue
		}
		p, err := e.mod.GetProgram(h.Program)
		if err != nil {
			return fmt.Errorf("bpf: program %s: %w", h.Program, err)
		}
		fd, err := unix.FcntlInt(uintptr(p.FileDescriptor()), unix.F_DUPFD_CLOEXEC, 0)
		if err != nil {
			return fmt.Errorf("bpf: duplicate the descriptor of program %s: %w", h.Program, err)
		}
		prog, err := ebpf.NewProgramFromFD(fd)
		if err != nil {
			unix.Close(fd)
			return fmt.Errorf("bpf: program %s: %w", h.Program, err)
		}
		e.progs = append(e.progs, statProgram{hook: h, prog: prog})
	}
	return nil
}

type statProgram struct {
	hook Hook
	prog *ebpf.Program
}

// ProgramStats returns the run counts and times of every attached program, read from
// the kernel (bpf_prog_info's run_cnt and run_time_ns); nil unless the enforcer was
// loaded with Options.ProgramStats.
func (e *Enforcer) ProgramStats() ([]ProgramStats, error) {
	if e.stats == nil {
		return nil, nil
	}
	out := make([]ProgramStats, 0, len(e.progs))
	for _, p := range e.progs {
		s, err := p.prog.Stats()
		if err != nil {
			return nil, fmt.Errorf("bpf: statistics of program %s: %w", p.hook.Program, err)
		}
		out = append(out, ProgramStats{Program: p.hook.Program, Hook: p.hook.Name, Runs: s.RunCount, RunTime: s.Runtime})
	}
	return out, nil
}

func (e *Enforcer) closeStats() {
	for _, p := range e.progs {
		p.prog.Close()
	}
	e.progs = nil
	if e.stats != nil {
		e.stats.Close()
		e.stats = nil
	}
}
