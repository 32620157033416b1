package apparmor

// A reference interpreter of the path expressions this package writes, used to check
// pathExpr against the shared pattern cases without a kernel. It models apparmor_parser
// 3.0 step by step: the lexer's rules for a name, processunquoted's unescaping, the
// collapse of repeated slashes, convert_aaregex_to_pcre's translation of globs (its
// rule that stars alone in a component match at least one byte included), and finally
// the match of the resulting expression against a path, on bytes. It supports the subset
// of AARE this package emits, and fails on anything else (character classes, variables,
// escapes the parser would warn about) rather than guess.

import (
	"fmt"
	"regexp"
	"strings"
)

// variable finds what apparmor_parser expands as a variable: "@{", a name and "}", not
// after a backslash.
var variable = regexp.MustCompile(`(^|[^\\])(\\\\)*@\{[A-Za-z][A-Za-z0-9_]*\}`)

// aare is a compiled path expression.
type aare struct {
	states []nstate
	start  int
}

// nstate is a state of a Thompson NFA. A state with a byte test moves on a byte it
// accepts to out; a split state moves on no input to out and alt; the final state has
// out < 0.
type nstate struct {
	test  func(c byte) bool
	out   int
	alt   int
	split bool
}

// node is the expression tree convert produces.
type node struct {
	kind nodeKind
	c    byte     // nodeByte
	alts [][]node // nodeGroup
}

type nodeKind int

const (
	nodeByte        nodeKind = iota // one literal byte
	nodeAnyNoSlash                  // [^/\x00]
	nodeStarNoSlash                 // [^/\x00]*
	nodeStarAny                     // [^\x00]*
	nodeGroup                       // (a|b|...)
)

// compileAARE compiles a path expression as it appears in a profile (possibly quoted).
func compileAARE(token string) (*aare, error) {
	name, err := lexName(token)
	if err != nil {
		return nil, err
	}
	if variable.MatchString(name) {
		return nil, fmt.Errorf("%q: variable reference", token)
	}
	name = filterSlashes(name)
	seq, err := convert(name)
	if err != nil {
		return nil, fmt.Errorf("%q: %w", token, err)
	}
	a := &aare{}
	final := a.add(nstate{out: -1})
	a.start = a.compile(seq, final)
	return a, nil
}

// lexName checks token against the lexer's rules for a path and unescapes it as
// processunquoted does: a recognised escape sequence becomes its byte, except that a byte
// special to globs stays escaped; any other backslash is kept as it is.
func lexName(token string) (string, error) {
	if token == "" {
		return "", fmt.Errorf("empty path")
	}
	s := token
	if s[0] == '"' {
		if len(s) < 2 || s[len(s)-1] != '"' {
			return "", fmt.Errorf("%q: unterminated quotes", token)
		}
		s = s[1 : len(s)-1]
		for i := 0; i < len(s); i++ {
			switch {
			case s[i] == '\\' && i+1 < len(s):
				i++
			case s[i] == '"' || s[i] == 0:
				return "", fmt.Errorf("%q: %q inside quotes", token, s[i])
			}
		}
	} else {
		if s[0] != '/' {
			return "", fmt.Errorf("%q: a path starts with '/'", token)
		}
		for i := 0; i < len(s); i++ {
			switch s[i] {
			case '\\':
				i++
			case ',':
				// The lexer takes a comma that another name byte follows.
				if i+1 < len(s) && strings.IndexByte(" \t\r\n\"!,", s[i+1]) < 0 {
					continue
				}
				return "", fmt.Errorf("%q: a comma here ends the rule", token)
			case ' ', '\t', '\r', '\n', '"', '!', 0:
				return "", fmt.Errorf("%q: unescaped %q ends an unquoted name", token, s[i])
			}
		}
	}
	var b strings.Builder
	for i := 0; i < len(s); {
		if s[i] == '\\' && i+1 < len(s) {
			if c, n, ok := escSeq(s[i+1:]); ok {
				switch {
				case c == 0:
					b.WriteString(s[i : i+1+n])
				case strings.IndexByte(`*?[]{}^,\`, c) >= 0:
					b.WriteByte('\\')
					b.WriteByte(c)
				default:
					b.WriteByte(c)
				}
				i += 1 + n
				continue
			}
		}
		b.WriteByte(s[i])
		i++
	}
	return b.String(), nil
}

// escSeq decodes the escape sequence at the start of s (after the backslash) as the
// parser's strn_escseq does: up to three octal digits, \d and up to three decimal
// digits, \x and up to two hex digits, or one of \\ \" \a \e \f \n \r \t. It returns the
// byte, the length of the sequence and whether it is one.
func escSeq(s string) (byte, int, bool) {
	number := func(s string, base, max int) (int, int) {
		v, n := 0, 0
		for n < len(s) && n < max {
			d := strings.IndexByte("0123456789abcdef"[:base], lower(s[n]))
			if d < 0 || v*base+d > 255 {
				break
			}
			v = v*base + d
			n++
		}
		return v, n
	}
	if s == "" {
		return 0, 0, false
	}
	if s[0] >= '0' && s[0] <= '7' {
		v, n := number(s, 8, 3)
		return byte(v), n, true
	}
	switch s[0] {
	case '\\', '"':
		return s[0], 1, true
	case 'd':
		v, n := number(s[1:], 10, 3)
		return byte(v), n + 1, n > 0
	case 'x':
		v, n := number(s[1:], 16, 2)
		return byte(v), n + 1, n > 0
	case 'a':
		return '\a', 1, true
	case 'e':
		return 033, 1, true
	case 'f':
		return '\f', 1, true
	case 'n':
		return '\n', 1, true
	case 'r':
		return '\r', 1, true
	case 't':
		return '\t', 1, true
	}
	return 0, 0, false
}

func lower(c byte) byte {
	if c >= 'A' && c <= 'Z' {
		return c + 'a' - 'A'
	}
	return c
}

// filterSlashes collapses runs of '/' as the parser's filter_slashes does (a leading
// "//" followed by something other than '/' is a namespace and kept).
func filterSlashes(s string) string {
	prefix := ""
	if len(s) > 2 && s[0] == '/' && s[1] == '/' && s[2] != '/' {
		prefix, s = "//", s[2:]
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '/' && i > 0 && s[i-1] == '/' {
			continue
		}
		b.WriteByte(s[i])
	}
	return prefix + b.String()
}

// convert translates an unescaped name into an expression tree as
// convert_aaregex_to_pcre does.
func convert(s string) ([]node, error) {
	type frame struct {
		alts   [][]node
		commas int
	}
	stack := []frame{{alts: [][]node{nil}}}
	cur := func() *[]node {
		f := &stack[len(stack)-1]
		return &f.alts[len(f.alts)-1]
	}
	// lastSlash says whether the pcre written so far ends in a '/', which decides
	// whether a component of stars must match at least one byte.
	lastSlash := false
	emit := func(n node, slash bool) {
		*cur() = append(*cur(), n)
		lastSlash = slash
	}
	escape := false
	for i := 0; i < len(s); i++ {
		c := s[i]
		if escape {
			escape = false
			switch c {
			case '\\', '*', '?', '[', ']', '{', '}', ',', '^', '$':
				emit(node{kind: nodeByte, c: c}, false)
			default:
				v, n, ok := escSeq(s[i:])
				if !ok {
					return nil, fmt.Errorf("character %q quoted unnecessarily (apparmor_parser warns and drops the backslash)", c)
				}
				emit(node{kind: nodeByte, c: v}, false)
				i += n - 1
			}
			continue
		}
		switch c {
		case '\\':
			escape = true
		case '*':
			if lastSlash {
				j := i
				for j < len(s) && s[j] == '*' {
					j++
				}
				if j == len(s) || s[j] == '/' {
					emit(node{kind: nodeAnyNoSlash}, false)
				}
			}
			if i+1 < len(s) && s[i+1] == '*' {
				emit(node{kind: nodeStarAny}, false)
				i++
			} else {
				emit(node{kind: nodeStarNoSlash}, false)
			}
		case '?':
			emit(node{kind: nodeAnyNoSlash}, false)
		case '[', ']':
			return nil, fmt.Errorf("character classes are not part of the subset this package emits")
		case '{':
			stack = append(stack, frame{alts: [][]node{nil}})
			lastSlash = false
		case '}':
			if len(stack) == 1 {
				return nil, fmt.Errorf("'}' without '{'")
			}
			f := stack[len(stack)-1]
			if f.commas == 0 {
				return nil, fmt.Errorf("{} with a single alternative")
			}
			stack = stack[:len(stack)-1]
			emit(node{kind: nodeGroup, alts: f.alts}, false)
		case ',':
			if len(stack) > 1 {
				f := &stack[len(stack)-1]
				f.alts = append(f.alts, nil)
				f.commas++
				lastSlash = false
			} else {
				emit(node{kind: nodeByte, c: c}, false)
			}
		default:
			emit(node{kind: nodeByte, c: c}, c == '/')
		}
	}
	if escape {
		return nil, fmt.Errorf("trailing backslash")
	}
	if len(stack) != 1 {
		return nil, fmt.Errorf("unclosed '{'")
	}
	return stack[0].alts[0], nil
}

func (a *aare) add(s nstate) int {
	a.states = append(a.states, s)
	return len(a.states) - 1
}

// compile adds the states for seq, ending in next, and returns the first.
func (a *aare) compile(seq []node, next int) int {
	for i := len(seq) - 1; i >= 0; i-- {
		n := seq[i]
		switch n.kind {
		case nodeByte:
			c := n.c
			next = a.add(nstate{test: func(b byte) bool { return b == c }, out: next})
		case nodeAnyNoSlash:
			next = a.add(nstate{test: func(b byte) bool { return b != '/' && b != 0 }, out: next})
		case nodeStarNoSlash, nodeStarAny:
			slashOK := n.kind == nodeStarAny
			loop := a.add(nstate{split: true, alt: next})
			body := a.add(nstate{test: func(b byte) bool { return b != 0 && (slashOK || b != '/') }, out: loop})
			a.states[loop].out = body
			next = loop
		case nodeGroup:
			starts := make([]int, len(n.alts))
			for j, alt := range n.alts {
				starts[j] = a.compile(alt, next)
			}
			s := starts[len(starts)-1]
			for j := len(starts) - 2; j >= 0; j-- {
				s = a.add(nstate{split: true, out: starts[j], alt: s})
			}
			next = s
		}
	}
	return next
}

// match reports whether the expression matches all of path.
func (a *aare) match(path string) bool {
	cur := a.closure([]int{a.start})
	for i := 0; i < len(path); i++ {
		var next []int
		for _, s := range cur {
			st := a.states[s]
			if st.test != nil && st.test(path[i]) {
				next = append(next, st.out)
			}
		}
		cur = a.closure(next)
		if len(cur) == 0 {
			return false
		}
	}
	for _, s := range cur {
		if a.states[s].out < 0 && !a.states[s].split && a.states[s].test == nil {
			return true
		}
	}
	return false
}

// closure adds the states reachable through split states.
func (a *aare) closure(states []int) []int {
	seen := map[int]bool{}
	var out []int
	var visit func(int)
	visit = func(s int) {
		if seen[s] {
			return
		}
		seen[s] = true
		st := a.states[s]
		if st.split {
			visit(st.out)
			visit(st.alt)
			return
		}
		out = append(out, s)
	}
	for _, s := range states {
		visit(s)
	}
	return out
}
