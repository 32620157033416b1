package apparmor

import (
	"fmt"
	"strings"

	"github.com/podarmor/podarmor/policies/pattern"
)

// pathExpr returns the AppArmor path expression (AARE) for a podarmor path pattern, as it
// is written in a profile: it matches exactly the paths the pattern matches, each also in
// the directory form with a trailing '/' that AppArmor gives the names of directories.
//
// How AppArmor's globs compare with podarmor's:
//
//   - AppArmor's '*' matches zero or more bytes other than '/' (and NUL). apparmor_parser
//     makes a component that is nothing but stars match at least one byte only when the
//     stars are followed by '/' or end the rule, which the directory suffix below defeats;
//     so the component "*" is written "?*" ('?' is one byte other than '/'), which is
//     non-empty wherever it stands. Any other glob holds a literal byte and is never empty.
//   - AppArmor's '**' matches zero or more bytes including '/'. "/**" as a whole component
//     would need at least one byte, so a podarmor "**" is written as an alternation with
//     the empty string: "/a/**" is "/a{,/**}" (the path /a, or /a, a slash and anything),
//     "/a/**/b" is "/a{,/**}/b", a leading "/**/b" is "/{,**/}b" and "/**" is "/{,**}".
//     Consecutive "**" mean the same as one and are merged first.
//   - A pattern that does not end in "**" gets the suffix "{,/}", so that it matches the
//     directory form too; one ending in "**" already does. The pattern "/" is "/", which
//     is also the name AppArmor gives the root directory.
//
// Literal bytes are escaped as literalByte describes, and the whole expression is quoted
// when it holds a space.
func pathExpr(p pattern.Pattern) string {
	segs := mergeAnyDepth(p.Segments())
	if len(segs) == 0 {
		return "/"
	}
	var b strings.Builder
	b.WriteByte('/')
	quote := false
	for i, s := range segs {
		switch s.Kind {
		case pattern.AnyDepth:
			switch {
			case i > 0:
				b.WriteString("{,/**}")
			case len(segs) == 1:
				b.WriteString("{,**}")
			default:
				b.WriteString("{,**/}")
			}
			continue
		case pattern.Literal, pattern.Glob:
		default:
			// Parse produces no other kind; an empty AARE makes apparmor_parser fail
			// loudly rather than match something else.
			return ""
		}
		// The leading '/' is written; a leading "{,**/}" ends in its own.
		if i > 0 && !(i == 1 && segs[0].Kind == pattern.AnyDepth) {
			b.WriteByte('/')
		}
		if s.Kind == pattern.Glob && isAllStars(s) {
			b.WriteString("?*")
			continue
		}
		for j, part := range s.Parts {
			if j > 0 {
				b.WriteByte('*')
			}
			for k := 0; k < len(part); k++ {
				if part[k] == ' ' {
					quote = true
				}
				b.WriteString(literalByte(part[k]))
			}
		}
	}
	if segs[len(segs)-1].Kind != pattern.AnyDepth {
		b.WriteString("{,/}")
	}
	if quote {
		return `"` + b.String() + `"`
	}
	return b.String()
}

// mergeAnyDepth replaces runs of "**" components with one: "**/**" matches what "**" does.
func mergeAnyDepth(segs []pattern.Segment) []pattern.Segment {
	out := segs[:0:0]
	for _, s := range segs {
		if s.Kind == pattern.AnyDepth && len(out) > 0 && out[len(out)-1].Kind == pattern.AnyDepth {
			continue
		}
		out = append(out, s)
	}
	return out
}

// isAllStars reports whether a glob component has no literal bytes, which (as "**" is a
// component of its own) means it is the component "*".
func isAllStars(s pattern.Segment) bool {
	for _, part := range s.Parts {
		if part != "" {
			return false
		}
	}
	return true
}

// literalByte spells one literal byte of a path so that it survives apparmor_parser's
// lexer (which ends an unquoted name at blanks, '"', '!' and ','), its unescaping of
// names, its variable expansion ("@{name}") and its conversion of globs, and means that
// byte and nothing else:
//
//   - the AARE operators * ? [ ] { } ^ , and the backslash are escaped with a backslash,
//     which the parser keeps as a literal;
//   - '"' is written \", the lexer's escape for it;
//   - '#' and '!' (a comment and a byte that ends an unquoted name) are written \x23 and
//     \x21, which the parser turns into the plain byte before anything else sees it;
//   - '@' is written as itself: a variable reference is "@{" and a name, and a literal
//     '{' is escaped while the alternations pathExpr writes start with a comma, which no
//     variable name does;
//   - control bytes, DEL and bytes from 0x80 up are written \xHH: apparmor_parser
//     matches bytes, not characters, and a hex escape of two digits never swallows a
//     following hex digit;
//   - a space is written as itself: pathExpr quotes expressions that hold one.
func literalByte(c byte) string {
	switch c {
	case '*', '?', '[', ']', '{', '}', '^', ',', '\\', '"':
		return `\` + string(c)
	case '#', '!':
		return fmt.Sprintf(`\x%02x`, c)
	}
	if c < 0x20 || c >= 0x7f {
		return fmt.Sprintf(`\x%02x`, c)
	}
	return string(c)
}

// parsePaths parses every pattern of a rule and returns their AppArmor expressions.
func parsePaths(paths []string) ([]string, error) {
	if len(paths) == 0 {
		return nil, fmt.Errorf("the rule has no paths")
	}
	out := make([]string, 0, len(paths))
	for _, s := range paths {
		p, err := pattern.Parse(s)
		if err != nil {
			return nil, err
		}
		out = append(out, pathExpr(p))
	}
	return out, nil
}
