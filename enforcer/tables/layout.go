package tables

import "fmt"

// The Go mirror of bpfprog/podarmor.h. Every struct here has exactly the fields, sizes and
// order of its C counterpart, with the C compiler's padding spelled out, so that
// encoding/binary (little-endian, no padding of its own) writes the bytes the programs
// read. TestLayoutMatchesObject checks each one against the BTF of the built object.

// ABI is PODARMOR_ABI: the enforcer refuses an object of another layout.
const ABI = 2

// Limits fixed by the object's layout.
const (
	PathBuf       = 4096
	EventPath     = 256
	EgressRanges  = 16
	MountWords    = 16
	MountRules    = MountWords * 64
	RuleNone      = 0xffff
	Any           = 0xffff
	MaxRuleIndex  = RuleNone - 1
	fstypeKeySize = 28

	// NSFilterBits and NSFilterWords are PA_NS_FILTER_BITS and PA_NS_FILTER_WORDS: the
	// registration filter has a bit for each value of a mount namespace's low
	// NSFilterBits bits, in NSFilterWords 64-bit words.
	NSFilterBits  = 17
	NSFilterWords = 1 << (NSFilterBits - 6)

	// DFAPageShift and DFAPage are PA_DFA_PAGE_SHIFT and PA_DFA_PAGE: the transition
	// table is pages of DFAPage 16-bit entries, and a body's table lies in one page.
	// MaxDFAStates is the most states a path DFA can have with 16-bit state numbers
	// (0 to 65,535, 0 the dead state), as many as enforcer/tables/dfa builds by default.
	DFAPageShift = 21
	DFAPage      = 1 << DFAPageShift
	MaxDFAStates = 1 << 16
)

// NSFilterBit returns the word of the registration filter that holds mount namespace
// ns's bit, and that bit.
func NSFilterBit(ns uint32) (word uint32, bit uint64) {
	b := ns & (1<<NSFilterBits - 1)
	return b >> 6, 1 << (b & 63)
}

// Perm is enum pa_perm: a bit of a path verdict.
type Perm uint32

// The path permissions.
const (
	PermRead Perm = iota
	PermWrite
	PermAppend
	PermCreate
	PermDelete
	PermRename
	PermLink
	PermChmod
	PermChown
	PermExec
	NumPerms
)

// Op is enum pa_op.
type Op uint32

// The operations.
const (
	OpBPF Op = iota
	OpKernelModule
	OpUsernsCreate
	OpUserfaultfd
	OpIoUring
	OpPerfEvent
	OpChmodSetuid
	NumOps
)

// Ptrace permissions and peers (enum pa_ptrace, enum pa_peers).
const (
	PtraceTrace = iota
	PtraceRead
	PtraceTracedBy
	PtraceReadBy
	NumPtrace
)

const (
	PeersAny = iota
	PeersOutside
	NumPeers
)

// Mount operations and flags (enum pa_mount_op, enum pa_mount_flag).
const (
	MountMount = iota
	MountUmount
	MountPivotRoot
	NumMountOps
)

const NumMountFlags = 12

// Hook is enum pa_hook: where an event comes from.
type Hook uint8

// The hooks.
const (
	HookFileOpen Hook = iota + 1
	HookExec
	HookPath
	HookCapable
	HookSocketCreate
	HookConnect
	HookSendmsg
	HookPtrace
	HookMount
	HookOperation
)

// hookNames name the hooks in events and in the decision metric: the LSM hook, or for
// HookPath and HookOperation the family of hooks (path_*, and the hooks of operation
// rules), as the event's detail tells apart.
var hookNames = map[Hook]string{
	HookFileOpen:     "file_open",
	HookExec:         "bprm_check_security",
	HookPath:         "path",
	HookCapable:      "capable",
	HookSocketCreate: "socket_create",
	HookConnect:      "socket_connect",
	HookSendmsg:      "socket_sendmsg",
	HookPtrace:       "ptrace_access_check",
	HookMount:        "sb_mount",
	HookOperation:    "operation",
}

// String is the hook's name ("file_open", "path"...); a value outside enum pa_hook is
// "hook #N".
func (h Hook) String() string {
	if s, ok := hookNames[h]; ok {
		return s
	}
	return fmt.Sprintf("hook #%d", h)
}

// HookNames lists every hook's name, in enum order: the values the decision metric's
// hook label can take.
func HookNames() []string {
	out := make([]string, 0, len(hookNames))
	for h := HookFileOpen; h <= HookOperation; h++ {
		out = append(out, hookNames[h])
	}
	return out
}

// Action is enum pa_action.
type Action uint8

// The actions.
const (
	ActionNone Action = iota
	ActionEnforce
	ActionAudit
)

// Drops (enum pa_drop).
const (
	DropRingbuf = iota
	DropRateLimit
	DropPath
	NumDrops
)

// Identity is struct identity.
type Identity struct {
	Profile   uint32
	Container uint32
}

// Registration is struct registration (maps.h).
type Registration struct {
	ID    Identity
	Armed uint32
	Pad   uint32
}

// Config is struct config.
type Config struct {
	HostMntns    uint32
	EventsPerSec uint32
	EventsBurst  uint32
	Pad          uint32
}

// EnforcerTask is struct enforcer_task: the enforcer's process, exempt from sandboxes'
// readby rules.
type EnforcerTask struct {
	TGID       uint32
	Pad        uint32
	StartTicks uint64
}

// VerdictsPath is struct verdicts_path.
type VerdictsPath struct {
	Enforce uint32
	Audit   uint32
	Rule    [16]uint16 // NumPerms used
}

// ProfileBody is struct profile_body.
type ProfileBody struct {
	Slot          uint32
	Flags         uint32
	DFABase       uint32
	DFAClasses    uint32
	DFAStates     uint32
	Pad0          uint32
	CapEnforce    uint64
	CapAudit      uint64
	CapRule       [64]uint16
	OpEnforce     uint32
	OpAudit       uint32
	OpRule        [NumOps + 1]uint16
	Pad1          uint16
	PtraceEnforce [NumPeers]uint8
	PtraceAudit   [NumPeers]uint8
	PtraceRule    [NumPeers][NumPtrace]uint16
	Pad3          uint16
	HasSocket     uint32 // bit 0: socket rules present; bit 1+SocketShape: a key of that shape
	HasEgress     uint32
	MountOps      uint32
	Pad2          uint32
}

// DFAClasses is struct dfa_classes.
type DFAClasses struct {
	Class [256]uint8
}

// DFAAcceptKey is struct dfa_accept_key.
type DFAAcceptKey struct {
	Body  uint32
	State uint32
}

// SocketKey is struct socket_key.
type SocketKey struct {
	Body     uint32
	Family   uint16
	Type     uint16
	Protocol uint16
	Pad      uint16
}

// Verdict is struct verdict.
type Verdict struct {
	Action Action
	Pad    uint8
	Rule   uint16
}

// Egress4Key and Egress6Key are the LPM trie keys.
type Egress4Key struct {
	PrefixLen uint32
	Body      uint32
	Addr      [4]byte
}

type Egress6Key struct {
	PrefixLen uint32
	Body      uint32
	Addr      [16]byte
}

// EgressRange is struct egress_range; protocol index 0 TCP, 1 UDP, 2 SCTP, 3 other.
type EgressRange struct {
	First  uint16
	Last   uint16
	Action [4]Action
	Rule   [4]uint16
}

// EgressPorts is struct egress_ports.
type EgressPorts struct {
	N     uint32
	Pad   uint32
	Range [EgressRanges]EgressRange
}

// Mask is struct mask: one bit per mount rule.
type Mask struct {
	W [MountWords]uint64
}

// Set sets bit i.
func (m *Mask) Set(i int) { m.W[i/64] |= 1 << (i % 64) }

// Or adds the bits of o.
func (m *Mask) Or(o Mask) {
	for i := range m.W {
		m.W[i] |= o.W[i]
	}
}

// MountBody is struct mount_body.
type MountBody struct {
	Op       [NumMountOps]Mask
	NoFSType Mask
	NoFlags  Mask
	Flag     [NumMountFlags]Mask
	NoSource Mask
	NoTarget Mask
	Action   [MountRules]Action
	Rule     [MountRules]uint16
}

// MountFSTypeKey is struct mount_fstype_key.
type MountFSTypeKey struct {
	Body   uint32
	FSType [fstypeKeySize]byte
}

// MountPaths is struct mount_paths.
type MountPaths struct {
	Source Mask
	Target Mask
}

// CounterKey is struct counter_key.
type CounterKey struct {
	Body   uint32
	Rule   uint16
	Action Action
	Hook   Hook
}

// UncountedKey is the counter of decisions that found the counters map full: the
// programs count there what they could not count under its own key.
var UncountedKey = CounterKey{Body: 0, Rule: RuleNone}

// Event is struct event.
type Event struct {
	TS        uint64
	PID       uint32
	TGID      uint32
	Container uint32
	Profile   uint32
	Body      uint32
	Rule      uint16
	Action    Action
	Hook      Hook
	Detail    uint32
	Detail2   uint32
	Comm      [16]byte
	Port      uint16
	Family    uint16
	Addr      [16]byte
	PathLen   uint32
	Path      [EventPath]byte
}
