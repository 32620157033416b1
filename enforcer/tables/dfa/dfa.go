// Package dfa compiles a set of path patterns into one deterministic finite automaton over
// a path's bytes, the table the BPF LSM enforcer walks to match a resolved path against
// every pattern of a profile in time proportional to the path's length alone:
//
//	state := 1
//	for each byte b of the path:
//		state = Trans[state*NumClasses + Classes[b]]
//		if state == 0: stop, nothing can match
//	report Accept[state]
//
// The meaning of a pattern is [pattern.Pattern.Match]'s, for the canonical absolute paths
// the kernel hands to LSM hooks; the package's tests hold every case of [pattern.Cases] to
// it, one pattern at a time and all at once. A path that does not start with '/' matches
// nothing. What a non-canonical path (with "//", "." or ".." components or a trailing
// slash) matches is unspecified, as it is for Match.
//
// # Construction
//
// [Build] translates each pattern's [pattern.Pattern.Segments] into an ε-free NFA over
// bytes (literal bytes in a chain, each '*' a node looping on every byte but '/', each
// "**" a loop over '/' and a non-empty component), joins them at one start node, and
// determinises the union by the subset construction, over byte classes: each byte that
// some pattern names literally is a class of its own, '/' is one, and every other byte
// shares one class. A state accepts the sorted tags of the patterns whose final nodes its
// set holds. Hopcroft's algorithm then merges equivalent states, starting from the
// partition by tag set so that states reporting different tags never merge, and classes
// whose columns in the minimal table are equal merge too. Last, the states are numbered
// breadth first from the start over the classes in order, the dead state 0 and the start
// 1, and the classes in order of their smallest byte: the minimal automaton is unique, so
// the same patterns with the same tags give byte-identical tables, in whatever order they
// are given.
//
// # Size
//
// Literal patterns and literal prefixes followed by "**" cost about one state per byte
// not shared with another pattern. Wildcards cost more, as the automaton must track every
// way the patterns so far could still match: a "**" or '*' followed by more text (such
// as "/**/id_rsa" or "/home/*/.ssh/**") multiplies the states of the patterns that share
// its prefix, and patterns such as "/**/x/*/*/*/*/*/*/*/*" need exponentially many. [Limits]
// bounds the construction, which fails fast with a [*LimitError] rather than exhaust
// memory.
//
// BenchmarkBuild1024 builds 1,024 generated patterns of realistic shapes: mostly literals
// and prefixes followed by "/**", some globs such as "/proc/*/mem" and "/usr/bin/*sh", a
// few "**" in the middle and two names anywhere, "/**/id_rsa" and "/**/.git-credentials".
// It makes 28,987 states and 39 classes, a transition table of 4,521,972 bytes (4.3 MiB)
// and 26,271 tags across the accepting states, in about 0.15-0.2 s of CPU and 45 MB of
// allocation (AMD EPYC, Go 1.26). The two names anywhere nearly double the states: without
// them there are 15,732, and the 825 literals and prefixes followed by "/**" alone make
// 8,853. The subset construction makes less than 1% more states than the minimum.
package dfa

import (
	"fmt"

	"github.com/podarmor/podarmor/policies/pattern"
)

// Entry is one pattern and the tag reported when it matches, such as a rule index.
type Entry struct {
	// Pattern is the pattern to match; the zero Pattern is an error.
	Pattern pattern.Pattern
	// Tag is what Match reports for a path the pattern matches. Entries may share a tag.
	Tag uint32
}

// DFA is a deterministic automaton over a path's bytes, in the form the BPF program walks.
// Build returns it; it is not to be changed afterwards.
type DFA struct {
	// Classes maps every byte to its equivalence class: bytes no pattern distinguishes
	// share a class.
	Classes [256]uint8
	// NumClasses is the number of classes, at most 256.
	NumClasses int
	// NumStates is the number of states, including the dead state 0 and the start state 1.
	NumStates int
	// Trans[s*NumClasses+c] is the state after state s reads a byte of class c. State 0 is
	// dead: it is absorbing, and no path with a prefix leading there matches anything.
	// State 1 is the start state. An all-zero table therefore matches nothing.
	Trans []uint32
	// Accept[s] is the sorted, de-duplicated list of the tags of the patterns that match a
	// path ending in state s, nil when there is none. States with equal lists may share
	// one slice.
	Accept [][]uint32
}

// Limits bounds the automaton Build makes. A zero field takes its default.
type Limits struct {
	// MaxStates bounds the states, of the automaton before minimisation as well as after:
	// the subset construction stops when it would make more. It also bounds the memory
	// the construction holds for the NFA node sets of its states, to 1 KiB a state on
	// average. The default, DefaultMaxStates, keeps a table of 256 classes within 64 MiB.
	MaxStates int
	// MaxClasses bounds the byte classes of the minimal automaton. The default,
	// DefaultMaxClasses, is every byte its own class, so it never fails; set a smaller
	// value to bound the width of the table.
	MaxClasses int
}

// Defaults for Limits' zero fields.
const (
	// DefaultMaxStates is the default Limits.MaxStates.
	DefaultMaxStates = 65536
	// DefaultMaxClasses is the default Limits.MaxClasses: the 256 a uint8 class can number.
	DefaultMaxClasses = 256
)

// setBytesPerState is the average size, in bytes, of a state's NFA node set that
// Limits.MaxStates allows the subset construction to hold: 256 nodes. The sets of
// BenchmarkBuild1024 average 5 nodes, those of the shared table's patterns 20.
const setBytesPerState = 1024

// defaults fills the zero fields of lim and rejects the others that are out of range.
func (lim Limits) defaults() (Limits, error) {
	if lim.MaxStates == 0 {
		lim.MaxStates = DefaultMaxStates
	}
	if lim.MaxClasses == 0 {
		lim.MaxClasses = DefaultMaxClasses
	}
	switch {
	case lim.MaxStates < 2:
		return lim, fmt.Errorf("limits: MaxStates %d is below 2, the dead and start states", lim.MaxStates)
	case lim.MaxClasses < 2:
		return lim, fmt.Errorf("limits: MaxClasses %d is below 2, '/' and the other bytes", lim.MaxClasses)
	}
	return lim, nil
}

// LimitError is the error Build returns when the automaton would exceed one of its Limits.
type LimitError struct {
	// Limit names the field of Limits that was hit: "MaxStates" or "MaxClasses".
	Limit string
	// Max is the value of that field.
	Max int
	// Needed is how many states or classes the automaton needed when Build stopped: a
	// lower bound, as the subset construction had not explored every state it had made.
	Needed int
	// Unexplored, for MaxStates, is how many of the states made had not been explored
	// yet, each of which may lead to more.
	Unexplored int
	// Memory, for MaxStates, reports that the NFA node sets of the states made outgrew
	// the memory MaxStates allows before their number did.
	Memory bool
}

// Error says which limit was hit and how far the construction got, such as
// "automaton needs at least 65537 states, more than Limits.MaxStates 65536 (16383 of
// them not yet explored)".
func (e *LimitError) Error() string {
	switch {
	case e.Limit == "MaxClasses":
		return fmt.Sprintf("automaton needs %d byte classes, more than Limits.MaxClasses %d", e.Needed, e.Max)
	case e.Memory:
		return fmt.Sprintf("automaton needs more than the %d KiB of NFA node sets Limits.MaxStates %d allows, at %d states (%d of them not yet explored)",
			e.Max*setBytesPerState/1024, e.Max, e.Needed, e.Unexplored)
	}
	return fmt.Sprintf("automaton needs at least %d states, more than Limits.MaxStates %d (%d of them not yet explored)",
		e.Needed, e.Max, e.Unexplored)
}

// Build compiles the entries into one automaton. Its errors are a *LimitError when the
// automaton outgrows lim, and otherwise name the entry at fault.
func Build(entries []Entry, lim Limits) (*DFA, error) {
	lim, err := lim.defaults()
	if err != nil {
		return nil, err
	}
	n, err := buildNFA(entries)
	if err != nil {
		return nil, err
	}
	classOf, numClasses := initialClasses(n)
	sub, err := subsetConstruct(n, lim)
	if err != nil {
		return nil, fmt.Errorf("build path automaton of %d patterns: %w", len(entries), err)
	}
	blockOf, numBlocks := minimize(sub, numClasses)
	d := number(sub, classOf, numClasses, blockOf, numBlocks)
	if d.NumClasses > lim.MaxClasses {
		return nil, fmt.Errorf("build path automaton of %d patterns: %w", len(entries),
			&LimitError{Limit: "MaxClasses", Max: lim.MaxClasses, Needed: d.NumClasses})
	}
	return d, nil
}

// Match walks path through the automaton as the BPF program does, from state 1 one byte
// at a time, stopping at the dead state, and returns the tags of the state it ends in:
// the sorted tags of the patterns that match path, nil when none does. The caller must
// not change the result.
func (d *DFA) Match(path []byte) []uint32 {
	if d.NumStates < 2 {
		return nil
	}
	state := uint32(1)
	for _, b := range path {
		state = d.Trans[int(state)*d.NumClasses+int(d.Classes[b])]
		if state == 0 {
			return nil
		}
	}
	return d.Accept[state]
}
