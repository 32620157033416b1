package tables

import (
	"bytes"
	"encoding/binary"
	"reflect"
	"testing"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/btf"
	"golang.org/x/sys/unix"

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

// TestNSFilterMatchesObject holds the Go constants of the registration filter to the map
// the programs read: its size in words, and a bit per value of the low NSFilterBits bits.
func TestNSFilterMatchesObject(t *testing.T) {
	spec, err := ebpf.LoadCollectionSpecFromReader(bytes.NewReader(object.Object))
	if err != nil {
		t.Fatalf("load the BPF object: %v", err)
	}
	m, ok := spec.Maps["ns_filter"]
	if !ok {
		t.Fatal("the object has no map ns_filter")
	}
	if m.MaxEntries != NSFilterWords || m.ValueSize != 8 {
		t.Errorf("ns_filter has %d entries of %d bytes, want %d of 8", m.MaxEntries, m.ValueSize, NSFilterWords)
	}
	seen := map[[2]uint64]uint32{}
	for ns := uint32(0); ns < 1<<NSFilterBits; ns++ {
		w, bit := NSFilterBit(ns)
		if w >= NSFilterWords || bit == 0 || bit&(bit-1) != 0 {
			t.Fatalf("namespace %d: word %d, bit %#x", ns, w, bit)
		}
		k := [2]uint64{uint64(w), bit}
		if other, dup := seen[k]; dup {
			t.Fatalf("namespaces %d and %d share a filter bit", other, ns)
		}
		seen[k] = ns
		if w2, bit2 := NSFilterBit(ns + 1<<NSFilterBits); w2 != w || bit2 != bit {
			t.Fatalf("namespace %d and %d (the same low bits) have different filter bits", ns, ns+1<<NSFilterBits)
		}
	}
}

// TestDFAPageMatchesObject holds the Go constants of the transition table to the map the
// programs read: pages of DFAPage 16-bit entries, written through a shared mapping.
func TestDFAPageMatchesObject(t *testing.T) {
	spec, err := ebpf.LoadCollectionSpecFromReader(bytes.NewReader(object.Object))
	if err != nil {
		t.Fatalf("load the BPF object: %v", err)
	}
	m, ok := spec.Maps["dfa_trans"]
	if !ok {
		t.Fatal("the object has no map dfa_trans")
	}
	if m.ValueSize != 2*DFAPage {
		t.Errorf("dfa_trans has values of %d bytes, want pages of %d 16-bit entries", m.ValueSize, DFAPage)
	}
	if m.Flags&unix.BPF_F_MMAPABLE == 0 {
		t.Errorf("dfa_trans is not memory-mappable (flags %#x): the enforcer writes it in place", m.Flags)
	}
	st, ok := m.Value.(*btf.Struct)
	if !ok {
		t.Fatalf("dfa_trans's value is %v, want a struct", m.Value)
	}
	if len(st.Members) != 1 {
		t.Fatalf("struct %s has %d members, want one array", st.Name, len(st.Members))
	}
	if a, ok := st.Members[0].Type.(*btf.Array); !ok || a.Nelems != DFAPage {
		t.Errorf("struct %s's member is %v, want an array of %d entries", st.Name, st.Members[0].Type, DFAPage)
	}
}
