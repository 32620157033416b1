//go:build vmguest

package bpf

import (
	"maps"
	"testing"

	"github.com/podarmor/podarmor/enforcer/tables"
	"github.com/podarmor/podarmor/policies/api/v1alpha1"
	"github.com/podarmor/podarmor/policies/ruleset"
)

// TestRegistrationFilter checks the registration filter the programs read before they
// look a namespace up: a bit for every registration, kept while another registration
// shares it, cleared after the last; a failed registration leaves no bit; and an
// enforcer that loads pinned state rebuilds the filter from the registrations, whatever
// the previous one left (a missing bit would leave a container unconfined). Every
// sandbox of the other tests is confined through its bit.
func TestRegistrationFilter(t *testing.T) {
	e := loadWith(t, Options{Capacity: Capacity{Containers: 4}})
	if err := e.SetProfile(profileOf("filter",
		ruleset.Rule{ID: "custom/secret", Action: v1alpha1.ActionEnforce, Kind: ruleset.KindFile,
			File: &ruleset.File{Paths: []string{"/filter/secret"}, Permissions: []v1alpha1.FilePermission{v1alpha1.FileRead}}})); err != nil {
		t.Fatal(err)
	}
	words := func(e *Enforcer) map[uint32]uint64 {
		t.Helper()
		out := map[uint32]uint64{}
		for w := uint32(0); w < tables.NSFilterWords; w++ {
			var v uint64
			if _, err := e.get("ns_filter", w, &v); err != nil {
				t.Fatal(err)
			}
			if v != 0 {
				out[w] = v
			}
		}
		return out
	}
	want := func(when string, e *Enforcer, namespaces ...uint32) {
		t.Helper()
		w := map[uint32]uint64{}
		for _, ns := range namespaces {
			i, bit := tables.NSFilterBit(ns)
			w[i] |= bit
		}
		if got := words(e); !maps.Equal(got, w) {
			t.Errorf("%s: filter words %x, want %x", when, got, w)
		}
	}
	const twin = 5 + 1<<tables.NSFilterBits // the same low bits as 5
	want("before any registration", e)
	for _, ns := range []uint32{5, twin, 70, 70} {
		if err := e.Register(ns, "filter", false); err != nil {
			t.Fatal(err)
		}
	}
	want("with 5, its twin and 70", e, 5, 70)
	if err := e.Register(900, "filter", false); err != nil {
		t.Fatal(err)
	}
	if err := e.Register(901, "filter", false); err == nil {
		t.Fatal("a fifth registration fit in a map of four")
	}
	want("after a registration the full map refused", e, 5, 70, 900)
	if err := e.Unregister(5); err != nil {
		t.Fatal(err)
	}
	want("after 5 left (its twin is still registered)", e, twin, 70, 900)
	if err := e.Unregister(twin); err != nil {
		t.Fatal(err)
	}
	want("after the twin left too", e, 70, 900)

	// What a previous enforcer may leave: a bit for a namespace long gone, and a
	// registration whose bit it never wrote (killed between the two).
	if err := e.put("containers", uint32(4000), tables.Registration{ID: tables.Identity{Profile: 1, Container: 4000}}); err != nil {
		t.Fatal(err)
	}
	i70, _ := tables.NSFilterBit(70)
	if err := e.put("ns_filter", i70, uint64(0)); err != nil {
		t.Fatal(err)
	}
	if err := e.put("ns_filter", uint32(tables.NSFilterWords-1), ^uint64(0)); err != nil {
		t.Fatal(err)
	}
	next, err := Load(Options{PinDir: e.pinDir, Capacity: Capacity{Containers: 4}, HostMntns: noHostAgents})
	if err != nil {
		t.Fatalf("second Load: %v", err)
	}
	defer next.Close()
	want("after another enforcer loaded the pinned state", next, 70, 900, 4000)
	if err := next.Unregister(4000); err != nil {
		t.Fatal(err)
	}
	want("after it removed the registration it found", next, 70, 900)

	// Two enforcers on the same pinned state at once (one taking over from another, as
	// in TestAttacksFromSandbox, whose daemon registers most containers and the test's
	// own enforcer one): each changes its bit in the map's word, so the other's bits
	// stay, and a bit stays while the other still has a registration under it.
	if err := e.Register(71, "filter", false); err != nil {
		t.Fatal(err)
	}
	if err := next.Register(72, "filter", false); err != nil {
		t.Fatal(err)
	}
	want("after each enforcer registered a namespace of the same word", next, 70, 71, 72, 900)
	if err := next.Unregister(72); err != nil {
		t.Fatal(err)
	}
	const twin71 = 71 + 1<<tables.NSFilterBits
	if err := next.Register(twin71, "filter", false); err != nil {
		t.Fatal(err)
	}
	if err := e.Unregister(71); err != nil {
		t.Fatal(err)
	}
	want("after one enforcer removed a namespace whose twin the other registered", next, 70, twin71, 900)
}
