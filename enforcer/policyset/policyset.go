// Package policyset reads the ArmorPolicy and ClusterArmorPolicy files a standalone
// enforcer enforces and compiles them: the profiles of every enforcer, by profile ID.
// `podarmor try` uses it on both sides of its VM, to know what the enforcer loads.
package policyset

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"

	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"sigs.k8s.io/yaml"

	"github.com/podarmor/podarmor/policies/api/v1alpha1"
	"github.com/podarmor/podarmor/policies/compile"
)

// Compiled is one policy and what it compiled to.
type Compiled struct {
	// Source names the file and document, "policy.yaml#1".
	Source string
	Policy compile.Policy
	Result *compile.Result
}

// ProfileID is the policy's profile ID.
func (c Compiled) ProfileID() string { return c.Result.RuleSet.ProfileID }

// Profile returns the compiled profile of enforcer e, or nil when the policy does not
// use e or e loads nothing for it (seccomp in mode RuntimeDefault or AlwaysAllow).
func (c Compiled) Profile(e v1alpha1.Enforcer) []byte {
	for _, p := range c.Result.Profiles {
		if p.Enforcer == e {
			return p.Content
		}
	}
	return nil
}

// Read reads every ArmorPolicy and ClusterArmorPolicy of the files (YAML or JSON,
// several documents each) and compiles them with o. Compiling checks every rule; the API
// server's CRD schema and the webhook's checks of names and selectors are not applied
// here, which keeps the Kubernetes API machinery out of the enforcer binary: `podarmor
// validate` does them. Two policies with one profile ID are an error.
func Read(files []string, o compile.Options) ([]Compiled, error) {
	var out []Compiled
	seen := map[string]string{}
	for _, file := range files {
		data, err := os.ReadFile(file)
		if err != nil {
			return nil, fmt.Errorf("read policy: %w", err)
		}
		docs, err := parsePolicies(file, data, o)
		if err != nil {
			return nil, err
		}
		for _, d := range docs {
			if prev, ok := seen[d.ProfileID()]; ok {
				return nil, fmt.Errorf("%s and %s have the same profile ID %s", prev, d.Source, d.ProfileID())
			}
			seen[d.ProfileID()] = d.Source
			out = append(out, d)
		}
	}
	return out, nil
}

func parsePolicies(name string, data []byte, o compile.Options) ([]Compiled, error) {
	dec := utilyaml.NewYAMLOrJSONDecoder(bytes.NewReader(data), 4096)
	var out []Compiled
	for i := 1; ; i++ {
		var raw map[string]any
		err := dec.Decode(&raw)
		if errors.Is(err, io.EOF) {
			break
		}
		where := fmt.Sprintf("%s#%d", name, i)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", where, err)
		}
		if raw == nil {
			continue
		}
		apiVersion, _ := raw["apiVersion"].(string)
		kind, _ := raw["kind"].(string)
		if want := v1alpha1.SchemeGroupVersion.String(); apiVersion != want {
			return nil, fmt.Errorf("%s: apiVersion %q is not %s", where, apiVersion, want)
		}
		body, err := yaml.Marshal(raw)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", where, err)
		}
		var p compile.Policy
		switch kind {
		case compile.KindArmorPolicy:
			var ap v1alpha1.ArmorPolicy
			if err := yaml.UnmarshalStrict(body, &ap); err != nil {
				return nil, fmt.Errorf("%s: %w", where, err)
			}
			if ap.Namespace == "" {
				ap.Namespace = "default"
			}
			p = compile.FromArmorPolicy(&ap)
		case compile.KindClusterArmorPolicy:
			var cp v1alpha1.ClusterArmorPolicy
			if err := yaml.UnmarshalStrict(body, &cp); err != nil {
				return nil, fmt.Errorf("%s: %w", where, err)
			}
			p = compile.FromClusterArmorPolicy(&cp)
		default:
			return nil, fmt.Errorf("%s: kind %q is neither %s nor %s", where, kind, compile.KindArmorPolicy, compile.KindClusterArmorPolicy)
		}
		if p.Name == "" {
			return nil, fmt.Errorf("%s: %s has no name", where, kind)
		}
		res, errs := compile.Compile(p, o)
		if len(errs) > 0 {
			return nil, fmt.Errorf("%s: %s: %w", where, p, errs.ToAggregate())
		}
		out = append(out, Compiled{Source: where, Policy: p, Result: res})
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("%s: no policy in the file", name)
	}
	return out, nil
}
