package dfa

import (
	"encoding/binary"
	"slices"
)

// subsetDFA is the result of the subset construction: a complete DFA over the initial
// byte classes, not yet minimal. State 0 is the empty set of NFA nodes, state 1 the start.
type subsetDFA struct {
	numStates int
	// trans[s*numClasses+c] is the next state.
	trans []uint32
	// accept[s] indexes tagSets: the tags of the patterns that match in state s.
	accept  []int32
	tagSets [][]uint32
}

// subsetBuilder holds the state of a subset construction.
type subsetBuilder struct {
	n          *nfa
	classOf    [256]uint8
	numClasses int
	slash      int // the class of '/', which has no other byte
	lim        Limits

	// keys[s] is the sorted set of NFA nodes of state s, four little-endian bytes a node;
	// index maps a key back to its state.
	keys    []string
	index   map[string]uint32
	keyMem  int // bytes held in keys
	out     subsetDFA
	tagSets map[string]int32

	// Scratch space reused from state to state.
	seen    []uint32 // seen[node] == stamp: node is already in the set being built
	stamp   uint32
	star    []int32   // nodes reached on anyButSlash
	byClass [][]int32 // nodes reached on each class's own bytes
	own     []int     // the classes whose byClass is not empty
	merged  []int32
	keyBuf  []byte
	tagBuf  []uint32
	tagKey  []byte
}

// initialClasses gives every byte some pattern names its own class, as the NFA must tell it
// from every other byte, and puts all the other bytes in one class. '/' is always named, by
// the edge to rootNode, so it is always a class of its own.
func initialClasses(n *nfa) (classOf [256]uint8, numClasses int) {
	other := -1
	for b := 0; b < 256; b++ {
		switch {
		case n.literal[b] || b == '/':
			classOf[b] = uint8(numClasses)
			numClasses++
		case other < 0:
			other = numClasses
			classOf[b] = uint8(numClasses)
			numClasses++
		default:
			classOf[b] = uint8(other)
		}
	}
	return classOf, numClasses
}

// subsetConstruct determinises n, exploring states breadth first and failing as soon as
// the automaton outgrows lim.
func subsetConstruct(n *nfa, lim Limits) (*subsetDFA, error) {
	sb := &subsetBuilder{
		n:       n,
		lim:     lim,
		index:   map[string]uint32{},
		tagSets: map[string]int32{},
		seen:    make([]uint32, len(n.tags)),
	}
	sb.classOf, sb.numClasses = initialClasses(n)
	sb.slash = int(sb.classOf['/'])
	sb.byClass = make([][]int32, sb.numClasses)

	if _, err := sb.intern(nil); err != nil { // the dead state, 0
		return nil, err
	}
	if _, err := sb.intern([]int32{initNode}); err != nil { // the start state, 1
		return nil, err
	}

	for s := 0; s < len(sb.keys); s++ {
		if err := sb.explore(s); err != nil {
			return nil, err
		}
	}
	sb.out.numStates = len(sb.keys)
	return &sb.out, nil
}

// explore fills in the transitions of state s, interning the states they lead to.
func (sb *subsetBuilder) explore(s int) error {
	key := sb.keys[s]
	sb.star = sb.star[:0]
	sb.own = sb.own[:0]
	sb.stamp++
	for i := 0; i < len(key); i += 4 {
		node := uint32(key[i]) | uint32(key[i+1])<<8 | uint32(key[i+2])<<16 | uint32(key[i+3])<<24
		for _, e := range sb.n.out[sb.n.first[node]:sb.n.first[node+1]] {
			if e.sym == anyButSlash {
				if sb.seen[e.to] != sb.stamp {
					sb.seen[e.to] = sb.stamp
					sb.star = append(sb.star, e.to)
				}
				continue
			}
			c := int(sb.classOf[e.sym])
			if len(sb.byClass[c]) == 0 {
				sb.own = append(sb.own, c)
			}
			sb.byClass[c] = append(sb.byClass[c], e.to)
		}
	}
	slices.Sort(sb.star)

	row := len(sb.out.trans)
	if row+sb.numClasses > cap(sb.out.trans) {
		// Double, rather than let append grow a large slice by a quarter at a time.
		sb.out.trans = slices.Grow(sb.out.trans, max(row, 64*sb.numClasses))
	}
	sb.out.trans = sb.out.trans[:row+sb.numClasses]
	clear(sb.out.trans[row:])
	// Most classes have no targets of their own: they all go where anyButSlash goes, and
	// '/' without targets of its own goes to the dead state.
	starState := -1
	for c := range sb.numClasses {
		if c == sb.slash || len(sb.byClass[c]) > 0 {
			continue
		}
		if starState < 0 {
			t, err := sb.intern(sb.star)
			if err != nil {
				return err
			}
			starState = int(t)
		}
		sb.out.trans[row+c] = uint32(starState)
	}
	for _, c := range sb.own {
		targets := sb.byClass[c]
		slices.Sort(targets)
		targets = slices.Compact(targets)
		var set []int32
		if c == sb.slash {
			set = targets
		} else {
			sb.merged = mergeSorted(sb.merged[:0], sb.star, targets)
			set = sb.merged
		}
		t, err := sb.intern(set)
		if err != nil {
			return err
		}
		sb.out.trans[row+c] = t
		sb.byClass[c] = sb.byClass[c][:0]
	}
	return nil
}

// mergeSorted appends the union of the sorted, duplicate-free a and b to dst.
func mergeSorted(dst, a, b []int32) []int32 {
	for len(a) > 0 && len(b) > 0 {
		switch {
		case a[0] < b[0]:
			dst, a = append(dst, a[0]), a[1:]
		case a[0] > b[0]:
			dst, b = append(dst, b[0]), b[1:]
		default:
			dst, a, b = append(dst, a[0]), a[1:], b[1:]
		}
	}
	dst = append(dst, a...)
	return append(dst, b...)
}

// intern returns the state of the sorted node set, making a new state if there is none.
func (sb *subsetBuilder) intern(set []int32) (uint32, error) {
	sb.keyBuf = sb.keyBuf[:0]
	for _, n := range set {
		sb.keyBuf = binary.LittleEndian.AppendUint32(sb.keyBuf, uint32(n))
	}
	if s, ok := sb.index[string(sb.keyBuf)]; ok {
		return s, nil
	}
	if len(sb.keys) >= sb.lim.MaxStates {
		return 0, &LimitError{Limit: "MaxStates", Max: sb.lim.MaxStates, Needed: len(sb.keys) + 1,
			Unexplored: len(sb.keys) - sb.explored()}
	}
	if sb.keyMem+len(sb.keyBuf) > sb.lim.MaxStates*setBytesPerState {
		return 0, &LimitError{Limit: "MaxStates", Max: sb.lim.MaxStates, Needed: len(sb.keys),
			Unexplored: len(sb.keys) - sb.explored(), Memory: true}
	}
	key := string(sb.keyBuf)
	s := uint32(len(sb.keys))
	sb.keys = append(sb.keys, key)
	sb.keyMem += len(key)
	sb.index[key] = s
	sb.out.accept = append(sb.out.accept, sb.acceptOf(set))
	return s, nil
}

// explored returns how many states have their transitions filled in.
func (sb *subsetBuilder) explored() int {
	return len(sb.out.trans) / sb.numClasses
}

// acceptOf returns the tag set of the nodes in set.
func (sb *subsetBuilder) acceptOf(set []int32) int32 {
	sb.tagBuf = sb.tagBuf[:0]
	for _, n := range set {
		sb.tagBuf = append(sb.tagBuf, sb.n.tags[n]...)
	}
	slices.Sort(sb.tagBuf)
	return sb.tagSet(slices.Compact(sb.tagBuf))
}

// tagSet interns a sorted, duplicate-free tag set; the empty set is always index 0.
func (sb *subsetBuilder) tagSet(tags []uint32) int32 {
	sb.tagKey = sb.tagKey[:0]
	for _, t := range tags {
		sb.tagKey = binary.LittleEndian.AppendUint32(sb.tagKey, t)
	}
	if i, ok := sb.tagSets[string(sb.tagKey)]; ok {
		return i
	}
	i := int32(len(sb.out.tagSets))
	if len(tags) == 0 {
		sb.out.tagSets = append(sb.out.tagSets, nil)
	} else {
		sb.out.tagSets = append(sb.out.tagSets, slices.Clone(tags))
	}
	sb.tagSets[string(sb.tagKey)] = i
	return i
}
