// Package catalog is podarmor's built-in rule catalog: named entries, each a set of deny
// rules written in the schema of a policy's custom rules (v1alpha1.CustomRules), that a
// policy turns on by name in spec.builtinRules. The entries of category runtime-default
// express the confinement container runtimes apply by default; the modes RuntimeDefault
// and EnhanceProtect add them without being asked.
//
// The catalog is data. catalog.yaml, embedded in the binary, holds the hand-written
// entries; capabilities.go generates one entry per Linux capability and a few sets of
// capabilities from a table. Load checks both and returns them in a fixed order.
package catalog

import (
	"bytes"
	_ "embed"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"regexp"
	"slices"
	"strings"

	kjson "sigs.k8s.io/json"
	"sigs.k8s.io/yaml"

	"github.com/podarmor/podarmor/policies/api/v1alpha1"
	"github.com/podarmor/podarmor/policies/pattern"
)

// catalogYAML is the hand-written part of the catalog; its header comment describes the
// format.
//
//go:embed catalog.yaml
var catalogYAML []byte

// The categories of entries.
const (
	// CategoryRuntimeDefault entries express what container runtimes deny by default;
	// the modes RuntimeDefault and EnhanceProtect add them.
	CategoryRuntimeDefault = "runtime-default"
	// CategoryEscape entries block ways out of the container onto the host.
	CategoryEscape = "escape"
	// CategoryHardening entries remove kernel attack surface that workloads rarely need.
	CategoryHardening = "hardening"
	// CategoryInformationLeak entries block reading credentials and facts about the
	// host and the cluster.
	CategoryInformationLeak = "information-leak"
	// CategorySensitiveOperation entries block what attackers do after getting in:
	// shells, downloaders, changing accounts, reaching the container runtime.
	CategorySensitiveOperation = "sensitive-operation"
	// CategoryVulnerability entries mitigate particular vulnerabilities.
	CategoryVulnerability = "vulnerability"
	// CategoryCapability entries deny Linux capabilities; they are generated.
	CategoryCapability = "capability"
)

// Categories returns every category, in the order the catalog lists its entries.
func Categories() []string {
	return []string{
		CategoryRuntimeDefault, CategoryEscape, CategoryHardening, CategoryInformationLeak,
		CategorySensitiveOperation, CategoryVulnerability, CategoryCapability,
	}
}

// The placeholders an egress address may be. The compiler (policies/compile) replaces
// them with addresses from its options.
const (
	// placeholderAPIServer stands for the addresses of the cluster's kubernetes Service.
	placeholderAPIServer = "$APISERVER"
	// placeholderClusterCIDRs stands for the cluster's pod and service CIDRs.
	placeholderClusterCIDRs = "$CLUSTER_CIDRS"
)

// Entry is one built-in rule: a name a policy refers to and the rules it stands for.
type Entry struct {
	// Name is a DNS label, unique in the catalog, e.g. "disallow-write-core-pattern".
	Name string `json:"name"`
	// Category is one of Categories().
	Category string `json:"category"`
	// Description is one line saying what the entry blocks and why that matters. It
	// does not end with a period.
	Description string `json:"description"`
	// Enforcers are the enforcers that express at least one of the rules, in the
	// canonical order of v1alpha1.Enforcers. When one of them expresses only some of
	// the rules, Notes says which part it enforces.
	Enforcers []v1alpha1.Enforcer `json:"enforcers"`
	// Rules are what the entry expands to, in the schema of a policy's custom rules.
	Rules v1alpha1.CustomRules `json:"rules"`
	// Notes are limits, side effects and advice on what to combine the entry with.
	Notes string `json:"notes,omitempty"`
	// References are CVE ids and https links.
	References []string `json:"references,omitempty"`
}

// clone returns a copy of e that shares no memory with it, so that callers cannot change
// the catalog through what it returns.
func (e Entry) clone() Entry {
	out := e
	out.Enforcers = slices.Clone(e.Enforcers)
	e.Rules.DeepCopyInto(&out.Rules)
	out.References = slices.Clone(e.References)
	return out
}

// Catalog is a loaded, checked catalog. It is immutable and safe for concurrent use:
// every Entry it returns is a copy.
type Catalog struct {
	entries []Entry
	index   map[string]int
}

// Load parses the embedded catalog strictly, adds the generated capability entries and
// checks every entry. An error names the entry and the field at fault.
func Load() (*Catalog, error) {
	entries, err := parse(catalogYAML)
	if err != nil {
		return nil, err
	}
	return build(append(entries, capabilityEntries()...))
}

// build checks entries and indexes them by name.
func build(entries []Entry) (*Catalog, error) {
	c := &Catalog{entries: entries, index: make(map[string]int, len(entries))}
	var errs []error
	for i, e := range entries {
		if prev, dup := c.index[e.Name]; dup {
			errs = append(errs, fmt.Errorf("catalog entry %d (%q): name: also the name of entry %d", i, e.Name, prev))
			continue
		}
		c.index[e.Name] = i
		if err := check(e); err != nil {
			errs = append(errs, fmt.Errorf("catalog entry %d (%q): %w", i, e.Name, err))
		}
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	return c, nil
}

// Entries returns every entry: those of catalog.yaml in file order, then the generated
// capability entries.
func (c *Catalog) Entries() []Entry {
	out := make([]Entry, len(c.entries))
	for i, e := range c.entries {
		out[i] = e.clone()
	}
	return out
}

// Lookup returns the entry with the given name.
func (c *Catalog) Lookup(name string) (Entry, bool) {
	i, ok := c.index[name]
	if !ok {
		return Entry{}, false
	}
	return c.entries[i].clone(), true
}

// RuntimeDefault returns the entries of category runtime-default, in catalog order: the
// rules the compiler adds in modes RuntimeDefault and EnhanceProtect.
func (c *Catalog) RuntimeDefault() []Entry {
	var out []Entry
	for _, e := range c.entries {
		if e.Category == CategoryRuntimeDefault {
			out = append(out, e.clone())
		}
	}
	return out
}

// parse decodes the catalog document. Decoding is strict, as the API server decodes
// objects: field names are case-sensitive, and unknown or repeated fields are errors.
func parse(data []byte) ([]Entry, error) {
	js, err := yaml.YAMLToJSONStrict(data)
	if err != nil {
		return nil, fmt.Errorf("parse catalog: %w", err)
	}
	var doc struct {
		Entries []json.RawMessage `json:"entries"`
	}
	if err := decodeStrict(js, &doc); err != nil {
		return nil, fmt.Errorf("parse catalog: %w", err)
	}
	if len(doc.Entries) == 0 {
		return nil, errors.New("parse catalog: no entries")
	}
	entries := make([]Entry, len(doc.Entries))
	var errs []error
	for i, raw := range doc.Entries {
		if err := decodeStrict(raw, &entries[i]); err != nil {
			errs = append(errs, fmt.Errorf("parse catalog entry %d (%q): %w", i, nameOf(raw), err))
		}
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	return entries, nil
}

// decodeStrict decodes JSON into v, failing on unknown, repeated or wrongly cased fields.
func decodeStrict(data []byte, v any) error {
	strict, err := kjson.UnmarshalStrict(data, v)
	if err != nil {
		return err
	}
	return errors.Join(strict...)
}

// nameOf returns the name field of an entry that may not decode, for error messages.
func nameOf(raw json.RawMessage) string {
	var e struct {
		Name string `json:"name"`
	}
	if json.NewDecoder(bytes.NewReader(raw)).Decode(&e) != nil {
		return ""
	}
	return e.Name
}

// dnsLabel is what Kubernetes calls a DNS-1123 label, the form of a builtinRules name.
var dnsLabel = regexp.MustCompile(`^[a-z0-9]([-a-z0-9]*[a-z0-9])?$`)

// cveID is the form of a CVE identifier.
var cveID = regexp.MustCompile(`^CVE-[0-9]{4}-[0-9]{4,}$`)

// check reports what is wrong with one entry, each problem prefixed by its field.
func check(e Entry) error {
	var errs []error
	fail := func(field, format string, args ...any) {
		errs = append(errs, fmt.Errorf("%s: %s", field, fmt.Sprintf(format, args...)))
	}

	if len(e.Name) > 63 || !dnsLabel.MatchString(e.Name) {
		fail("name", "%q is not a DNS label (lower-case letters, digits and '-', at most 63)", e.Name)
	}
	if !slices.Contains(Categories(), e.Category) {
		fail("category", "%q is not one of %s", e.Category, strings.Join(Categories(), ", "))
	}
	switch d := e.Description; {
	case strings.TrimSpace(d) == "":
		fail("description", "empty")
	case strings.ContainsAny(d, "\r\n"):
		fail("description", "must be one line")
	case strings.TrimSpace(d) != d:
		fail("description", "leading or trailing white space")
	case strings.HasSuffix(d, "."):
		fail("description", "must not end with a period")
	}
	if len(e.Enforcers) == 0 {
		fail("enforcers", "empty")
	}
	last := -1
	for i, enf := range e.Enforcers {
		n := slices.Index(v1alpha1.Enforcers, enf)
		switch {
		case n < 0:
			fail(fmt.Sprintf("enforcers[%d]", i), "%q is not one of %v", enf, v1alpha1.Enforcers)
		case n <= last:
			fail(fmt.Sprintf("enforcers[%d]", i), "%q is repeated or out of the order %v", enf, v1alpha1.Enforcers)
		default:
			last = n
		}
	}
	for i, r := range e.References {
		if !cveID.MatchString(r) && !strings.HasPrefix(r, "https://") {
			fail(fmt.Sprintf("references[%d]", i), "%q is neither a CVE id nor an https link", r)
		}
	}
	errs = append(errs, checkRules(e.Rules)...)
	return errors.Join(errs...)
}

// checkRules checks what the catalog can check without the compiler: that there are
// rules, that path patterns parse and that egress addresses are addresses, prefixes or
// placeholders. The compiler checks the rest (the values of enums among them), and so do
// the catalog's tests.
func checkRules(r v1alpha1.CustomRules) []error {
	var errs []error
	fail := func(field string, err error) {
		errs = append(errs, fmt.Errorf("rules.%s: %w", field, err))
	}
	patterns := func(field string, ps []string, required bool) {
		if required && len(ps) == 0 {
			fail(field, errors.New("empty"))
		}
		for i, p := range ps {
			if _, err := pattern.Parse(p); err != nil {
				fail(fmt.Sprintf("%s[%d]", field, i), err)
			}
		}
	}

	n := len(r.Files) + len(r.Exec) + len(r.Network) + len(r.Capabilities) + len(r.Ptrace) +
		len(r.Mounts) + len(r.Operations) + len(r.Syscalls)
	if n == 0 {
		errs = append(errs, errors.New("rules: empty"))
	}
	for i, f := range r.Files {
		patterns(fmt.Sprintf("files[%d].paths", i), f.Paths, true)
		if len(f.Permissions) == 0 {
			fail(fmt.Sprintf("files[%d].permissions", i), errors.New("empty"))
		}
	}
	for i, x := range r.Exec {
		patterns(fmt.Sprintf("exec[%d].paths", i), x.Paths, true)
	}
	for i, m := range r.Mounts {
		patterns(fmt.Sprintf("mounts[%d].sources", i), m.Sources, false)
		patterns(fmt.Sprintf("mounts[%d].targets", i), m.Targets, false)
	}
	for i, nw := range r.Network {
		field := fmt.Sprintf("network[%d]", i)
		if (nw.Sockets == nil) == (nw.Egress == nil) {
			fail(field, errors.New("exactly one of sockets and egress must be set"))
			continue
		}
		if nw.Egress == nil {
			continue
		}
		for j, a := range nw.Egress.Addresses {
			if err := checkAddress(a); err != nil {
				fail(fmt.Sprintf("%s.egress.addresses[%d]", field, j), err)
			}
		}
	}
	for i, c := range r.Capabilities {
		if len(c.Capabilities) == 0 {
			fail(fmt.Sprintf("capabilities[%d].capabilities", i), errors.New("empty"))
		}
	}
	for i, p := range r.Ptrace {
		if len(p.Permissions) == 0 {
			fail(fmt.Sprintf("ptrace[%d].permissions", i), errors.New("empty"))
		}
	}
	for i, o := range r.Operations {
		if len(o.Operations) == 0 {
			fail(fmt.Sprintf("operations[%d].operations", i), errors.New("empty"))
		}
	}
	for i, s := range r.Syscalls {
		if len(s.Names) == 0 {
			fail(fmt.Sprintf("syscalls[%d].names", i), errors.New("empty"))
		}
	}
	return errs
}

// checkAddress accepts an IP address, a CIDR prefix with no bits set past its length,
// or a placeholder.
func checkAddress(a string) error {
	if a == placeholderAPIServer || a == placeholderClusterCIDRs {
		return nil
	}
	if strings.HasPrefix(a, "$") {
		return fmt.Errorf("%q is not a placeholder (%s, %s)", a, placeholderAPIServer, placeholderClusterCIDRs)
	}
	if strings.Contains(a, "/") {
		p, err := netip.ParsePrefix(a)
		if err != nil {
			return err
		}
		if p.Masked() != p {
			return fmt.Errorf("%q has bits set past its prefix length", a)
		}
		return nil
	}
	addr, err := netip.ParseAddr(a)
	if err != nil {
		return err
	}
	if addr.Zone() != "" {
		return fmt.Errorf("%q has a zone", a)
	}
	return nil
}
