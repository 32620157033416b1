package pattern

import (
	_ "embed"
	"fmt"
	"strconv"
	"strings"

	"sigs.k8s.io/yaml"
)

// casesYAML is the shared table of cases; its header comment describes the format.
//
//go:embed cases.yaml
var casesYAML []byte

// Case is one pattern and one path from the shared table, with whether they match. Every
// backend's tests run the table, so that AppArmor, BPF LSM and Match agree.
type Case struct {
	// Pattern is the pattern text; it always parses.
	Pattern string
	// Path is a canonical absolute path.
	Path string
	// Match is whether Pattern matches Path.
	Match bool
	// Note says what the case is about, for failure messages.
	Note string
}

// InvalidCase is a pattern that Parse must reject.
type InvalidCase struct {
	// Pattern is the pattern text.
	Pattern string
	// Reason is a substring of the error message, such as "empty path component".
	Reason string
	// Offset is the byte offset the *SyntaxError reports.
	Offset int
}

// caseFile is the layout of cases.yaml.
type caseFile struct {
	Matches []struct {
		Pattern  string   `json:"pattern"`
		Note     string   `json:"note"`
		GoQuoted bool     `json:"go_quoted"`
		Match    []string `json:"match"`
		NoMatch  []string `json:"nomatch"`
	} `json:"matches"`
	Invalid []struct {
		Pattern  string `json:"pattern"`
		GoQuoted bool   `json:"go_quoted"`
		Reason   string `json:"reason"`
		Offset   int    `json:"offset"`
	} `json:"invalid"`
}

// loadCases decodes the embedded table. It panics on a malformed table: the file is part of
// the program, and the package's tests load it.
func loadCases() caseFile {
	var f caseFile
	if err := yaml.UnmarshalStrict(casesYAML, &f); err != nil {
		panic(fmt.Sprintf("decode cases.yaml: %v", err))
	}
	return f
}

// unquote returns s itself, or s decoded as a Go string literal when quoted is set.
func unquote(s string, quoted bool) string {
	if !quoted {
		return s
	}
	u, err := strconv.Unquote(s)
	if err != nil {
		panic(fmt.Sprintf("cases.yaml: go_quoted string %s: %v", s, err))
	}
	return u
}

// Cases returns the shared table of patterns and paths with whether each matches: the
// readable cases from cases.yaml followed by generated ones with paths near PATH_MAX. It
// returns a fresh slice on every call.
func Cases() []Case {
	var out []Case
	for _, m := range loadCases().Matches {
		pat := unquote(m.Pattern, m.GoQuoted)
		for _, path := range m.Match {
			out = append(out, Case{Pattern: pat, Path: unquote(path, m.GoQuoted), Match: true, Note: m.Note})
		}
		for _, path := range m.NoMatch {
			out = append(out, Case{Pattern: pat, Path: unquote(path, m.GoQuoted), Match: false, Note: m.Note})
		}
	}
	return append(out, longCases()...)
}

// InvalidCases returns the shared table of patterns Parse rejects: the cases from
// cases.yaml followed by generated ones over the length limits. It returns a fresh slice on
// every call.
func InvalidCases() []InvalidCase {
	var out []InvalidCase
	for _, c := range loadCases().Invalid {
		out = append(out, InvalidCase{Pattern: unquote(c.Pattern, c.GoQuoted), Reason: c.Reason, Offset: c.Offset})
	}
	return append(out, longInvalidCases()...)
}

// longPath returns a canonical path of exactly n bytes (n >= 2) built from components of
// at most MaxComponentLen bytes, ending in the given byte so variants can differ there.
func longPath(n int, last byte) string {
	var b strings.Builder
	for b.Len() < n {
		name := min(MaxComponentLen, n-b.Len()-1)
		b.WriteByte('/')
		b.WriteString(strings.Repeat("d", name-1))
		b.WriteByte(last)
	}
	return b.String()
}

// longCases are the cases whose text is too long to read in YAML.
func longCases() []Case {
	maxPath := longPath(MaxLen, 'f')                          // the longest path Linux accepts
	sibling := longPath(MaxLen, 'g')                          // differs from maxPath in its last byte only
	lastName := maxPath[strings.LastIndexByte(maxPath, '/'):] // includes its '/'
	firstName := maxPath[:strings.IndexByte(maxPath[1:], '/')+1]
	name := strings.Repeat("n", MaxComponentLen)
	stars := strings.Repeat("*", MaxComponentLen)
	escStars := strings.Repeat(`\*`, MaxComponentLen)
	return []Case{
		{maxPath, maxPath, true, "a literal pattern of exactly PATH_MAX-1 bytes matches itself"},
		{maxPath, sibling, false, "a literal pattern of PATH_MAX-1 bytes does not match a path differing in the last byte"},
		{"/**" + lastName, maxPath, true, "'**' spans the fifteen long components of a PATH_MAX-1 path"},
		{"/**" + lastName, sibling, false, "'**' spanning a PATH_MAX-1 path still needs the last name to match"},
		{firstName + "/**", maxPath, true, "a long first component followed by '**' matches a PATH_MAX-1 path"},
		{"/*/**/*f", maxPath, true, "'*' matches a long component in a PATH_MAX-1 path"},
		{"/*/**/*f", sibling, false, "'*f' does not match a long component ending in g"},
		{"/" + name, "/" + name, true, "a component of exactly NAME_MAX bytes"},
		{"/n*n", "/" + name, true, "a glob matches a component of NAME_MAX bytes"},
		{"/" + escStars, "/" + stars, true, "NAME_MAX escaped stars are NAME_MAX bytes after unescaping"},
		{"/" + escStars, "/" + strings.Repeat("*", MaxComponentLen-1) + "x", false, "escaped stars are not wildcards, even many of them"},
	}
}

// longInvalidCases are the invalid cases whose text is too long to read in YAML.
func longInvalidCases() []InvalidCase {
	return []InvalidCase{
		{longPath(MaxLen+1, 'f'), fmt.Sprintf("pattern longer than %d bytes", MaxLen), MaxLen},
		{"/" + strings.Repeat("n", MaxComponentLen+1), fmt.Sprintf("path component longer than %d bytes", MaxComponentLen), 1},
		{"/a/" + strings.Repeat(`\*`, MaxComponentLen+1), fmt.Sprintf("path component longer than %d bytes", MaxComponentLen), 3},
		{"/" + strings.Repeat("*", MaxComponentLen+1), "'**' must be a whole path component", 1},
	}
}
