//go:build vmguest

package bpf

import (
	"maps"
	"net/netip"
	"testing"
	"time"

	"github.com/podarmor/podarmor/enforcer/tables"
	"github.com/podarmor/podarmor/policies/api/v1alpha1"
	"github.com/podarmor/podarmor/policies/ruleset"
)

// TestMapUsage checks MapUsage against what the loader wrote: a profile's tables, entry
// for entry, registrations (an overwrite is no new entry), the counter the kernel adds
// for a decision, a replaced body while it retires and after, and a removed profile.
// It also checks the programs' statistics with Options.ProgramStats.
func TestMapUsage(t *testing.T) {
	e := loadWith(t, Options{ProgramStats: true})
	enforce := v1alpha1.ActionEnforce
	p := profileOf("usage",
		ruleset.Rule{ID: "custom/secret", Action: enforce, Kind: ruleset.KindFile,
			File: &ruleset.File{Paths: []string{"/usage/secret", "/usage/dir/**"}, Permissions: []v1alpha1.FilePermission{v1alpha1.FileRead}}},
		ruleset.Rule{ID: "custom/netlink", Action: enforce, Kind: ruleset.KindSocket,
			Socket: &ruleset.Socket{Families: []v1alpha1.SocketFamily{"netlink", "packet"}, Types: []v1alpha1.SocketType{"raw"}}},
		ruleset.Rule{ID: "custom/egress", Action: enforce, Kind: ruleset.KindEgress,
			Egress: &ruleset.Egress{Prefixes: []netip.Prefix{netip.MustParsePrefix("10.1.2.0/24"), netip.MustParsePrefix("10.9.0.0/16"), netip.MustParsePrefix("fd00::/64")}}},
		ruleset.Rule{ID: "custom/mount", Action: enforce, Kind: ruleset.KindMount,
			Mount: &ruleset.Mount{Operations: []v1alpha1.MountOperation{v1alpha1.MountMount}, FSTypes: []string{"ramfs", "proc"}, Targets: []string{"/usage/mnt/**"}}},
	)
	img, err := tables.Build(p, e.limits)
	if err != nil {
		t.Fatal(err)
	}
	profileTables := map[string]uint64{
		"profile_active": 1, "profile_bodies": 1,
		"dfa_trans":    uint64(img.DFA.NumStates) * uint64(img.DFA.NumClasses),
		"dfa_accept":   uint64(len(img.Accept)),
		"dfa_subtree":  uint64(len(img.Subtree)),
		"dfa_mount":    uint64(len(img.MountPaths)),
		"socket_rules": uint64(len(img.Sockets)),
		"egress4":      uint64(len(img.Egress4)),
		"egress6":      uint64(len(img.Egress6)),
		"mount_fstype": uint64(len(img.FSTypes)),
	}
	for name, n := range profileTables {
		if n == 0 {
			t.Fatalf("the test profile has no entries in %s: it checks nothing there", name)
		}
	}
	check := func(when string, want map[string]uint64) {
		t.Helper()
		// counters always holds the reserved counter of uncounted decisions
		// (tables.UncountedKey), created at load
		want = maps.Clone(want)
		if want == nil {
			want = map[string]uint64{}
		}
		want["counters"]++
		usage, err := e.MapUsage()
		if err != nil {
			t.Fatalf("%s: MapUsage: %v", when, err)
		}
		if len(usage) != len(usageMaps) {
			t.Errorf("%s: %d maps, want %d", when, len(usage), len(usageMaps))
		}
		for _, u := range usage {
			if u.Entries != want[u.Map] {
				t.Errorf("%s: map %s: %d entries, want %d", when, u.Map, u.Entries, want[u.Map])
			}
			max := uint64(e.maps[u.Map].MaxEntries())
			if u.Map == "dfa_trans" {
				max *= tables.DFAPage // the map's entries are pages of transitions
			}
			if u.MaxEntries != max || max == 0 {
				t.Errorf("%s: map %s: max entries %d, want %d", when, u.Map, u.MaxEntries, max)
			}
			if u.Entries > u.MaxEntries {
				t.Errorf("%s: map %s: %d entries of at most %d", when, u.Map, u.Entries, u.MaxEntries)
			}
		}
	}
	with := func(extra map[string]uint64) map[string]uint64 {
		out := map[string]uint64{}
		for k, v := range profileTables {
			out[k] = v
		}
		for k, v := range extra {
			out[k] = v
		}
		return out
	}
	check("before any profile", nil)
	if err := e.SetProfile(p); err != nil {
		t.Fatal(err)
	}
	check("with one profile", profileTables)

	for _, ns := range []uint32{101, 102, 103, 102} {
		if err := e.Register(ns, "usage", false); err != nil {
			t.Fatal(err)
		}
	}
	if err := e.Unregister(101); err != nil {
		t.Fatal(err)
	}
	check("with two made-up registrations", with(map[string]uint64{"containers": 2}))

	// One denied read in a container: its registration, and one counter.
	write(t, "/usage/secret", "x")
	for range 3 {
		denied(t, "read the secret", inSandbox(t, e, "usage", "read", "/usage/secret"))
	}
	check("with a container that was denied a read three times", with(map[string]uint64{"containers": 3, "counters": 1}))
	closeSandboxes()
	check("after the container left", with(map[string]uint64{"containers": 2, "counters": 1}))

	stats, err := e.ProgramStats()
	if err != nil {
		t.Fatal(err)
	}
	attached := 0
	for _, h := range e.Hooks() {
		if h.Attached {
			attached++
		}
	}
	if len(stats) != attached {
		t.Errorf("statistics of %d programs, want the %d attached", len(stats), attached)
	}
	for _, s := range stats {
		if s.Hook == "file_open" && (s.Runs == 0 || s.RunTime <= 0) {
			t.Errorf("file_open ran %d times in %v, after a container's reads", s.Runs, s.RunTime)
		}
	}

	// A replaced body is in use until it retires; then its entries and counter are gone.
	if err := e.SetProfile(p); err != nil {
		t.Fatal(err)
	}
	both := map[string]uint64{"containers": 2, "counters": 1}
	for name, n := range profileTables {
		both[name] = 2 * n
	}
	both["profile_active"] = 1
	check("right after the profile was replaced", both)
	time.Sleep(retireAfter + 500*time.Millisecond)
	check("after the old body retired", with(map[string]uint64{"containers": 2}))

	if err := e.RemoveProfile("usage"); err != nil {
		t.Fatal(err)
	}
	for _, ns := range []uint32{102, 103} {
		if err := e.Unregister(ns); err != nil {
			t.Fatal(err)
		}
	}
	time.Sleep(retireAfter + 500*time.Millisecond)
	check("after the profile was removed", nil)
}
