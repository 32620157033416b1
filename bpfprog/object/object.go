// Package object carries the BPF object built from the C sources in bpfprog/
// (hack/build-bpf.sh builds it; `make verify` checks it is current). enforcer/bpf loads
// it; nothing else should.
package object

import _ "embed"

// Object is podarmor.bpf.o: every LSM program and map, CO-RE, with BTF.
//
//go:embed podarmor.bpf.o
var Object []byte
