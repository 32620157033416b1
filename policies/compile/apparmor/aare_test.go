package apparmor

import (
	"fmt"
	"strings"
	"testing"

	"github.com/podarmor/podarmor/policies/pattern"
)

func TestPathExprText(t *testing.T) {
	tests := map[string]struct {
		pattern string
		want    string
	}{
		"the root is the root":                            {"/", "/"},
		"a literal also matches its directory form":       {"/etc/passwd", "/etc/passwd{,/}"},
		"a lone star component must not be empty":         {"/proc/*/root", "/proc/?*/root{,/}"},
		"a glob with a literal part keeps its stars":      {"/etc/*.conf", "/etc/*.conf{,/}"},
		"a trailing ** also matches the directory itself": {"/a/**", "/a{,/**}"},
		"a middle ** may match no component":              {"/a/**/b", "/a{,/**}/b{,/}"},
		"a leading ** may match no component":             {"/**/passwd", "/{,**/}passwd{,/}"},
		"/** is every path":                               {"/**", "/{,**}"},
		"repeated ** are merged":                          {"/**/**/x", "/{,**/}x{,/}"},
		"** between globs":                                {"/var/**/log*/*.log", "/var{,/**}/log*/*.log{,/}"},
		"operators are escaped":                           {`/a\*b\?\[\]\{\}`, `/a\*b\?\[\]\{\}{,/}`},
		"commas, carets and quotes are escaped":           {`/a,b^c"d`, `/a\,b\^c\"d{,/}`},
		"a backslash is escaped":                          {`/a\\b`, `/a\\b{,/}`},
		"comment and bang bytes are hex escaped":          {`/#@\{x\}!@`, `/\x23@\{x\}\x21@{,/}`},
		"a space quotes the whole expression":             {"/tmp/my file", `"/tmp/my file{,/}"`},
		"control and high bytes are hex escaped":          {"/a\nb\xffc\x7f", `/a\x0ab\xffc\x7f{,/}`},
		"UTF-8 is escaped byte by byte":                   {"/café", `/caf\xc3\xa9{,/}`},
		"an escaped star next to a wildcard":              {`/x\**`, `/x\**{,/}`},
		"other punctuation is left alone":                 {"/a.b+c|d(e)f$g=h-i_j~k:l;m<n>o'p%q&r`s", "/a.b+c|d(e)f$g=h-i_j~k:l;m<n>o'p%q&r`s{,/}"},
	}
	for name, tt := range tests {
		t.Run(name, func(t *testing.T) {
			p, err := pattern.Parse(tt.pattern)
			if err != nil {
				t.Fatalf("Parse(%q): %v", tt.pattern, err)
			}
			if got := pathExpr(p); got != tt.want {
				t.Errorf("pathExpr(%q) = %s, want %s", tt.pattern, got, tt.want)
			}
		})
	}
}

// dirForm is the name AppArmor gives path when it is a directory: a trailing '/', except
// for the root, which already ends in one.
func dirForm(path string) string {
	if strings.HasSuffix(path, "/") {
		return path
	}
	return path + "/"
}

// TestPathExprMatchesCases checks, with the reference interpreter of aarematch_test.go,
// that the expression for every pattern of the shared table matches exactly the paths
// the pattern matches, both as they are and in their directory form.
func TestPathExprMatchesCases(t *testing.T) {
	compiled := map[string]*aare{}
	for _, c := range pattern.Cases() {
		a, ok := compiled[c.Pattern]
		if !ok {
			p, err := pattern.Parse(c.Pattern)
			if err != nil {
				t.Fatalf("Parse(%q): %v", c.Pattern, err)
			}
			a, err = compileAARE(pathExpr(p))
			if err != nil {
				t.Fatalf("pattern %q: compile %s: %v", c.Pattern, pathExpr(p), err)
			}
			compiled[c.Pattern] = a
		}
		for _, path := range []string{c.Path, dirForm(c.Path)} {
			if got := a.match(path); got != c.Match {
				p, _ := pattern.Parse(c.Pattern)
				t.Errorf("pattern %q as %s: match %q = %v, want %v (%s)", c.Pattern, pathExpr(p), path, got, c.Match, c.Note)
			}
		}
	}
}

// everyByteCases are patterns with each byte a name may hold as a literal, with paths that
// must and must not match them, so that every escape is checked.
func everyByteCases() []pattern.Case {
	var out []pattern.Case
	for i := 1; i < 256; i++ {
		c := byte(i)
		if c == '/' {
			continue
		}
		lit := string([]byte{c})
		if strings.IndexByte(`\*?[]{}`, c) >= 0 {
			lit = `\` + lit
		}
		pat := "/x" + lit + "y/*" + lit
		fill := "a"
		if c == 'a' {
			fill = "b"
		}
		note := fmt.Sprintf("the literal byte %#02x", c)
		out = append(out,
			pattern.Case{Pattern: pat, Path: "/x" + string([]byte{c}) + "y/" + fill + string([]byte{c}), Match: true, Note: note},
			pattern.Case{Pattern: pat, Path: "/x" + string([]byte{c}) + "y/" + string([]byte{c}), Match: true, Note: note},
			pattern.Case{Pattern: pat, Path: "/x" + string([]byte{c}) + "y/" + fill, Match: false, Note: note},
			pattern.Case{Pattern: pat, Path: "/xy/" + fill + string([]byte{c}), Match: false, Note: note},
			pattern.Case{Pattern: pat, Path: "/x" + string([]byte{c}) + string([]byte{c}) + "y/" + fill + string([]byte{c}), Match: false, Note: note},
		)
		if c != 'z' {
			out = append(out, pattern.Case{Pattern: pat, Path: "/xzy/az", Match: false, Note: note})
		}
	}
	return out
}

func TestPathExprEveryByte(t *testing.T) {
	for _, c := range everyByteCases() {
		p, err := pattern.Parse(c.Pattern)
		if err != nil {
			t.Fatalf("Parse(%q): %v", c.Pattern, err)
		}
		if p.Match(c.Path) != c.Match {
			t.Fatalf("case %q %q: pattern.Match disagrees with the case; fix the case", c.Pattern, c.Path)
		}
		a, err := compileAARE(pathExpr(p))
		if err != nil {
			t.Fatalf("pattern %q: compile %s: %v", c.Pattern, pathExpr(p), err)
		}
		for _, path := range []string{c.Path, dirForm(c.Path)} {
			if got := a.match(path); got != c.Match {
				t.Errorf("pattern %q as %s: match %q = %v, want %v", c.Pattern, pathExpr(p), path, got, c.Match)
			}
		}
	}
}

// TestInterpreterModelsParser pins down the parts of apparmor_parser's behaviour the
// interpreter models, so that a mistake in it cannot make a wrong translation pass.
func TestInterpreterModelsParser(t *testing.T) {
	tests := map[string]struct {
		aare  string
		match []string
		miss  []string
	}{
		"a star component at the end matches at least one byte": {"/a/*", []string{"/a/b"}, []string{"/a/"}},
		"stars before an alternation may match nothing":         {"/a/*{,/}", []string{"/a/", "/a/b"}, nil},
		"/** needs one byte":                         {"/a/**", []string{"/a/b", "/a/b/c"}, []string{"/a/", "/a"}},
		"** inside an alternation may match nothing": {"/a{,/**}", []string{"/a", "/a/", "/a/b/c"}, []string{"/ab"}},
		"? is one byte but not a slash":              {"/a?", []string{"/ab"}, []string{"/a", "/a/", "/abc"}},
		"escaped operators are literal":              {`/\*\?\{\}\[\]\,\^\\`, []string{`/*?{}[],^\`}, []string{"/a"}},
		"hex escapes are bytes":                      {`/\x41\xff\x2a`, []string{"/A\xff*"}, []string{"/A\xffa"}},
		"quotes are stripped":                        {`"/a b"`, []string{"/a b"}, []string{`"/a b"`}},
		"repeated slashes collapse":                  {"/a//b", []string{"/a/b"}, []string{"/a//b"}},
	}
	for name, tt := range tests {
		t.Run(name, func(t *testing.T) {
			a, err := compileAARE(tt.aare)
			if err != nil {
				t.Fatalf("compile %s: %v", tt.aare, err)
			}
			for _, p := range tt.match {
				if !a.match(p) {
					t.Errorf("%s does not match %q", tt.aare, p)
				}
			}
			for _, p := range tt.miss {
				if a.match(p) {
					t.Errorf("%s matches %q", tt.aare, p)
				}
			}
		})
	}
	for _, bad := range []string{"/a b", "/a,", "/a,,b", `/a!`, "/a\"b", `/\#`, "/[ab]", "/{a}", "/{a,b", "/x@{a}", `/a\`, "a"} {
		if _, err := compileAARE(bad); err == nil {
			t.Errorf("compile %s: no error, want one", bad)
		}
	}
}
