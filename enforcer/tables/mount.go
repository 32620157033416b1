package tables

import (
	"fmt"
	"slices"

	"github.com/podarmor/podarmor/policies/api/v1alpha1"
	"github.com/podarmor/podarmor/policies/ruleset"
)

var mountOps = map[v1alpha1.MountOperation]int{
	v1alpha1.MountMount: MountMount, v1alpha1.MountUmount: MountUmount, v1alpha1.MountPivotRoot: MountPivotRoot,
}

// mountFlags are in the order of enum pa_mount_flag.
var mountFlags = []v1alpha1.MountFlag{
	"ro", "nosuid", "nodev", "noexec", "remount", "bind", "rbind", "move", "shared",
	"private", "slave", "unbindable",
}

// addMount gives the rule the next mount rule number and sets its bit in the mask of
// every value its fields allow.
func (b *builder) addMount(m *ruleset.Mount, idx uint16, action Action) error {
	if b.mounts >= MountRules {
		return fmt.Errorf("more than %d mount rules", MountRules)
	}
	if b.img.Mount == nil {
		b.img.Mount = &MountBody{}
	}
	mb := b.img.Mount
	n := b.mounts
	b.mounts++
	mb.Action[n] = action
	mb.Rule[n] = idx
	for _, op := range m.Operations {
		o, ok := mountOps[op]
		if !ok {
			return fmt.Errorf("unknown mount operation %q", op)
		}
		mb.Op[o].Set(n)
		b.img.Body.MountOps |= 1 << o
	}
	if len(m.FSTypes) == 0 {
		mb.NoFSType.Set(n)
	}
	for _, t := range m.FSTypes {
		if len(t) >= fstypeKeySize {
			return fmt.Errorf("fs type %q: longer than %d bytes", t, fstypeKeySize-1)
		}
		mask := b.img.FSTypes[t]
		mask.Set(n)
		b.img.FSTypes[t] = mask
	}
	if len(m.Flags) == 0 {
		mb.NoFlags.Set(n)
	}
	for _, f := range m.Flags {
		i := slices.Index(mountFlags, f)
		if i < 0 {
			return fmt.Errorf("unknown mount flag %q", f)
		}
		mb.Flag[i].Set(n)
	}
	if len(m.Sources) == 0 {
		mb.NoSource.Set(n)
	}
	if err := b.addPaths(m.Sources, pathTag{rule: idx, action: action, mount: n, source: true}); err != nil {
		return err
	}
	if len(m.Targets) == 0 {
		mb.NoTarget.Set(n)
	}
	return b.addPaths(m.Targets, pathTag{rule: idx, action: action, mount: n})
}
