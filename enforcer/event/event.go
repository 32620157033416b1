// Package event is the enforcer's record of a decision: an operation of a sandboxed
// container that a rule denied (Enforce) or recorded (Audit). The enforcer writes one
// Record per line as JSON (its audit log: stdout, or a file rotated by size, see
// OpenLog and `podarmor-enforcer kubernetes --events`);
// `podarmor try` reads them back and prints them with Record.String.
//
// Records come from two sources: the BPF enforcer's ring buffer, which names the rule,
// and the kernel's audit messages of AppArmor (apparmor="DENIED" / "AUDIT" in
// /dev/kmsg), which name the profile and the operation but not the rule; the enforcer
// finds the rule of a file or exec denial by matching its path against the policy's
// rules. seccomp leaves no record of an Enforce rule (SCMP_ACT_ERRNO is silent).
package event

import (
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"sync"
	"time"

	"github.com/podarmor/podarmor/policies/api/v1alpha1"
)

// Record is one decision.
type Record struct {
	// Time is when the enforcer read the decision.
	Time time.Time `json:"time"`
	// Enforcer is the mechanism that decided: BPF or AppArmor.
	Enforcer v1alpha1.Enforcer `json:"enforcer"`
	// Action is Enforce (the operation was refused) or Audit (it was recorded only).
	Action v1alpha1.Action `json:"action"`
	// Profile is the profile ID.
	Profile string `json:"profile"`
	// Rule is the rule ID ("builtin/...", "custom/...", "runtime-default/..."), empty when
	// the enforcer cannot tell.
	Rule string `json:"rule,omitempty"`
	// Hook is the LSM hook (BPF) or the AppArmor operation that saw the decision.
	Hook string `json:"hook,omitempty"`
	// Operation is what was refused or recorded: a file permission (read, write, exec,
	// ...), "capability SYS_ADMIN", "socket inet/raw", "connect", "mount", an operation
	// of an operation rule (bpf, usernsCreate, ...).
	Operation string `json:"operation"`
	// Path is the resolved path of a file operation.
	Path string `json:"path,omitempty"`
	// Address is the destination of a connection, "address:port".
	Address string `json:"address,omitempty"`
	// Container is the runtime's container ID, when the enforcer registered it.
	Container string `json:"container,omitempty"`
	// Node, Namespace, Pod and ContainerName place the container in Kubernetes, and
	// Policy names the policy of the profile ("ArmorPolicy shop/web"); the Kubernetes
	// mode sets them.
	Node          string `json:"node,omitempty"`
	Namespace     string `json:"namespace,omitempty"`
	Pod           string `json:"pod,omitempty"`
	ContainerName string `json:"containerName,omitempty"`
	Policy        string `json:"policy,omitempty"`
	// MountNamespace is the container's mount namespace inode.
	MountNamespace uint32 `json:"mntns,omitempty"`
	// PID and Comm are the process's.
	PID  uint32 `json:"pid,omitempty"`
	Comm string `json:"comm,omitempty"`
}

// String is the record as a line for people:
//
//	denied   read /run/secrets/kubernetes.io/serviceaccount/token  rule builtin/disallow-read-serviceaccount-token  (BPF file_open, cat pid 7)
func (r Record) String() string {
	verdict := "denied "
	if r.Action == v1alpha1.ActionAudit {
		verdict = "audited"
	}
	var b strings.Builder
	fmt.Fprintf(&b, "%s  %s", verdict, r.Operation)
	for _, s := range []string{r.Path, r.Address} {
		if s != "" {
			b.WriteString(" " + s)
		}
	}
	rule := r.Rule
	if rule == "" {
		rule = "(not reported)"
	}
	fmt.Fprintf(&b, "  rule %s  (%s", rule, r.Enforcer)
	if r.Hook != "" {
		b.WriteString(" " + r.Hook)
	}
	if r.Comm != "" || r.PID != 0 {
		fmt.Fprintf(&b, ", %s pid %d", r.Comm, r.PID)
	}
	b.WriteString(")")
	return b.String()
}

// Writer writes records as JSON lines; safe for concurrent use.
type Writer struct {
	mu sync.Mutex
	w  io.Writer
}

// NewWriter returns a Writer to w.
func NewWriter(w io.Writer) *Writer { return &Writer{w: w} }

// Write writes one record as one line in one Write call to the underlying writer: a
// rotated file (OpenLog) then never splits a line, and one failed write (a full disk)
// loses that line only, unlike a json.Encoder, which stays failed.
func (w *Writer) Write(r Record) error {
	line, err := json.Marshal(r)
	if err != nil {
		return fmt.Errorf("encode event: %w", err)
	}
	line = append(line, '\n')
	w.mu.Lock()
	defer w.mu.Unlock()
	_, err = w.w.Write(line)
	return err
}
