package pattern

import (
	"regexp"
	"strings"
)

// referenceMatch is a second, independent matcher that the tests hold Match to. It reads
// the pattern text itself rather than Segments, and hands the work to package regexp, whose
// matching is linear and well tested: literal bytes are quoted, '*' becomes `[^/]*` and a
// "**" component becomes `(?:/[^/]+)*`. pattern must parse, and path must be canonical.
//
// Package regexp works on UTF-8 and would read a byte such as 0xff as U+FFFD, which is
// also what 0xfe and U+FFFD itself read as. So both sides go through latin1, which maps
// each byte to the rune of the same number: a bijection that keeps '/' as '/'.
func referenceMatch(pattern, path string) bool {
	var b strings.Builder
	b.WriteString(`^`)
	if pattern != "/" {
		// Splitting the text on '/' is safe: '/' cannot be escaped, and "\\/" ends an escape.
		for _, comp := range strings.Split(pattern[1:], "/") {
			if comp == "**" {
				b.WriteString(`(?:/[^/]+)*`)
				continue
			}
			b.WriteString(`/`)
			for i := 0; i < len(comp); i++ {
				switch comp[i] {
				case '*':
					b.WriteString(`[^/]*`)
				case '\\':
					i++
					b.WriteString(regexp.QuoteMeta(latin1(comp[i : i+1])))
				default:
					b.WriteString(regexp.QuoteMeta(latin1(comp[i : i+1])))
				}
			}
		}
	}
	b.WriteString(`$`)
	// The root is the path with no components, the empty string in this encoding.
	if path == "/" {
		path = ""
	}
	return regexp.MustCompile(b.String()).MatchString(latin1(path))
}

// latin1 returns s with each byte turned into the rune of the same value.
func latin1(s string) string {
	r := make([]rune, len(s))
	for i := 0; i < len(s); i++ {
		r[i] = rune(s[i])
	}
	return string(r)
}

// isCanonical reports whether path is a path the kernel could hand to a hook: absolute, no
// empty, "." or ".." components, no trailing slash unless it is "/", and no NUL.
func isCanonical(path string) bool {
	if path == "" || path[0] != '/' || strings.IndexByte(path, 0) >= 0 {
		return false
	}
	if path == "/" {
		return true
	}
	for _, comp := range strings.Split(path[1:], "/") {
		if comp == "" || comp == "." || comp == ".." {
			return false
		}
	}
	return true
}

// witness returns a path the pattern must match, built from its segments: literals as
// they are, each '*' as "x", and each "**" as no components at all.
func witness(p Pattern) string {
	var b strings.Builder
	for _, s := range p.Segments() {
		switch s.Kind {
		case Literal:
			b.WriteString("/" + s.Parts[0])
		case Glob:
			b.WriteString("/" + strings.Join(s.Parts, "x"))
		}
	}
	if b.Len() == 0 {
		return "/"
	}
	return b.String()
}
