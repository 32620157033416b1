package dfa

// number turns the partition of the subset automaton's states into the final DFA: one
// state a block, classes with equal columns merged, the classes numbered in order of their
// smallest byte and the states breadth first from the start, the dead state 0 and the
// start 1. Every choice depends on the minimal automaton alone, which is unique, so equal
// languages with equal tags give identical tables.
func number(sub *subsetDFA, classOf [256]uint8, numClasses int, blockOf []int32, numBlocks int) *DFA {
	// The block automaton: any state of a block stands for it.
	bt := make([]int32, numBlocks*numClasses)
	accept := make([]int32, numBlocks)
	for s := range sub.numStates {
		b := int(blockOf[s])
		for c := range numClasses {
			bt[b*numClasses+c] = blockOf[sub.trans[s*numClasses+c]]
		}
		accept[b] = sub.accept[s]
	}
	dead, start := blockOf[0], blockOf[1]
	if dead == start {
		// Nothing matches; the start state is a second dead state.
		return &DFA{NumClasses: 1, NumStates: 2, Trans: make([]uint32, 2), Accept: make([][]uint32, 2)}
	}

	// Classes whose columns are equal go to the same state from every state. Columns are
	// grouped by a hash and compared in full, to spare copying them as map keys.
	groupOf := make([]int, numClasses)
	groups := map[uint64][]int{} // hash -> the first class of each group with that hash
	numGroups := 0
	for c := range numClasses {
		sum := uint64(14695981039346656037) // FNV-1a over the column's states
		for b := range numBlocks {
			sum = (sum ^ uint64(bt[b*numClasses+c])) * 1099511628211
		}
		groupOf[c] = -1
		for _, c2 := range groups[sum] {
			if sameColumn(bt, numClasses, c, c2) {
				groupOf[c] = groupOf[c2]
				break
			}
		}
		if groupOf[c] < 0 {
			groupOf[c] = numGroups
			numGroups++
			groups[sum] = append(groups[sum], c)
		}
	}
	d := &DFA{}
	final := make([]int, numGroups)  // final class + 1 of each group, 0 while unnumbered
	rep := make([]int, 0, numGroups) // an initial class of each final class
	for b := range 256 {
		g := groupOf[classOf[b]]
		if final[g] == 0 {
			rep = append(rep, int(classOf[b]))
			final[g] = len(rep)
		}
		d.Classes[b] = uint8(final[g] - 1)
	}
	d.NumClasses = len(rep)

	// Breadth first from the start, over the classes in order.
	id := make([]int32, numBlocks)
	for i := range id {
		id[i] = -1
	}
	id[dead], id[start] = 0, 1
	order := []int32{dead, start}
	for i := 1; i < len(order); i++ {
		b := int(order[i])
		for _, c := range rep {
			if t := bt[b*numClasses+c]; id[t] < 0 {
				id[t] = int32(len(order))
				order = append(order, t)
			}
		}
	}
	d.NumStates = len(order)
	d.Trans = make([]uint32, d.NumStates*d.NumClasses)
	d.Accept = make([][]uint32, d.NumStates)
	for s, b := range order {
		if s > 0 {
			for fc, c := range rep {
				d.Trans[s*d.NumClasses+fc] = uint32(id[bt[int(b)*numClasses+c]])
			}
		}
		d.Accept[s] = sub.tagSets[accept[b]]
	}
	return d
}

// sameColumn reports whether classes a and b lead every state of the table bt to the same
// state.
func sameColumn(bt []int32, numClasses, a, b int) bool {
	for i := 0; i < len(bt); i += numClasses {
		if bt[i+a] != bt[i+b] {
			return false
		}
	}
	return true
}
