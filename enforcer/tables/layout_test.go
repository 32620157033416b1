package tables

import (
	"bytes"
	"encoding/binary"
	"reflect"
	"testing"

	"github.com/cilium/ebpf/btf"

	"github.com/podarmor/podarmor/bpfprog/object"
)

// TestLayoutMatchesObject holds every Go mirror to the C struct in the object's BTF: same
// size, same number of members, each member at the same offset.
func TestLayoutMatchesObject(t *testing.T) {
	spec, err := btf.LoadSpecFromReader(bytes.NewReader(object.Object))
	if err != nil {
		t.Fatalf("load BTF of the BPF object: %v", err)
	}
	for cname, goval := range map[string]any{
		"identity":         Identity{},
		"registration":     Registration{},
		"config":           Config{},
		"enforcer_task":    EnforcerTask{},
		"verdicts_path":    VerdictsPath{},
		"profile_body":     ProfileBody{},
		"dfa_classes":      DFAClasses{},
		"dfa_accept_key":   DFAAcceptKey{},
		"socket_key":       SocketKey{},
		"verdict":          Verdict{},
		"egress4_key":      Egress4Key{},
		"egress6_key":      Egress6Key{},
		"egress_range":     EgressRange{},
		"egress_ports":     EgressPorts{},
		"mask":             Mask{},
		"mount_body":       MountBody{},
		"mount_fstype_key": MountFSTypeKey{},
		"mount_paths":      MountPaths{},
		"counter_key":      CounterKey{},
		"event":            Event{},
	} {
		t.Run(cname, func(t *testing.T) {
			var st *btf.Struct
			if err := spec.TypeByName(cname, &st); err != nil {
				t.Fatalf("struct %s not in the object's BTF: %v", cname, err)
			}
			gt := reflect.TypeOf(goval)
			if got, want := binary.Size(goval), int(st.Size); got != want {
				t.Errorf("Go %s is %d bytes, C struct %s is %d", gt.Name(), got, cname, want)
			}
			if gt.NumField() != len(st.Members) {
				t.Fatalf("Go %s has %d fields, C struct %s has %d members", gt.Name(), gt.NumField(), cname, len(st.Members))
			}
			off := 0
			for i, m := range st.Members {
				f := gt.Field(i)
				if int(m.Offset.Bytes()) != off {
					t.Errorf("%s.%s (C %s) is at offset %d in C, %d in Go", gt.Name(), f.Name, m.Name, m.Offset.Bytes(), off)
				}
				off += binary.Size(reflect.Zero(f.Type).Interface())
			}
		})
	}
}
