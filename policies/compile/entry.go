package compile

import (
	"bytes"
	"encoding/json"
	"fmt"
	"slices"
	"strings"

	"github.com/podarmor/podarmor/policies/api/v1alpha1"
	"github.com/podarmor/podarmor/policies/catalog"
	"github.com/podarmor/podarmor/policies/ruleset"
)

// Expansion is what one catalog entry compiles to, on its own.
type Expansion struct {
	Entry catalog.Entry
	// Rules are the entry's neutral rules.
	Rules []ruleset.Rule
	// Enforcers are the enforcers that express at least one of the rules.
	Enforcers []v1alpha1.Enforcer
	// Profiles has, per enforcer, the profile of a policy holding only this entry.
	Profiles []Profile
	// Fragments has, per enforcer that expresses part of the entry, the part of its
	// profile the entry adds.
	Fragments map[v1alpha1.Enforcer]string
}

// ExpandEntry compiles a catalog entry by itself for every enforcer, so that `podarmor
// rules` and docs/rules.md can show what each enforcer makes of it and tests can check
// the enforcers the catalog declares.
func ExpandEntry(e catalog.Entry, o Options) (*Expansion, error) {
	o, err := o.defaults()
	if err != nil {
		return nil, err
	}
	x := expander{opts: o}
	if errs := x.entry(e, v1alpha1.ActionEnforce, nil); len(errs) > 0 {
		return nil, errs.ToAggregate()
	}
	rs := &ruleset.RuleSet{
		ProfileID: "catalog." + e.Name,
		Policy:    "built-in rule " + e.Name,
		Mode:      v1alpha1.ModeEnhanceProtect,
		Enforcers: v1alpha1.Enforcers,
		Default:   ruleset.Allow,
		Rules:     x.rules,
	}
	empty := *rs
	empty.Rules = nil
	out := &Expansion{Entry: e, Rules: x.rules, Fragments: map[v1alpha1.Enforcer]string{}}
	for _, enf := range v1alpha1.Enforcers {
		b := o.Backends[enf]
		prof := Profile{Enforcer: enf}
		for _, r := range rs.Rules {
			if err := b.Express(r); err != nil {
				prof.Unsupported = append(prof.Unsupported, Unsupported{RuleID: r.ID, Reason: err.Error()})
			}
		}
		if len(prof.Unsupported) < len(rs.Rules) {
			out.Enforcers = append(out.Enforcers, enf)
			content, err := b.Render(rs)
			if err != nil {
				return nil, fmt.Errorf("render %s for built-in rule %s: %w", enf, e.Name, err)
			}
			prof.Content = content
			base, err := b.Render(&empty)
			if err != nil {
				return nil, fmt.Errorf("render empty %s profile: %w", enf, err)
			}
			out.Fragments[enf] = fragment(base, content)
		}
		out.Profiles = append(out.Profiles, prof)
	}
	return out, nil
}

// fragment is what full adds to base. For JSON documents it is the top-level members
// whose values differ; for text it is the lines base does not have.
func fragment(base, full []byte) string {
	var b, f map[string]json.RawMessage
	if json.Unmarshal(base, &b) == nil && json.Unmarshal(full, &f) == nil {
		keys := make([]string, 0, len(f))
		for k, v := range f {
			if !bytes.Equal(b[k], v) {
				keys = append(keys, k)
			}
		}
		slices.Sort(keys)
		var out bytes.Buffer
		for _, k := range keys {
			var v any
			_ = json.Unmarshal(f[k], &v)
			text, _ := json.MarshalIndent(v, "", "  ")
			fmt.Fprintf(&out, "%q: %s\n", k, text)
		}
		return out.String()
	}
	have := map[string]int{}
	for _, l := range strings.Split(string(base), "\n") {
		have[l]++
	}
	var out []string
	for _, l := range strings.Split(string(full), "\n") {
		if have[l] > 0 {
			have[l]--
			continue
		}
		out = append(out, l)
	}
	return strings.Join(out, "\n")
}
