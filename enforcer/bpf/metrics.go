package bpf

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/podarmor/podarmor/enforcer/tables"
)

// Collector exports what the kernel side knows, read at scrape time: exact decision
// counts from the per-CPU counters (and how many decisions a full counter map missed),
// events lost, which LSM hooks this kernel has, how full the maps are and, when enabled,
// what each program costs. Labels come from bounded sets: profiles and rule IDs of the
// loaded policies, hooks (tables.HookNames), program and map names of the object.
type Collector struct {
	src        Source
	decisions  *prometheus.Desc
	uncounted  *prometheus.Desc
	dropped    *prometheus.Desc
	hooks      *prometheus.Desc
	entries    *prometheus.Desc
	maxEntries *prometheus.Desc
	runs       *prometheus.Desc
	runTime    *prometheus.Desc
}

// Source is what a Collector reads at scrape time. *Enforcer is the real one; the
// metrics tests of the enforcer's binary give a fake, so the collector's families can
// be gathered and linted without a loaded BPF object.
type Source interface {
	Counters() (map[Decision]uint64, error)
	Uncounted() (uint64, error)
	Drops() ([tables.NumDrops]uint64, error)
	Hooks() []Hook
	MapUsage() ([]MapUsage, error)
	ProgramStats() ([]ProgramStats, error)
}

// NewCollector returns the Collector of src, usually an *Enforcer.
func NewCollector(src Source) *Collector {
	return &Collector{
		src: src,
		decisions: prometheus.NewDesc("podarmor_enforcer_decisions_total",
			"Operations a BPF rule decided, by profile, rule, hook (the hook that decided, as the event log names it: file_open, bprm_check_security, path, capable, socket_create, socket_connect, socket_sendmsg, ptrace_access_check, sb_mount, operation) and action (enforce: refused; audit: allowed and reported). Exact: counted in the kernel, whether or not the event was delivered.",
			[]string{"profile", "rule", "hook", "action"}, nil),
		uncounted: prometheus.NewDesc("podarmor_enforcer_decisions_uncounted_total",
			"Decisions missing from podarmor_enforcer_decisions_total because the kernel's map of decision counters was full (its capacity is in podarmor_enforcer_bpf_map_max_entries{map=\"counters\"}); they were enforced all the same.",
			nil, nil),
		dropped: prometheus.NewDesc("podarmor_enforcer_events_dropped_total",
			"Events the kernel did not deliver, by reason: ringbuf (the ring buffer was full), rate_limit (over the container's events per second), path (a path could not be resolved; the operation was refused).",
			[]string{"reason"}, nil),
		hooks: prometheus.NewDesc("podarmor_enforcer_lsm_hook_attached",
			"1 when the BPF program of an LSM hook is attached, 0 when this kernel lacks the hook (the rules that need it are not enforced by BPF).",
			[]string{"hook"}, nil),
		entries: prometheus.NewDesc("podarmor_enforcer_bpf_map_entries",
			"Entries in use in a BPF map with a fixed capacity: registrations (containers), profile slots (profile_active), rule bodies (profile_bodies), path DFA transitions (dfa_trans), rule tables and decision counters. A full map refuses the next profile, registration or counter.",
			[]string{"map"}, nil),
		maxEntries: prometheus.NewDesc("podarmor_enforcer_bpf_map_max_entries",
			"Capacity of a BPF map (its max_entries, set by the enforcer's capacity at load).",
			[]string{"map"}, nil),
		runs: prometheus.NewDesc("podarmor_enforcer_bpf_program_runs_total",
			"Runs of each BPF program, from the kernel's bpf_stats (exported only when the enforcer runs with --bpf-stats).",
			[]string{"program", "hook"}, nil),
		runTime: prometheus.NewDesc("podarmor_enforcer_bpf_program_run_seconds_total",
			"Time spent in each BPF program, from the kernel's bpf_stats (exported only when the enforcer runs with --bpf-stats).",
			[]string{"program", "hook"}, nil),
	}
}

// Describe implements prometheus.Collector.
func (c *Collector) Describe(ch chan<- *prometheus.Desc) {
	ch <- c.decisions
	ch <- c.uncounted
	ch <- c.dropped
	ch <- c.hooks
	ch <- c.entries
	ch <- c.maxEntries
	ch <- c.runs
	ch <- c.runTime
}

var actionNames = map[tables.Action]string{tables.ActionEnforce: "enforce", tables.ActionAudit: "audit"}

var dropNames = [tables.NumDrops]string{tables.DropRingbuf: "ringbuf", tables.DropRateLimit: "rate_limit", tables.DropPath: "path"}

// Collect implements prometheus.Collector.
func (c *Collector) Collect(ch chan<- prometheus.Metric) {
	if counts, err := c.src.Counters(); err != nil {
		ch <- prometheus.NewInvalidMetric(c.decisions, err)
	} else {
		for d, n := range counts {
			ch <- prometheus.MustNewConstMetric(c.decisions, prometheus.CounterValue, float64(n), d.Profile, d.Rule, d.Hook.String(), actionNames[d.Action])
		}
	}
	if n, err := c.src.Uncounted(); err != nil {
		ch <- prometheus.NewInvalidMetric(c.uncounted, err)
	} else {
		ch <- prometheus.MustNewConstMetric(c.uncounted, prometheus.CounterValue, float64(n))
	}
	if drops, err := c.src.Drops(); err != nil {
		ch <- prometheus.NewInvalidMetric(c.dropped, err)
	} else {
		for i, n := range drops {
			ch <- prometheus.MustNewConstMetric(c.dropped, prometheus.CounterValue, float64(n), dropNames[i])
		}
	}
	for _, h := range c.src.Hooks() {
		v := 0.0
		if h.Attached {
			v = 1
		}
		ch <- prometheus.MustNewConstMetric(c.hooks, prometheus.GaugeValue, v, h.Name)
	}
	if usage, err := c.src.MapUsage(); err != nil {
		ch <- prometheus.NewInvalidMetric(c.entries, err)
	} else {
		for _, u := range usage {
			ch <- prometheus.MustNewConstMetric(c.entries, prometheus.GaugeValue, float64(u.Entries), u.Map)
			ch <- prometheus.MustNewConstMetric(c.maxEntries, prometheus.GaugeValue, float64(u.MaxEntries), u.Map)
		}
	}
	if stats, err := c.src.ProgramStats(); err != nil {
		ch <- prometheus.NewInvalidMetric(c.runs, err)
	} else {
		for _, s := range stats {
			ch <- prometheus.MustNewConstMetric(c.runs, prometheus.CounterValue, float64(s.Runs), s.Program, s.Hook)
			ch <- prometheus.MustNewConstMetric(c.runTime, prometheus.CounterValue, s.RunTime.Seconds(), s.Program, s.Hook)
		}
	}
}
