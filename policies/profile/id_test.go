package profile

import (
	"strings"
	"testing"

	"k8s.io/apimachinery/pkg/util/validation"
)

func TestIDs(t *testing.T) {
	long := strings.Repeat("a", 63)
	tests := map[string]struct {
		got, want string
	}{
		"a short namespaced policy keeps its names": {
			got: ForArmorPolicy("shop", "web"), want: "ap.shop.web",
		},
		"a cluster policy keeps its name": {
			got: ForClusterArmorPolicy("default"), want: "cap.default",
		},
		"a long name is cut and hashed": {
			got: ForArmorPolicy(long, "web"), want: "ap." + strings.Repeat("a", 49) + "-",
		},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			if !strings.HasPrefix(tc.got, tc.want) {
				t.Errorf("id %q, want prefix %q", tc.got, tc.want)
			}
			if errs := validation.IsValidLabelValue(tc.got); len(errs) > 0 {
				t.Errorf("id %q is not a label value: %v", tc.got, errs)
			}
		})
	}
}

func TestIDsAreDistinct(t *testing.T) {
	long := strings.Repeat("n", 60)
	ids := []string{
		ForArmorPolicy("a-b", "c"),
		ForArmorPolicy("a", "b-c"),
		ForArmorPolicy("a", "b.c"),
		ForArmorPolicy(long, "x"),
		ForArmorPolicy(long, "y"),
		ForArmorPolicy("x", long+"1"),
		ForArmorPolicy("x", long+"2"),
		ForClusterArmorPolicy("a.b"),
		ForArmorPolicy("a", "b"),
	}
	seen := map[string]int{}
	for i, id := range ids {
		if len(id) > MaxLen {
			t.Errorf("id %q is %d characters", id, len(id))
		}
		if j, ok := seen[id]; ok {
			t.Errorf("ids %d and %d are both %q", j, i, id)
		}
		seen[id] = i
	}
}
