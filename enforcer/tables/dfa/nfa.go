package dfa

import (
	"fmt"

	"github.com/podarmor/podarmor/policies/pattern"
)

// anyButSlash is the edge symbol that matches every byte except '/'; symbols 0-255 are
// the bytes themselves.
const anyButSlash = 256

// The two nodes every automaton has.
const (
	// initNode is where matching starts. No edge leads back to it, so the subset
	// construction meets the set holding it only once, as the start state.
	initNode = 0
	// rootNode is reached by the path "/" alone: the root has no components, which a
	// pattern's segments cannot spell, so the patterns that match it accept here instead.
	rootNode = 1
)

// edge is one labelled transition of the NFA.
type edge struct {
	from, to int32
	sym      int16 // a byte, or anyButSlash
}

// nfa is an ε-free nondeterministic automaton over the path's bytes. Every node is entered
// by consuming one byte (except initNode), so a set of nodes needs no ε-closure and the
// subset construction can work on the sets directly.
type nfa struct {
	// out[first[n]:first[n+1]] are the edges leaving node n.
	first []int32
	out   []edge
	// tags[n] are the tags of the patterns that match a path ending in node n.
	tags [][]uint32
	// literal[b] reports whether some edge is labelled with byte b.
	literal [256]bool
}

// nfaBuilder collects nodes and edges before they are frozen into an nfa.
type nfaBuilder struct {
	edges []edge
	tags  [][]uint32
}

func (b *nfaBuilder) node() int32 {
	b.tags = append(b.tags, nil)
	return int32(len(b.tags) - 1)
}

// link adds an edge labelled sym from every node in from to to.
func (b *nfaBuilder) link(from []int32, sym int16, to int32) {
	for _, f := range from {
		b.edges = append(b.edges, edge{from: f, to: to, sym: sym})
	}
}

// buildNFA translates the entries' segments. A path is '/' followed by its first
// component, then '/' and a component for each further one, so:
//
//   - a Literal segment is '/' then its bytes;
//   - a Glob segment is '/' then its parts with a looping anyButSlash node between them;
//     the glob "*" alone leaves the node right after '/' out of its exits, so that it
//     matches a non-empty component only;
//   - an AnyDepth segment is ('/' anyButSlash+)*, so the nodes before it stay exits.
//
// The root is the one path that is not such a sequence, and goes to rootNode.
func buildNFA(entries []Entry) (*nfa, error) {
	b := &nfaBuilder{}
	b.node() // initNode
	b.node() // rootNode
	b.link([]int32{initNode}, '/', rootNode)
	for i, e := range entries {
		if e.Pattern.String() == "" {
			return nil, fmt.Errorf("entry %d (tag %d): zero pattern.Pattern, which matches nothing", i, e.Tag)
		}
		if err := b.add(e.Pattern.Segments(), e.Tag); err != nil {
			return nil, fmt.Errorf("entry %d (tag %d) %q: %w", i, e.Tag, e.Pattern, err)
		}
	}
	return b.freeze(), nil
}

// add adds one pattern's nodes, hanging its first segment off initNode.
func (b *nfaBuilder) add(segs []pattern.Segment, tag uint32) error {
	exits := []int32{initNode} // the nodes after which the next segment may begin
	matchesRoot := true
	for i, s := range segs {
		switch s.Kind {
		case pattern.AnyDepth:
			if i > 0 && segs[i-1].Kind == pattern.AnyDepth {
				continue // "**/**" is "**", and each would link to all the nodes before it
			}
			slash, comp := b.node(), b.node()
			b.link(exits, '/', slash)
			b.link([]int32{slash}, anyButSlash, comp)
			b.link([]int32{comp}, anyButSlash, comp)
			b.link([]int32{comp}, '/', slash)
			exits = append(exits, comp)
		case pattern.Literal, pattern.Glob:
			matchesRoot = false
			slash := b.node()
			b.link(exits, '/', slash)
			cur := []int32{slash}
			for k, part := range s.Parts {
				if k > 0 {
					star := b.node()
					b.link(cur, anyButSlash, star)
					b.link([]int32{star}, anyButSlash, star)
					cur = append(cur, star)
				}
				for j := 0; j < len(part); j++ {
					n := b.node()
					b.link(cur, int16(part[j]), n)
					cur = []int32{n}
				}
			}
			exits = exits[:0:0]
			for _, n := range cur {
				if n != slash {
					exits = append(exits, n)
				}
			}
		default:
			return fmt.Errorf("segment of unknown kind %v", s.Kind)
		}
	}
	for _, n := range exits {
		if n != initNode { // the empty path is no path
			b.tags[n] = append(b.tags[n], tag)
		}
	}
	if matchesRoot {
		b.tags[rootNode] = append(b.tags[rootNode], tag)
	}
	return nil
}

// freeze sorts the edges by their source node.
func (b *nfaBuilder) freeze() *nfa {
	n := &nfa{first: make([]int32, len(b.tags)+1), out: make([]edge, len(b.edges)), tags: b.tags}
	for _, e := range b.edges {
		n.first[e.from+1]++
		if e.sym != anyButSlash {
			n.literal[e.sym] = true
		}
	}
	for i := 1; i < len(n.first); i++ {
		n.first[i] += n.first[i-1]
	}
	next := append([]int32(nil), n.first[:len(b.tags)]...)
	for _, e := range b.edges {
		n.out[next[e.from]] = e
		next[e.from]++
	}
	return n
}
