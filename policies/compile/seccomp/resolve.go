package seccomp

import (
	"cmp"
	"fmt"
	"slices"

	specs "github.com/opencontainers/runtime-spec/specs-go"
)

// call is one system call of an entry: the unit libseccomp builds its filter from.
type call struct {
	name string
	args []specs.LinuxSeccompArg
	verdict
	rule string
	seq  int // the entry it came from, for a stable order
}

// rank orders verdicts by what wins when two rules match one call: a deny beats a log,
// and of denies, EPERM (a rule's own answer) beats ENOSYS (a way to send libc to an
// older system call that the profile can inspect).
func (v verdict) rank() int {
	switch v.errno {
	case 0:
		return 0
	case errnoEPERM:
		return 2
	default:
		return 1
	}
}

// resolve turns entries into the profile's system call list. libseccomp builds one
// decision tree per system call from every rule for it and cannot hold overlapping rules
// of different actions (it fails with EEXIST, or keeps whichever rule its tree reaches
// first), so resolve leaves each system call with rules that either share one verdict or
// cannot match the same call:
//
//   - a rule whose calls a rule of the same or a stronger verdict also matches is dropped:
//     the stronger verdict is what the kernel would return for them anyway;
//   - rules of different verdicts that could both match one call are an error, since
//     dropping either would silently narrow a rule.
//
// The surviving rules are grouped back into entries of equal verdict and arguments, in
// the order of the entries they came from, with their names sorted.
func resolve(entries []entry) ([]specs.LinuxSyscall, error) {
	byName := map[string][]call{}
	var order []string
	for seq, e := range entries {
		for _, n := range e.names {
			if _, ok := byName[n]; !ok {
				order = append(order, n)
			}
			byName[n] = append(byName[n], call{name: n, args: e.args, verdict: e.verdict, rule: e.rule, seq: seq})
		}
	}
	var kept []call
	for _, name := range order {
		calls := byName[name]
		// Strongest verdict first; of equals, the widest (fewest comparisons) first, so
		// that it can drop the narrower ones.
		slices.SortStableFunc(calls, func(a, b call) int {
			return cmp.Or(b.rank()-a.rank(), len(a.args)-len(b.args), a.seq-b.seq)
		})
		var mine []call
	next:
		for _, c := range calls {
			for _, k := range mine {
				if (k.verdict == c.verdict || k.rank() > c.rank()) && implies(c.args, k.args) {
					continue next
				}
			}
			for _, k := range mine {
				if k.verdict != c.verdict && !disjoint(k.args, c.args) {
					return nil, fmt.Errorf("rules %q and %q both match some %s calls but do different things with them, which libseccomp cannot hold in one filter; give them the same action", k.rule, c.rule, name)
				}
			}
			mine = append(mine, c)
		}
		kept = append(kept, mine...)
	}

	type group struct {
		seq   int
		names []string
		call  call
	}
	var groups []*group
	for _, c := range kept {
		i := slices.IndexFunc(groups, func(g *group) bool {
			return g.call.verdict == c.verdict && slices.Equal(g.call.args, c.args)
		})
		if i < 0 {
			groups = append(groups, &group{seq: c.seq, call: c})
			i = len(groups) - 1
		}
		g := groups[i]
		g.seq = min(g.seq, c.seq)
		if !slices.Contains(g.names, c.name) {
			g.names = append(g.names, c.name)
		}
	}
	slices.SortStableFunc(groups, func(a, b *group) int { return a.seq - b.seq })
	out := make([]specs.LinuxSyscall, 0, len(groups))
	for _, g := range groups {
		slices.Sort(g.names)
		s := specs.LinuxSyscall{Names: g.names, Args: slices.Clone(g.call.args)}
		if g.call.errno == 0 {
			s.Action = specs.ActLog
		} else {
			errno := g.call.errno
			s.Action = specs.ActErrno
			s.ErrnoRet = &errno
		}
		out = append(out, s)
	}
	return out, nil
}

// implies reports whether every call that matches the comparisons a also matches the
// comparisons b, judged by b's comparisons all being among a's. False answers may be
// wrong; resolve then keeps both rules, or reports a conflict, which is safe.
func implies(a, b []specs.LinuxSeccompArg) bool {
	for _, y := range b {
		if !slices.Contains(a, y) {
			return false
		}
	}
	return true
}

// disjoint reports whether no call can match both a and b: some argument has comparisons
// in both that cannot hold together. False answers may be wrong (resolve then reports a
// conflict, which is safe); true answers are not.
func disjoint(a, b []specs.LinuxSeccompArg) bool {
	for _, x := range a {
		for _, y := range b {
			if x.Index == y.Index && exclusive(x, y) {
				return true
			}
		}
	}
	return false
}

// exclusive reports whether no value satisfies both comparisons, for the combinations
// whose answer is simple; otherwise false.
func exclusive(x, y specs.LinuxSeccompArg) bool {
	xm, xv, xok := asMasked(x)
	ym, yv, yok := asMasked(y)
	switch {
	case xok && yok:
		// Both fix some bits: they conflict where both fix a bit to different values.
		return (xv^yv)&xm&ym != 0
	case xok && xm == ^uint64(0):
		return !holds(y, xv)
	case yok && ym == ^uint64(0):
		return !holds(x, yv)
	}
	xlo, xhi, xr := interval(x)
	ylo, yhi, yr := interval(y)
	if xr && xlo > xhi || yr && ylo > yhi {
		return true // one of them holds for no value
	}
	return xr && yr && (xhi < ylo || yhi < xlo)
}

// asMasked returns an Equal or MaskedEqual comparison as "arg & mask == value".
func asMasked(c specs.LinuxSeccompArg) (mask, value uint64, ok bool) {
	switch c.Op {
	case specs.OpEqualTo:
		return ^uint64(0), c.Value, true
	case specs.OpMaskedEqual:
		return c.Value, c.ValueTwo, true
	}
	return 0, 0, false
}

// interval returns the values a range comparison accepts as [lo, hi].
func interval(c specs.LinuxSeccompArg) (lo, hi uint64, ok bool) {
	switch c.Op {
	case specs.OpLessThan:
		if c.Value == 0 {
			return 1, 0, true // no value
		}
		return 0, c.Value - 1, true
	case specs.OpLessEqual:
		return 0, c.Value, true
	case specs.OpGreaterThan:
		if c.Value == ^uint64(0) {
			return 1, 0, true
		}
		return c.Value + 1, ^uint64(0), true
	case specs.OpGreaterEqual:
		return c.Value, ^uint64(0), true
	}
	return 0, 0, false
}

// holds reports whether value satisfies the comparison c.
func holds(c specs.LinuxSeccompArg, value uint64) bool {
	switch c.Op {
	case specs.OpEqualTo:
		return value == c.Value
	case specs.OpNotEqual:
		return value != c.Value
	case specs.OpLessThan:
		return value < c.Value
	case specs.OpLessEqual:
		return value <= c.Value
	case specs.OpGreaterThan:
		return value > c.Value
	case specs.OpGreaterEqual:
		return value >= c.Value
	case specs.OpMaskedEqual:
		return value&c.Value == c.ValueTwo
	}
	return true
}
