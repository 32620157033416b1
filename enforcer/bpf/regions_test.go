package bpf

import (
	"strings"
	"testing"
)

// TestRegionsStayWithinAPage checks the transition table's allocator: first fit, never
// across a multiple of the page (a program indexes a body's page directly), freed runs
// merged and handed out again.
func TestRegionsStayWithinAPage(t *testing.T) {
	const page = 100
	r := newRegions(3 * page)
	alloc := func(n uint32) region {
		t.Helper()
		g, ok := r.alloc(n, page)
		if !ok {
			t.Fatalf("alloc(%d) failed with %d free", n, r.free())
		}
		if n > 0 && g.start/page != (g.start+n-1)/page {
			t.Fatalf("alloc(%d) = %+v crosses a page", n, g)
		}
		return g
	}
	a := alloc(60)
	b := alloc(60) // does not fit in the rest of page 0: starts page 1
	if a.start != 0 || b.start != page {
		t.Fatalf("got %+v and %+v, want starts 0 and %d", a, b, page)
	}
	c := alloc(40) // first fit: the rest of page 0
	if c.start != 60 {
		t.Fatalf("got %+v, want start 60", c)
	}
	if _, ok := r.alloc(page+1, page); ok {
		t.Fatal("a run longer than a page was handed out")
	}
	d := alloc(page) // page 2 whole
	if d.start != 2*page {
		t.Fatalf("got %+v, want start %d", d, 2*page)
	}
	if _, ok := r.alloc(41, page); ok {
		t.Fatal("41 entries handed out where only 40 are free, in page 1")
	}
	r.release(a)
	r.release(c)
	if e := alloc(page); e.start != 0 {
		t.Fatalf("got %+v, want page 0 again once its two runs are free", e)
	}
	if got := r.free(); got != 40 {
		t.Fatalf("free() = %d, want 40", got)
	}
	if g, ok := r.alloc(0, page); !ok || g.size != 0 {
		t.Fatalf("alloc(0) = %+v, %v", g, ok)
	}
}

// TestFitsPage checks the limits of one profile's path DFA: 16-bit state numbers, and a
// table within one page.
func TestFitsPage(t *testing.T) {
	for _, tc := range []struct {
		states, classes int
		want            string // in the error; "" for none
	}{
		{29000, 39, ""},
		{1 << 16, 32, ""}, // exactly a page
		{1<<16 + 1, 2, "at most 65536 (16-bit state numbers)"},
		{1 << 16, 33, "(2162688 transitions): a profile's path automaton can have at most 2097152"},
		{53773, 39, ""},
		{53774, 39, "at most 2097152 transitions"},
	} {
		err := fitsPage(tc.states, tc.classes)
		switch {
		case tc.want == "" && err != nil:
			t.Errorf("%d states x %d classes: %v", tc.states, tc.classes, err)
		case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
			t.Errorf("%d states x %d classes: err = %v, want one containing %q", tc.states, tc.classes, err, tc.want)
		}
	}
}
