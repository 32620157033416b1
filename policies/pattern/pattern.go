// Package pattern is the one definition of podarmor's file path patterns. The AppArmor and
// BPF LSM backends and the policy compiler all take their meaning from here, and the shared
// table of cases (see [Cases]) checks each of them against this package's [Pattern.Match].
//
// # Syntax
//
// A pattern is an absolute path: it starts with '/', and its components are separated by a
// single '/'. Every component is one of:
//
//   - a literal, such as "passwd": it matches a path component of exactly those bytes;
//   - a glob, a component holding one or more '*', such as "*.conf" or "a*b*c": each '*'
//     matches zero or more bytes other than '/', so a glob never crosses a '/'. A glob still
//     matches exactly one non-empty path component: "/a/*" does not match "/a";
//   - "**" as the whole component: it matches any number of whole path components, including
//     zero. "/a/**" matches "/a", "/a/b" and "/a/b/c"; "/a/**/b" matches "/a/b" and
//     "/a/x/y/b"; "/**" matches every path. A pattern may hold several "**".
//
// The pattern "/" matches only the root directory.
//
// A backslash makes the next byte literal, and is allowed only before the bytes that would
// otherwise mean something: "\*" is a literal '*', "\\" a literal backslash, and "\?", "\[",
// "\]", "\{", "\}" are the literal '?', '[', ']', '{', '}'. Those five are reserved for
// syntax podarmor may add later (single-byte wildcards, classes, alternation), so unescaped
// they are an error today and a pattern written now keeps its meaning then. As every byte has
// exactly one spelling, a pattern's text and its [Pattern.Segments] determine each other.
//
// Parse rejects, with a [*SyntaxError] naming the problem and its byte offset:
//
//   - the empty string, and a relative pattern (one not starting with '/');
//   - an empty component ("//"), and a trailing slash other than the pattern "/" itself;
//   - "." and ".." components, which a resolved path never holds;
//   - a NUL byte;
//   - a pattern longer than 4095 bytes (PATH_MAX less its NUL) or a component longer than
//     255 bytes (NAME_MAX), both counted after unescaping, so that "\*" counts as one byte;
//   - "**" inside a component alongside other bytes ("a**", "**b", "***");
//   - an unescaped reserved byte ('?', '[', ']', '{', '}');
//   - a backslash before any other byte, and a backslash ending the pattern.
//
// # Paths
//
// A pattern matches canonical absolute Linux paths, the form the kernel hands to LSM hooks
// after resolving them: bytes, not necessarily UTF-8, starting with '/', with no empty, "."
// or ".." components and no trailing slash except for "/" itself. Match returns false for a
// path that does not start with '/'. What Match returns for any other non-canonical path is
// unspecified (it never panics): canonicalising is the caller's job, and matching a path
// such as "/etc/../etc/shadow" is a bug in the caller, not a way around a rule.
//
// # Cost
//
// Matching never backtracks exponentially. Within a component, each '*' takes the leftmost
// place its following text can go; across components, a mismatch retries only from the
// latest "**". So a match takes time at most proportional to the pattern's length times the
// path's length, and allocates nothing.
package pattern

import (
	"fmt"
	"strings"
)

// Limits on paths, as Linux defines them; patterns are held to the limits of the paths they
// describe.
const (
	// MaxLen is the longest pattern, in bytes after unescaping: PATH_MAX less the NUL.
	MaxLen = 4095
	// MaxComponentLen is the longest component, in bytes after unescaping: NAME_MAX.
	MaxComponentLen = 255
)

// Pattern is a parsed path pattern. It is immutable and safe for concurrent use. The zero
// Pattern is not a valid pattern: its String is empty and it matches nothing.
type Pattern struct {
	src  string
	segs []Segment
}

// Kind is the form of one pattern component.
type Kind int

// The forms a component takes.
const (
	// Literal is a component without wildcards; it matches exactly its bytes.
	Literal Kind = iota + 1
	// Glob is a component with at least one '*'.
	Glob
	// AnyDepth is the component "**", matching zero or more whole components.
	AnyDepth
)

// String returns the name of the kind, such as "Glob".
func (k Kind) String() string {
	switch k {
	case Literal:
		return "Literal"
	case Glob:
		return "Glob"
	case AnyDepth:
		return "AnyDepth"
	}
	return fmt.Sprintf("Kind(%d)", int(k))
}

// Segment is one component of a pattern, in the form backends translate.
type Segment struct {
	// Kind says which form the component takes.
	Kind Kind
	// Parts holds the unescaped bytes of a Literal or Glob component. A Literal has exactly
	// one part, the non-empty component itself. A Glob with n '*' has the n+1 runs of bytes
	// around them, any of which may be empty: "*.conf" is ["", ".conf"], "*" is ["", ""].
	// Parts is nil for AnyDepth.
	Parts []string
}

// String returns the segment as pattern text, escaped as Parse requires.
func (s Segment) String() string {
	switch s.Kind {
	case AnyDepth:
		return "**"
	case Literal, Glob:
		var b strings.Builder
		for i, part := range s.Parts {
			if i > 0 {
				b.WriteByte('*')
			}
			for j := 0; j < len(part); j++ {
				if needsEscape(part[j]) {
					b.WriteByte('\\')
				}
				b.WriteByte(part[j])
			}
		}
		return b.String()
	}
	return ""
}

// match reports whether the segment, which must not be AnyDepth, matches one path component.
func (s Segment) match(comp string) bool {
	if comp == "" {
		return false
	}
	if s.Kind == Literal {
		return comp == s.Parts[0]
	}
	first, last := s.Parts[0], s.Parts[len(s.Parts)-1]
	if len(comp) < len(first)+len(last) || !strings.HasPrefix(comp, first) || !strings.HasSuffix(comp, last) {
		return false
	}
	// With the ends pinned, taking each middle part at its leftmost place leaves the most
	// room for the rest, so a miss here is a miss everywhere: no backtracking is needed.
	rest := comp[len(first) : len(comp)-len(last)]
	for _, part := range s.Parts[1 : len(s.Parts)-1] {
		i := strings.Index(rest, part)
		if i < 0 {
			return false
		}
		rest = rest[i+len(part):]
	}
	return true
}

// SyntaxError is the error Parse returns for a malformed pattern.
type SyntaxError struct {
	// Pattern is the text given to Parse.
	Pattern string
	// Offset is the byte offset in Pattern where the problem is: the offending byte, or the
	// start of the offending component.
	Offset int
	// Reason says what is wrong, such as "empty path component".
	Reason string
}

// Error returns the message, such as `pattern "/a//b": empty path component at byte 3`.
func (e *SyntaxError) Error() string {
	return fmt.Sprintf("pattern %q: %s at byte %d", e.Pattern, e.Reason, e.Offset)
}

// needsEscape reports whether b must be written with a backslash to be a literal byte.
func needsEscape(b byte) bool {
	switch b {
	case '\\', '*', '?', '[', ']', '{', '}':
		return true
	}
	return false
}

// isReserved reports whether b is kept for future syntax and so must be escaped today.
func isReserved(b byte) bool {
	switch b {
	case '?', '[', ']', '{', '}':
		return true
	}
	return false
}

// Parse parses a pattern as the package documentation describes. Errors are *SyntaxError.
func Parse(s string) (Pattern, error) {
	fail := func(offset int, format string, args ...any) (Pattern, error) {
		return Pattern{}, &SyntaxError{Pattern: s, Offset: offset, Reason: fmt.Sprintf(format, args...)}
	}
	switch {
	case s == "":
		return fail(0, "empty pattern")
	case s[0] != '/':
		return fail(0, "relative pattern (it must start with '/')")
	case s == "/":
		return Pattern{src: s}, nil
	}

	var (
		segs     []Segment
		total    = 1 // unescaped bytes so far, counting the leading '/'
		parts    []string
		part     []byte
		start    = 1 // offset of the current component's first byte
		compLen  int // unescaped bytes in the current component
		prevStar bool
	)
	for i := 1; ; i++ {
		if i == len(s) || s[i] == '/' {
			switch {
			case i == start && i == len(s):
				return fail(i-1, "trailing slash")
			case i == start:
				return fail(i, "empty path component")
			}
			parts = append(parts, string(part))
			comp := s[start:i]
			switch {
			case comp == "**":
				segs = append(segs, Segment{Kind: AnyDepth})
			case comp == "." || comp == "..":
				return fail(start, "%q path component", comp)
			case len(parts) == 1:
				segs = append(segs, Segment{Kind: Literal, Parts: parts})
			default:
				segs = append(segs, Segment{Kind: Glob, Parts: parts})
			}
			if i == len(s) {
				return Pattern{src: s, segs: segs}, nil
			}
			parts, part, start, compLen, prevStar = nil, nil, i+1, 0, false
			total++
			if total > MaxLen {
				return fail(i, "pattern longer than %d bytes", MaxLen)
			}
			continue
		}

		c := s[i]
		star := false
		switch {
		case c == 0:
			return fail(i, "NUL byte")
		case isReserved(c):
			return fail(i, "reserved character %q (write \\%c for a literal %q)", c, c, c)
		case c == '\\':
			if i+1 == len(s) {
				return fail(i, "dangling backslash")
			}
			if !needsEscape(s[i+1]) {
				return fail(i, "invalid escape \\%s (only \\\\, \\*, \\?, \\[, \\], \\{ and \\} are escapes)", printable(s[i+1]))
			}
			i++
			part = append(part, s[i])
		case c == '*':
			if prevStar && !strings.HasPrefix(s[start:], "**/") && s[start:] != "**" {
				return fail(start, "'**' must be a whole path component")
			}
			star = true
			parts = append(parts, string(part))
			part = nil
		default:
			part = append(part, c)
		}
		prevStar = star
		compLen++
		total++
		if compLen > MaxComponentLen {
			return fail(start, "path component longer than %d bytes", MaxComponentLen)
		}
		if total > MaxLen {
			return fail(i, "pattern longer than %d bytes", MaxLen)
		}
	}
}

// printable spells a byte for an error message, hex-escaping what a terminal would mangle.
func printable(b byte) string {
	if b < 0x20 || b >= 0x7f {
		return fmt.Sprintf("x%02x", b)
	}
	return string(b)
}

// String returns the pattern text as given to Parse.
func (p Pattern) String() string {
	return p.src
}

// Segments returns the components of the pattern in order; the pattern "/" has none. The
// result is a copy the caller may keep or change.
func (p Pattern) Segments() []Segment {
	if len(p.segs) == 0 {
		return nil
	}
	out := make([]Segment, len(p.segs))
	for i, s := range p.segs {
		out[i] = Segment{Kind: s.Kind, Parts: append([]string(nil), s.Parts...)}
	}
	return out
}

// IsLiteral reports whether the pattern has no wildcards, so it matches exactly one path.
func (p Pattern) IsLiteral() bool {
	if p.src == "" {
		return false
	}
	for _, s := range p.segs {
		if s.Kind != Literal {
			return false
		}
	}
	return true
}

// LiteralPrefix returns the path made of the pattern's leading literal components,
// unescaped: "/etc/ssh" for "/etc/ssh/**/k*", "/" for "/*/x", the whole path for a literal
// pattern. Every path the pattern matches is that path or lies beneath it, which is what a
// backend needs to index rules by directory or to hand a literal to the kernel.
func (p Pattern) LiteralPrefix() string {
	if p.src == "" {
		return ""
	}
	var b strings.Builder
	for _, s := range p.segs {
		if s.Kind != Literal {
			break
		}
		b.WriteByte('/')
		b.WriteString(s.Parts[0])
	}
	if b.Len() == 0 {
		return "/"
	}
	return b.String()
}

// Match reports whether the pattern matches path, a canonical absolute path as the package
// documentation describes. It returns false for a path not starting with '/'.
func (p Pattern) Match(path string) bool {
	if p.src == "" || path == "" || path[0] != '/' {
		return false
	}
	// pos is the offset of the '/' before the next path component, len(path) once all are
	// consumed. The root has no components at all.
	pos := 0
	if path == "/" {
		pos = len(path)
	}
	next := func(pos int) (comp string, end int) {
		end = strings.IndexByte(path[pos+1:], '/')
		if end < 0 {
			return path[pos+1:], len(path)
		}
		return path[pos+1 : pos+1+end], pos + 1 + end
	}

	// This is wildcard matching with components for characters and "**" for the star. When
	// a segment fails, only the latest "**" is retried, absorbing one more component: the
	// segments between two "**" match a fixed number of components, and placing them as
	// early as possible leaves the most for what follows, so earlier "**" never need to
	// give back what they took.
	seg, starSeg, starPos := 0, -1, 0
	for pos < len(path) {
		if seg < len(p.segs) {
			if p.segs[seg].Kind == AnyDepth {
				starSeg, starPos = seg, pos
				seg++
				continue
			}
			if comp, end := next(pos); p.segs[seg].match(comp) {
				seg++
				pos = end
				continue
			}
		}
		if starSeg < 0 {
			return false
		}
		_, starPos = next(starPos)
		seg, pos = starSeg+1, starPos
	}
	for seg < len(p.segs) && p.segs[seg].Kind == AnyDepth {
		seg++
	}
	return seg == len(p.segs)
}
