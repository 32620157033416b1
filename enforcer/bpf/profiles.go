package bpf

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/podarmor/podarmor/enforcer/tables"
	"github.com/podarmor/podarmor/policies/compile/bpf"
)

// retireAfter is how long a replaced rule body stays intact after its profile moved to a
// new one: programs that read the old body index just before the switch finish with it
// well within this time (a hook runs for microseconds). Enforcer.retireAfter is this
// but in tests that need a replaced body to outlive its enforcer.
const retireAfter = time.Second

type profileState struct {
	slot uint32
	body uint32
}

type bodyState struct {
	used    bool
	profile string
	rules   []string // rule index -> rule ID; nil for bodies adopted from pinned state
	region  region
}

// SetProfile compiles p and makes it the profile's rule set, atomically: the new rules are
// written under a fresh body index, and one write of the profile's slot switches every
// container of the profile from the old rules to the new ones.
func (e *Enforcer) SetProfile(p *bpf.Profile) error {
	img, err := tables.Build(p, e.limits)
	if err != nil {
		return err
	}
	return e.SetImage(img)
}

// SetImage installs a built image; see SetProfile.
func (e *Enforcer) SetImage(img *tables.Image) error {
	if len(img.ProfileID) >= 64 {
		return fmt.Errorf("bpf: profile ID %q: longer than 63 bytes", img.ProfileID)
	}
	e.mu.Lock()
	defer e.mu.Unlock()

	ps := e.profiles[img.ProfileID]
	if ps == nil {
		slot, ok := e.freeSlot()
		if !ok {
			return fmt.Errorf("bpf: profile %s: all %d profile slots in use", img.ProfileID, e.cap.Profiles-1)
		}
		ps = &profileState{slot: slot}
		var name [64]byte
		copy(name[:], img.ProfileID)
		if err := e.put("profile_names", slot, name); err != nil {
			e.slots[slot] = false
			return err
		}
		e.profiles[img.ProfileID] = ps
	}
	body, ok := e.freeBody()
	if !ok {
		return fmt.Errorf("bpf: profile %s: no free rule body (all %d in use or retiring)", img.ProfileID, len(e.bodies)-1)
	}
	if err := e.writeBody(ps.slot, body, img); err != nil {
		e.cleanBody(body)
		return fmt.Errorf("bpf: profile %s: %w", img.ProfileID, err)
	}
	if err := e.put("profile_active", ps.slot, body); err != nil {
		e.cleanBody(body)
		return err
	}
	old := ps.body
	ps.body = body
	if old != 0 {
		e.retire(old)
	}
	return nil
}

// RemoveProfile stops enforcing a profile: its containers keep their identity but have no
// rules. Their registrations are the caller's to remove.
func (e *Enforcer) RemoveProfile(id string) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	ps := e.profiles[id]
	if ps == nil {
		return nil
	}
	if err := e.put("profile_active", ps.slot, uint32(0)); err != nil {
		return err
	}
	if ps.body != 0 {
		e.retire(ps.body)
	}
	delete(e.profiles, id)
	slot := ps.slot
	time.AfterFunc(retireAfter, func() {
		e.mu.Lock()
		defer e.mu.Unlock()
		e.slots[slot] = false
	})
	return nil
}

// Slot returns the slot of a loaded profile.
func (e *Enforcer) Slot(id string) (uint32, bool) {
	e.mu.Lock()
	defer e.mu.Unlock()
	ps := e.profiles[id]
	if ps == nil {
		return 0, false
	}
	return ps.slot, true
}

func (e *Enforcer) freeSlot() (uint32, bool) {
	for i := 1; i < len(e.slots); i++ {
		if !e.slots[i] {
			e.slots[i] = true
			return uint32(i), true
		}
	}
	return 0, false
}

func (e *Enforcer) freeBody() (uint32, bool) {
	for i := 1; i < len(e.bodies); i++ {
		if !e.bodies[i].used {
			e.bodies[i] = bodyState{used: true}
			return uint32(i), true
		}
	}
	return 0, false
}

// writeBody writes every table of img under body index b; nothing reads them until the
// profile slot points at b.
func (e *Enforcer) writeBody(slot, b uint32, img *tables.Image) error {
	bs := &e.bodies[b]
	bs.profile = img.ProfileID
	bs.rules = img.Rules
	body := img.Body
	body.Slot = slot
	if d := img.DFA; d != nil {
		if err := fitsPage(d.NumStates, d.NumClasses); err != nil {
			return err
		}
		n := uint32(d.NumStates) * uint32(d.NumClasses)
		r, ok := e.trans.alloc(n, tables.DFAPage)
		if !ok {
			return fmt.Errorf("path DFA of %d states x %d classes does not fit in the transition table (%d entries free of %d, in pages of %d)", d.NumStates, d.NumClasses, e.trans.free(), e.cap.Transitions, tables.DFAPage)
		}
		bs.region = r
		body.DFABase = r.start
		if err := e.writeTrans(r.start, d.Trans); err != nil {
			return err
		}
		if err := e.put("dfa_classes", b, tables.DFAClasses{Class: d.Classes}); err != nil {
			return err
		}
		for s, v := range img.Accept {
			if err := e.put("dfa_accept", tables.DFAAcceptKey{Body: b, State: s}, v); err != nil {
				return fmt.Errorf("%w (accepting states over all profiles: %d)", err, e.cap.AcceptStates)
			}
		}
		for s, v := range img.Subtree {
			if err := e.put("dfa_subtree", tables.DFAAcceptKey{Body: b, State: s}, v); err != nil {
				return fmt.Errorf("%w (subtree states over all profiles: %d)", err, e.cap.SubtreeStates)
			}
		}
		for s, v := range img.MountPaths {
			if err := e.put("dfa_mount", tables.DFAAcceptKey{Body: b, State: s}, v); err != nil {
				return err
			}
		}
	}
	for k, v := range img.Sockets {
		k.Body = b
		if err := e.put("socket_rules", k, v); err != nil {
			return err
		}
	}
	for _, en := range img.Egress4 {
		k := tables.Egress4Key{PrefixLen: 32 + uint32(en.Prefix.Bits()), Body: b, Addr: en.Prefix.Addr().As4()}
		if err := e.put("egress4", k, en.Ports); err != nil {
			return err
		}
	}
	for _, en := range img.Egress6 {
		k := tables.Egress6Key{PrefixLen: 32 + uint32(en.Prefix.Bits()), Body: b, Addr: en.Prefix.Addr().As16()}
		if err := e.put("egress6", k, en.Ports); err != nil {
			return err
		}
	}
	if img.Mount != nil {
		if err := e.put("mount_bodies", b, *img.Mount); err != nil {
			return err
		}
		for t, m := range img.FSTypes {
			k := tables.MountFSTypeKey{Body: b}
			copy(k.FSType[:], t)
			if err := e.put("mount_fstype", k, m); err != nil {
				return err
			}
		}
	}
	return e.put("profile_bodies", b, body)
}

// fitsPage refuses a path DFA that 16-bit state numbers or one page of the transition
// table cannot hold.
func fitsPage(states, classes int) error {
	if states > tables.MaxDFAStates {
		return fmt.Errorf("path DFA of %d states: a profile's path automaton can have at most %d (16-bit state numbers)", states, tables.MaxDFAStates)
	}
	if n := states * classes; n > tables.DFAPage {
		return fmt.Errorf("path DFA of %d states x %d byte classes (%d transitions): a profile's path automaton can have at most %d transitions (a page of the transition table)", states, classes, n, tables.DFAPage)
	}
	return nil
}

// writeTrans writes a DFA's transitions at entry start of the table, in place through a
// shared mapping of the map: the rest of the page, which programs are reading, is not
// rewritten. Every transition is a state number below MaxDFAStates (checked by the
// caller through the number of states).
func (e *Enforcer) writeTrans(start uint32, trans []uint32) error {
	m := e.maps["dfa_trans"]
	size := int(m.MaxEntries()) * tables.DFAPage * 2
	mem, err := unix.Mmap(m.FileDescriptor(), 0, size, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
	if err != nil {
		return fmt.Errorf("write path DFA transitions: map the transition table: %w", err)
	}
	defer unix.Munmap(mem)
	to := mem[int(start)*2 : (int(start)+len(trans))*2]
	for i, t := range trans {
		binary.LittleEndian.PutUint16(to[2*i:], uint16(t))
	}
	return nil
}

// retire schedules the cleanup of a body no slot points at any more.
func (e *Enforcer) retire(b uint32) {
	time.AfterFunc(e.retireAfter, func() {
		e.mu.Lock()
		defer e.mu.Unlock()
		if e.mod == nil {
			// Closed: the maps' descriptors are gone (their numbers may be another
			// file's now). The next enforcer cleans the body (cleanOrphans).
			return
		}
		e.foldCounters(b)
		e.cleanBody(b)
	})
}

// bodyMaps are the hash maps whose keys start with a rule body's index (egress keys
// after the prefix length).
var bodyMaps = []string{"dfa_accept", "dfa_subtree", "dfa_mount", "socket_rules", "mount_fstype", "counters", "egress4", "egress6"}

// keyBody is the rule body index a key of bodyMaps' map name starts with.
func keyBody(name string, k []byte) uint32 {
	if name == "egress4" || name == "egress6" {
		return binary.LittleEndian.Uint32(k[4:])
	}
	return binary.LittleEndian.Uint32(k)
}

// cleanBody deletes every entry keyed by body b and frees it. Hash map keys of every
// per-body table start with the body index (egress keys after the prefix length).
func (e *Enforcer) cleanBody(b uint32) {
	bs := &e.bodies[b]
	if bs.region.size > 0 {
		e.trans.release(bs.region)
	}
	for _, name := range bodyMaps {
		ks, err := keys(e.maps[name])
		if err != nil {
			e.log.Error("cannot list map to clean a retired rule body", "map", name, "body", b, "err", err)
			continue
		}
		for _, k := range ks {
			if keyBody(name, k) != b {
				continue
			}
			if err := e.maps[name].DeleteKey(unsafe.Pointer(&k[0])); err != nil {
				e.log.Error("cannot clean a retired rule body", "map", name, "body", b, "err", err)
			}
		}
	}
	_ = e.put("profile_bodies", b, tables.ProfileBody{})
	*bs = bodyState{}
}

// adopt takes over the profiles a previous enforcer left in the pinned maps: their slots,
// bodies and DFA regions stay as they are, enforced, until SetProfile replaces them.
func (e *Enforcer) adopt() error {
	for slot := uint32(1); slot < e.cap.Profiles; slot++ {
		var body uint32
		if ok, err := e.get("profile_active", slot, &body); err != nil || !ok || body == 0 {
			if err != nil {
				return err
			}
			continue
		}
		var name [64]byte
		if _, err := e.get("profile_names", slot, &name); err != nil {
			return err
		}
		id := string(bytes.TrimRight(name[:], "\x00"))
		var pb tables.ProfileBody
		if _, err := e.get("profile_bodies", body, &pb); err != nil {
			return err
		}
		if int(body) >= len(e.bodies) {
			return fmt.Errorf("bpf: pinned profile %s uses rule body %d, beyond this enforcer's %d: start it with the same capacity", id, body, len(e.bodies))
		}
		e.slots[slot] = true
		e.bodies[body] = bodyState{used: true, profile: id}
		if pb.DFAStates > 0 {
			r := region{start: pb.DFABase, size: pb.DFAStates * pb.DFAClasses}
			if !e.trans.reserve(r) {
				return fmt.Errorf("bpf: pinned profile %s: DFA region %d+%d overlaps another or lies outside the table", id, r.start, r.size)
			}
			e.bodies[body].region = r
		}
		e.profiles[id] = &profileState{slot: slot, body: body}
		e.log.Info("adopted pinned profile", "profile", id, "slot", slot, "body", body)
	}
	return e.cleanOrphans()
}

// cleanOrphans deletes the rule bodies a previous enforcer left that no profile uses:
// one it was killed while writing (never live), or one it replaced and had not cleaned
// yet (retireAfter). Their entries are keyed by body index like a live body's, so a
// later profile written under the same index would inherit them: rules of another
// profile, and its counts. A replaced body's counts are folded first, under its
// profile (from its slot) and its rules' numbers, as an adopted body's are.
func (e *Enforcer) cleanOrphans() error {
	orphans := map[uint32]bool{}
	for b := uint32(1); int(b) < len(e.bodies); b++ {
		if e.bodies[b].used {
			continue
		}
		var pb tables.ProfileBody
		if _, err := e.get("profile_bodies", b, &pb); err != nil {
			return err
		}
		if pb != (tables.ProfileBody{}) {
			orphans[b] = true
		}
	}
	// A body killed before its profile_bodies entry (written last) has entries only.
	for _, name := range bodyMaps {
		ks, err := keys(e.maps[name])
		if err != nil {
			return fmt.Errorf("bpf: list map %s for rule bodies left by a previous enforcer: %w", name, err)
		}
		for _, k := range ks {
			b := keyBody(name, k)
			if b != 0 && int(b) < len(e.bodies) && !e.bodies[b].used {
				orphans[b] = true
			}
		}
	}
	for b := range orphans {
		var pb tables.ProfileBody
		if _, err := e.get("profile_bodies", b, &pb); err != nil {
			return err
		}
		profile := ""
		if pb.Slot != 0 && pb.Slot < e.cap.Profiles {
			var name [64]byte
			if _, err := e.get("profile_names", pb.Slot, &name); err != nil {
				return err
			}
			profile = string(bytes.TrimRight(name[:], "\x00"))
		}
		e.bodies[b] = bodyState{profile: profile}
		e.foldCounters(b)
		e.cleanBody(b)
		e.log.Info("removed a rule body a previous enforcer left unused", "body", b, "profile", profile)
	}
	return nil
}

// Profiles returns the IDs of the loaded profiles.
func (e *Enforcer) Profiles() []string {
	e.mu.Lock()
	defer e.mu.Unlock()
	var out []string
	for id := range e.profiles {
		out = append(out, id)
	}
	return out
}

// Register confines the tasks of mount namespace mntns with profile id. Unless late is
// set, confinement starts at the first exec in the namespace (the container's own
// program, after the runtime has set it up); late registrations of containers already
// running take effect at once.
func (e *Enforcer) Register(mntns uint32, id string, late bool) error {
	slot, ok := e.Slot(id)
	if !ok {
		return fmt.Errorf("bpf: register mount namespace %d: profile %s is not loaded", mntns, id)
	}
	reg := tables.Registration{ID: tables.Identity{Profile: slot, Container: mntns}}
	if late {
		reg.Armed = 1
	}
	e.mu.Lock() // MapUsage walks the map under it
	defer e.mu.Unlock()
	// The filter's bit first: the programs look a namespace up only where it is set.
	added, err := e.filterAdd(mntns)
	if err != nil {
		return fmt.Errorf("bpf: register mount namespace %d: %w", mntns, err)
	}
	if err := e.put("containers", mntns, reg); err != nil {
		if added {
			e.filterRemove(mntns) // a new registration that was not written
		}
		return fmt.Errorf("%w (registrations: at most %d)", err, e.cap.Containers)
	}
	return nil
}

// Unregister forgets a mount namespace, for a container whose tasks are gone. A task
// that ran a hook carries its identity in task storage and stays confined; one still in
// the namespace that never ran one (forked, at most exec'd) loses it with the
// registration.
func (e *Enforcer) Unregister(mntns uint32) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	if err := e.del("containers", mntns); err != nil {
		return err
	}
	e.filterRemove(mntns)
	return nil
}

// Registered returns the registrations by mount namespace.
func (e *Enforcer) Registered() (map[uint32]tables.Registration, error) {
	ks, err := keys(e.maps["containers"])
	if err != nil {
		return nil, err
	}
	out := map[uint32]tables.Registration{}
	for _, k := range ks {
		ns := binary.LittleEndian.Uint32(k)
		var r tables.Registration
		if ok, err := e.get("containers", ns, &r); err != nil {
			return nil, err
		} else if ok {
			out[ns] = r
		}
	}
	return out, nil
}
