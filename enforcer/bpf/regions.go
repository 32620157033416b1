package bpf

import "slices"

// region is a run of entries of the transition table.
type region struct{ start, size uint32 }

// regions hands out runs of the transition table, first fit within a page, merging freed
// neighbours.
type regions struct {
	holes []region // sorted by start, disjoint, never adjacent
}

func newRegions(size uint32) regions {
	return regions{holes: []region{{0, size}}}
}

// alloc takes the first run of n entries that does not cross a multiple of page (a
// body's transitions lie in one page of the table).
func (r *regions) alloc(n, page uint32) (region, bool) {
	if n == 0 {
		return region{}, true
	}
	if n > page {
		return region{}, false
	}
	for _, h := range r.holes {
		start := h.start
		if start/page != (start+n-1)/page {
			start = (start/page + 1) * page
		}
		if uint64(start)+uint64(n) > uint64(h.start)+uint64(h.size) {
			continue
		}
		g := region{start, n}
		r.reserve(g)
		return g, true
	}
	return region{}, false
}

// reserve takes a given region out of the holes, for state adopted from pinned maps.
func (r *regions) reserve(g region) bool {
	if g.size == 0 {
		return true
	}
	for i, h := range r.holes {
		if g.start < h.start || g.start+g.size > h.start+h.size {
			continue
		}
		var parts []region
		if g.start > h.start {
			parts = append(parts, region{h.start, g.start - h.start})
		}
		if end := h.start + h.size; g.start+g.size < end {
			parts = append(parts, region{g.start + g.size, end - g.start - g.size})
		}
		r.holes = slices.Replace(r.holes, i, i+1, parts...)
		return true
	}
	return false
}

func (r *regions) release(g region) {
	if g.size == 0 {
		return
	}
	i, _ := slices.BinarySearchFunc(r.holes, g.start, func(h region, s uint32) int { return int(int64(h.start) - int64(s)) })
	r.holes = slices.Insert(r.holes, i, g)
	// merge with the next, then the previous
	if i+1 < len(r.holes) && r.holes[i].start+r.holes[i].size == r.holes[i+1].start {
		r.holes[i].size += r.holes[i+1].size
		r.holes = slices.Delete(r.holes, i+1, i+2)
	}
	if i > 0 && r.holes[i-1].start+r.holes[i-1].size == r.holes[i].start {
		r.holes[i-1].size += r.holes[i].size
		r.holes = slices.Delete(r.holes, i, i+1)
	}
}

func (r *regions) free() uint32 {
	var n uint32
	for _, h := range r.holes {
		n += h.size
	}
	return n
}
