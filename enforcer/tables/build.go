// Package tables turns a compiled BPF profile (policies/compile/bpf) into the map entries
// the BPF LSM programs read: one profile body, a path DFA with its verdicts, socket and
// egress tables and mount masks. It is pure Go, so every table is tested on the host; the
// loader (enforcer/bpf) only writes the entries.
//
// Every lookup the programs make costs the same whatever the number of rules: a path is
// one DFA step per byte, capabilities and operations are bit masks, sockets are at most
// eight hash lookups, egress is one LPM lookup and a bounded range search, and mounts are
// an AND of fixed-width masks. Where several rules decide one operation, an enforced rule
// wins over an audited one, and among equals the first rule of the rule set.
package tables

import (
	"fmt"
	"net/netip"
	"slices"

	"github.com/podarmor/podarmor/enforcer/tables/dfa"
	"github.com/podarmor/podarmor/policies/api/v1alpha1"
	"github.com/podarmor/podarmor/policies/compile/bpf"
	"github.com/podarmor/podarmor/policies/pattern"
	"github.com/podarmor/podarmor/policies/ruleset"
)

// Image is a profile's tables, before the loader places them: the body's DFA base and slot
// are set by the loader, which owns the transition table's regions.
type Image struct {
	ProfileID string
	// Rules maps a rule index (what counters and events carry) to the rule's ID.
	Rules []string
	Body  ProfileBody
	// DFA is the path automaton, nil when the profile has no path rules.
	DFA *dfa.DFA
	// Accept holds the file verdicts of the DFA's accepting states.
	Accept map[uint32]VerdictsPath
	// Subtree holds, for each state a '/' leads to, the strongest verdict of any path
	// that extends a path ending there: what guards a directory's contents.
	Subtree map[uint32]Verdict
	// MountPaths holds the mount rules whose sources or targets accept at a state.
	MountPaths map[uint32]MountPaths
	// Sockets maps (family, type, protocol), with Any for a free field, to a verdict.
	Sockets map[SocketKey]Verdict
	// Egress4 and Egress6 are the prefix entries, each complete for its addresses.
	Egress4 []EgressEntry
	Egress6 []EgressEntry
	// Mount is nil when the profile has no mount rules.
	Mount   *MountBody
	FSTypes map[string]Mask
}

// EgressEntry is one LPM entry: a prefix and what applies to addresses under it.
type EgressEntry struct {
	Prefix netip.Prefix
	Ports  EgressPorts
}

// Limits bounds the tables of one profile.
type Limits struct {
	// DFA bounds the path automaton.
	DFA dfa.Limits
}

// Build compiles p into an Image.
func Build(p *bpf.Profile, lim Limits) (*Image, error) {
	if p.FormatVersion != bpf.FormatVersion {
		return nil, fmt.Errorf("profile %s: format version %d, this enforcer reads %d", p.ProfileID, p.FormatVersion, bpf.FormatVersion)
	}
	if p.Default != "" && p.Default != ruleset.Allow {
		return nil, fmt.Errorf("profile %s: default verdict %q: the BPF enforcer implements deny rules over an allow default only", p.ProfileID, p.Default)
	}
	b := builder{
		img: &Image{
			ProfileID:  p.ProfileID,
			Accept:     map[uint32]VerdictsPath{},
			Subtree:    map[uint32]Verdict{},
			MountPaths: map[uint32]MountPaths{},
			Sockets:    map[SocketKey]Verdict{},
			FSTypes:    map[string]Mask{},
		},
		index: map[string]uint16{},
	}
	for i := range b.img.Body.CapRule {
		b.img.Body.CapRule[i] = RuleNone
	}
	for i := range b.img.Body.OpRule {
		b.img.Body.OpRule[i] = RuleNone
	}
	for i := range b.img.Body.PtraceRule {
		for j := range b.img.Body.PtraceRule[i] {
			b.img.Body.PtraceRule[i][j] = RuleNone
		}
	}
	for i, r := range p.Rules {
		if err := b.add(r); err != nil {
			return nil, fmt.Errorf("profile %s: rules[%d] (%s): %w", p.ProfileID, i, r.ID, err)
		}
	}
	if err := b.finish(lim); err != nil {
		return nil, fmt.Errorf("profile %s: %w", p.ProfileID, err)
	}
	return b.img, nil
}

type pathTag struct {
	rule   uint16
	action Action
	perms  uint32 // file permission bits
	mount  int    // mount rule number, or -1
	source bool   // for a mount tag: source (else target)
}

type sockRule struct {
	key    SocketKey
	rule   uint16
	action Action
}

type egressRule struct {
	prefix netip.Prefix
	ports  []ruleset.PortRange
	protos []int // protocol indexes; empty means all
	rule   uint16
	action Action
}

type builder struct {
	img     *Image
	index   map[string]uint16
	entries []dfa.Entry
	tags    []pathTag
	sockets []sockRule
	egress  []egressRule
	mounts  int
}

func actionOf(a v1alpha1.Action) (Action, error) {
	switch a {
	case v1alpha1.ActionEnforce:
		return ActionEnforce, nil
	case v1alpha1.ActionAudit:
		return ActionAudit, nil
	}
	return ActionNone, fmt.Errorf("unknown action %q", a)
}

// ruleIndex returns the index of rule ID id, adding it.
func (b *builder) ruleIndex(id string) (uint16, error) {
	if i, ok := b.index[id]; ok {
		return i, nil
	}
	if len(b.img.Rules) > MaxRuleIndex {
		return 0, fmt.Errorf("more than %d distinct rule IDs", MaxRuleIndex+1)
	}
	i := uint16(len(b.img.Rules))
	b.img.Rules = append(b.img.Rules, id)
	b.index[id] = i
	return i, nil
}

// better reports whether a new decision (action a) should replace the current one (cur):
// enforce beats audit, and the first rule wins among equals.
func better(a, cur Action) bool {
	return cur == ActionNone || (a == ActionEnforce && cur == ActionAudit)
}

func (b *builder) add(r ruleset.Rule) error {
	action, err := actionOf(r.Action)
	if err != nil {
		return err
	}
	idx, err := b.ruleIndex(r.ID)
	if err != nil {
		return err
	}
	body := &b.img.Body
	switch r.Kind {
	case ruleset.KindFile:
		var perms uint32
		for _, p := range r.File.Permissions {
			bit, ok := filePerms[p]
			if !ok {
				return fmt.Errorf("unknown file permission %q", p)
			}
			perms |= 1 << bit
		}
		return b.addPaths(r.File.Paths, pathTag{rule: idx, action: action, perms: perms, mount: -1})
	case ruleset.KindExec:
		return b.addPaths(r.Exec.Paths, pathTag{rule: idx, action: action, perms: 1 << PermExec, mount: -1})
	case ruleset.KindCapability:
		for _, c := range r.Capability.Capabilities {
			n := slices.Index(v1alpha1.AllCapabilities, c)
			if n < 0 || n >= 64 {
				return fmt.Errorf("unknown capability %q", c)
			}
			setBit64(&body.CapEnforce, &body.CapAudit, &body.CapRule[n], uint(n), action, idx)
		}
	case ruleset.KindOperation:
		for _, o := range r.Operation.Operations {
			n, ok := operations[o]
			if !ok {
				return fmt.Errorf("unknown operation %q", o)
			}
			setBit32(&body.OpEnforce, &body.OpAudit, &body.OpRule[n], uint(n), action, idx)
		}
	case ruleset.KindPtrace:
		peers := PeersAny
		switch r.Ptrace.Peers {
		case v1alpha1.PtraceAnyPeer, "":
		case v1alpha1.PtraceOutsideContainer:
			peers = PeersOutside
		default:
			return fmt.Errorf("unknown ptrace peers %q", r.Ptrace.Peers)
		}
		for _, p := range r.Ptrace.Permissions {
			n, ok := ptracePerms[p]
			if !ok {
				return fmt.Errorf("unknown ptrace permission %q", p)
			}
			e, a := &body.PtraceEnforce[peers], &body.PtraceAudit[peers]
			cur := ActionNone
			if *e&(1<<n) != 0 {
				cur = ActionEnforce
			} else if *a&(1<<n) != 0 {
				cur = ActionAudit
			}
			if !better(action, cur) {
				continue
			}
			*e &^= 1 << n
			*a &^= 1 << n
			if action == ActionEnforce {
				*e |= 1 << n
			} else {
				*a |= 1 << n
			}
			body.PtraceRule[peers][n] = idx
		}
	case ruleset.KindSocket:
		return b.addSocket(r.Socket, idx, action)
	case ruleset.KindEgress:
		return b.addEgress(r.Egress, idx, action)
	case ruleset.KindMount:
		return b.addMount(r.Mount, idx, action)
	case ruleset.KindSyscall:
		return fmt.Errorf("system call rules are for seccomp, not BPF")
	default:
		return fmt.Errorf("unknown rule kind %q", r.Kind)
	}
	return nil
}

func setBit64(enforce, audit *uint64, rule *uint16, n uint, a Action, idx uint16) {
	cur := ActionNone
	if *enforce&(1<<n) != 0 {
		cur = ActionEnforce
	} else if *audit&(1<<n) != 0 {
		cur = ActionAudit
	}
	if !better(a, cur) {
		return
	}
	*enforce &^= 1 << n
	*audit &^= 1 << n
	if a == ActionEnforce {
		*enforce |= 1 << n
	} else {
		*audit |= 1 << n
	}
	*rule = idx
}

func setBit32(enforce, audit *uint32, rule *uint16, n uint, a Action, idx uint16) {
	e, au := uint64(*enforce), uint64(*audit)
	setBit64(&e, &au, rule, n, a, idx)
	*enforce, *audit = uint32(e), uint32(au)
}

func (b *builder) addPaths(paths []string, t pathTag) error {
	for _, s := range paths {
		p, err := pattern.Parse(s)
		if err != nil {
			return err
		}
		b.entries = append(b.entries, dfa.Entry{Pattern: p, Tag: uint32(len(b.tags))})
		b.tags = append(b.tags, t)
	}
	return nil
}

func (b *builder) finish(lim Limits) error {
	if err := b.finishPaths(lim); err != nil {
		return err
	}
	if err := b.finishSockets(); err != nil {
		return err
	}
	return b.finishEgress()
}

func (b *builder) finishPaths(lim Limits) error {
	if len(b.entries) == 0 {
		return nil
	}
	d, err := dfa.Build(b.entries, lim.DFA)
	if err != nil {
		return fmt.Errorf("path rules: %w", err)
	}
	b.img.DFA = d
	b.img.Body.DFAClasses = uint32(d.NumClasses)
	b.img.Body.DFAStates = uint32(d.NumStates)
	for s, tags := range d.Accept {
		if len(tags) == 0 {
			continue
		}
		v := VerdictsPath{}
		for i := range v.Rule {
			v.Rule[i] = RuleNone
		}
		var mp MountPaths
		var hasFile, hasMount bool
		// Tags are in rule-set order (they were numbered as rules were added).
		for _, tag := range tags {
			t := b.tags[tag]
			if t.mount >= 0 {
				hasMount = true
				if t.source {
					mp.Source.Set(t.mount)
				} else {
					mp.Target.Set(t.mount)
				}
				continue
			}
			hasFile = true
			for bit := range uint32(NumPerms) {
				if t.perms&(1<<bit) == 0 {
					continue
				}
				cur := ActionNone
				if v.Enforce&(1<<bit) != 0 {
					cur = ActionEnforce
				} else if v.Audit&(1<<bit) != 0 {
					cur = ActionAudit
				}
				if !better(t.action, cur) {
					continue
				}
				v.Enforce &^= 1 << bit
				v.Audit &^= 1 << bit
				if t.action == ActionEnforce {
					v.Enforce |= 1 << bit
				} else {
					v.Audit |= 1 << bit
				}
				v.Rule[bit] = t.rule
			}
		}
		if hasFile {
			b.img.Accept[uint32(s)] = v
		}
		if hasMount {
			b.img.MountPaths[uint32(s)] = mp
		}
	}
	b.subtrees()
	return nil
}

// subtrees computes Subtree: every accepting state's strongest verdict flows back to the
// states that reach it, enforce over audit and the lower rule index among equals.
func (b *builder) subtrees() {
	d := b.img.DFA
	best := make([]Verdict, d.NumStates)
	stronger := func(a, c Verdict) bool {
		return a.Action != ActionNone && (better(a.Action, c.Action) || a.Action == c.Action && a.Rule < c.Rule)
	}
	var work []uint32
	for s, v := range b.img.Accept {
		own := Verdict{Rule: RuleNone}
		for bit := range uint32(NumPerms) {
			a := ActionNone
			if v.Enforce&(1<<bit) != 0 {
				a = ActionEnforce
			} else if v.Audit&(1<<bit) != 0 {
				a = ActionAudit
			}
			if c := (Verdict{Action: a, Rule: v.Rule[bit]}); stronger(c, own) {
				own = c
			}
		}
		best[s] = own
		work = append(work, s)
	}
	// reverse edges
	preds := make([][]uint32, d.NumStates)
	slash := d.Classes['/']
	into := make([]bool, d.NumStates) // reached by '/'
	for s := 1; s < d.NumStates; s++ {
		for c := range d.NumClasses {
			t := d.Trans[s*d.NumClasses+c]
			if t == 0 {
				continue
			}
			preds[t] = append(preds[t], uint32(s))
			if c == int(slash) {
				into[t] = true
			}
		}
	}
	for len(work) > 0 {
		t := work[len(work)-1]
		work = work[:len(work)-1]
		for _, s := range preds[t] {
			if stronger(best[t], best[s]) {
				best[s] = best[t]
				work = append(work, s)
			}
		}
	}
	for s := 1; s < d.NumStates; s++ {
		if into[s] && best[s].Action != ActionNone {
			b.img.Subtree[uint32(s)] = best[s]
		}
	}
}

var filePerms = map[v1alpha1.FilePermission]Perm{
	v1alpha1.FileRead: PermRead, v1alpha1.FileWrite: PermWrite, v1alpha1.FileAppend: PermAppend,
	v1alpha1.FileCreate: PermCreate, v1alpha1.FileDelete: PermDelete, v1alpha1.FileRename: PermRename,
	v1alpha1.FileLink: PermLink, v1alpha1.FileChmod: PermChmod, v1alpha1.FileChown: PermChown,
}

var operations = map[v1alpha1.Operation]Op{
	v1alpha1.OperationBPF: OpBPF, v1alpha1.OperationKernelModule: OpKernelModule,
	v1alpha1.OperationUsernsCreate: OpUsernsCreate, v1alpha1.OperationUserfaultfd: OpUserfaultfd,
	v1alpha1.OperationIoUring: OpIoUring, v1alpha1.OperationPerfEvent: OpPerfEvent,
	v1alpha1.OperationChmodSetuid: OpChmodSetuid,
}

var ptracePerms = map[v1alpha1.PtracePermission]uint{
	v1alpha1.PtraceTrace: PtraceTrace, v1alpha1.PtraceRead: PtraceRead,
	v1alpha1.PtraceTracedBy: PtraceTracedBy, v1alpha1.PtraceReadBy: PtraceReadBy,
}
