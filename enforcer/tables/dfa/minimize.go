package dfa

import "slices"

// minimize merges the equivalent states of d by Hopcroft's partition refinement, starting
// from the partition by tag set so that states reporting different tags never merge. It
// returns the block of every state and the number of blocks.
//
// The partition is kept as a permutation of the states in which each block is a
// contiguous range, as in Valmari and Lehtinen's refinable partition, so a split moves
// only the states that a splitter marks and costs time proportional to them.
func minimize(d *subsetDFA, numClasses int) (blockOf []int32, numBlocks int) {
	n := d.numStates
	if n == 0 {
		return nil, 0
	}

	// preds[predStart[k]:predStart[k+1]] with k = t*numClasses+c are the states whose
	// transition on class c leads to t: a counting sort, filling each bucket from its end.
	predStart := make([]int32, n*numClasses+1)
	for s := range n {
		for c := range numClasses {
			predStart[int(d.trans[s*numClasses+c])*numClasses+c]++
		}
	}
	for k := 1; k < len(predStart); k++ {
		predStart[k] += predStart[k-1]
	}
	preds := make([]int32, n*numClasses)
	for s := range n {
		for c := range numClasses {
			k := int(d.trans[s*numClasses+c])*numClasses + c
			predStart[k]--
			preds[predStart[k]] = int32(s)
		}
	}

	// The initial partition: states in order of their tag set, one block per tag set.
	elems := make([]int32, n)
	for s := range elems {
		elems[s] = int32(s)
	}
	slices.SortStableFunc(elems, func(a, b int32) int { return int(d.accept[a] - d.accept[b]) })
	blockOf = make([]int32, n)
	loc := make([]int32, n)
	var first, end []int32
	for i, s := range elems {
		if i == 0 || d.accept[s] != d.accept[elems[i-1]] {
			first = append(first, int32(i))
			end = append(end, int32(i))
		}
		b := len(first) - 1
		blockOf[s] = int32(b)
		loc[s] = int32(i)
		end[b]++
	}
	marked := make([]int32, len(first))

	// The work list of splitters (block, class). Hopcroft's argument lets one block of
	// the initial partition out, as the others imply it; leaving out the largest saves
	// the most work.
	type splitter struct{ block, class int32 }
	var work []splitter
	largest := 0
	for b := range first {
		if end[b]-first[b] > end[largest]-first[largest] {
			largest = b
		}
	}
	for b := range first {
		if b == largest {
			continue
		}
		for c := range numClasses {
			work = append(work, splitter{int32(b), int32(c)})
		}
	}

	var x []int32       // the states with a transition into the splitter
	var touched []int32 // the blocks holding states of x
	for len(work) > 0 {
		sp := work[len(work)-1]
		work = work[:len(work)-1]

		x = x[:0]
		for _, t := range elems[first[sp.block]:end[sp.block]] {
			k := int(t)*numClasses + int(sp.class)
			x = append(x, preds[predStart[k]:predStart[k+1]]...)
		}
		// Each state has one transition on a class, so x holds no state twice.
		touched = touched[:0]
		for _, s := range x {
			b := blockOf[s]
			if marked[b] == 0 {
				touched = append(touched, b)
			}
			// Swap s to the end of the marked front of its block.
			i, j := loc[s], first[b]+marked[b]
			other := elems[j]
			elems[i], elems[j] = other, s
			loc[other], loc[s] = i, j
			marked[b]++
		}
		for _, b := range touched {
			m := marked[b]
			marked[b] = 0
			size := end[b] - first[b]
			if m == size {
				continue
			}
			// The new block takes the smaller part. Whether or not (b, c) waits in the
			// work list, adding (new, c) for every class is then what Hopcroft needs.
			nb := int32(len(first))
			if m <= size-m {
				first = append(first, first[b])
				end = append(end, first[b]+m)
				first[b] += m
			} else {
				first = append(first, first[b]+m)
				end = append(end, end[b])
				end[b] = first[b] + m
			}
			marked = append(marked, 0)
			for _, s := range elems[first[nb]:end[nb]] {
				blockOf[s] = nb
			}
			for c := range numClasses {
				work = append(work, splitter{nb, int32(c)})
			}
		}
	}
	return blockOf, len(first)
}
