package bpf

import (
	"encoding/binary"
	"fmt"

	"github.com/podarmor/podarmor/enforcer/tables"
)

// nsFilter is this enforcer's count of its registrations behind the programs'
// registration filter (map ns_filter), which has a bit per value of a mount namespace's
// low bits, set while a registration has that value, so that a
// task outside every sandbox is told so by one load instead of a hash lookup. The
// filter may say "look" for a namespace without a registration (two namespaces sharing
// the low bits, or a bit a dead enforcer set); it must never say "no" for one with a
// registration. So a bit is written before the registration it covers and cleared after
// the last registration under it is deleted, and a bit is changed in the map's word, not
// in a copy, so that two enforcers on the same pinned state keep each other's bits.
// Guarded by Enforcer.mu.
type nsFilter struct {
	registered map[uint32]struct{} // the mount namespaces this enforcer registered or found
	under      map[uint32]int      // registrations by filter bit (the low bits of ns)
}

func newNSFilter() *nsFilter {
	return &nsFilter{
		registered: map[uint32]struct{}{},
		under:      map[uint32]int{},
	}
}

func filterIndex(ns uint32) uint32 { return ns & (1<<tables.NSFilterBits - 1) }

// rebuildFilter makes the pinned filter exactly cover the registrations in containers:
// it runs at load, before the programs are attached, and takes over whatever a previous
// enforcer left (a bit for a registration it never wrote, or a bit it never cleared).
func (e *Enforcer) rebuildFilter() error {
	e.filter = newNSFilter()
	regs, err := e.Registered()
	if err != nil {
		return fmt.Errorf("bpf: registration filter: %w", err)
	}
	want := make([]uint64, tables.NSFilterWords)
	for ns := range regs {
		e.filter.registered[ns] = struct{}{}
		e.filter.under[filterIndex(ns)]++
		w, bit := tables.NSFilterBit(ns)
		want[w] |= bit
	}
	for w := range want {
		var have uint64
		if _, err := e.get("ns_filter", uint32(w), &have); err != nil {
			return fmt.Errorf("bpf: registration filter: %w", err)
		}
		// Sets before clears would matter only to a registration written meanwhile,
		// and nothing registers while the enforcer loads.
		if have != want[w] {
			if err := e.put("ns_filter", uint32(w), want[w]); err != nil {
				return fmt.Errorf("bpf: registration filter: %w", err)
			}
		}
	}
	return nil
}

// filterAdd counts a registration of ns, making sure its bit is set; added tells whether
// ns was not registered before. The word is read from the map, not taken from this
// enforcer's mirror: another enforcer on the same pinned state (one taking over, or a
// test's second process) may have set bits in it since, which a write of the mirror's
// word would clear.
func (e *Enforcer) filterAdd(ns uint32) (added bool, err error) {
	f := e.filter
	if _, ok := f.registered[ns]; ok {
		return false, nil
	}
	w, bit := tables.NSFilterBit(ns)
	var have uint64
	if _, err := e.get("ns_filter", w, &have); err != nil {
		return false, fmt.Errorf("%w (registration filter)", err)
	}
	if have&bit == 0 {
		if err := e.put("ns_filter", w, have|bit); err != nil {
			return false, fmt.Errorf("%w (registration filter)", err)
		}
	}
	f.registered[ns] = struct{}{}
	f.under[filterIndex(ns)]++
	return true, nil
}

// filterRemove forgets a deleted registration of ns, clearing its bit if no registration
// is left under it: neither one of this enforcer's, nor one in the map (another
// enforcer's). A failed clear leaves the bit set, which costs speed only.
func (e *Enforcer) filterRemove(ns uint32) {
	f := e.filter
	if _, ok := f.registered[ns]; !ok {
		return
	}
	delete(f.registered, ns)
	i := filterIndex(ns)
	if f.under[i]--; f.under[i] > 0 {
		return
	}
	delete(f.under, i)
	ks, err := keys(e.maps["containers"])
	if err != nil {
		e.log.Warn("cannot list the registrations to clear a bit of the registration filter; unsandboxed tasks of namespaces under it take the slower lookup", "namespace", ns, "error", err)
		return
	}
	for _, k := range ks {
		if filterIndex(binary.LittleEndian.Uint32(k)) == i {
			return // another enforcer's registration under the same bit
		}
	}
	w, bit := tables.NSFilterBit(ns)
	var have uint64
	_, err = e.get("ns_filter", w, &have)
	if err == nil {
		err = e.put("ns_filter", w, have&^bit)
	}
	if err != nil {
		e.log.Warn("cannot clear a bit of the registration filter; unsandboxed tasks of namespaces under it take the slower lookup", "namespace", ns, "error", err)
	}
}
