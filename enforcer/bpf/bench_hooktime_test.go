//go:build vmguest

package bpf

// Time in the LSM hooks, for every configuration alike: podarmor's programs are timed by
// the kernel's BPF statistics, but AppArmor's hooks by nothing, and a whole operation's
// time varies by more than either costs in a workload as heavy as exec. So the benchmark
// also times the kernel's security_* functions, through which every LSM's hooks run
// (AppArmor's, the BPF LSM's programs, the capability module's), with an fentry and an
// fexit program each: what a configuration adds to bare there is what its LSM costs the
// operation, measured the same way for AppArmor and for podarmor.

import (
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/btf"
	"github.com/cilium/ebpf/link"
)

// lsmEntryPoints are the security_* functions the workloads reach with a hook of
// AppArmor or of podarmor behind them, or both: files (open, the file's own security
// blob, mmap of an exec'd binary, path operations), exec and credentials, tasks,
// capabilities and sockets. Not security_bpf: reading the timings is a bpf() call. A
// function the running kernel does not have in its BTF, or
// has inlined, is reported and left out.
var lsmEntryPoints = []string{
	"security_file_open", "security_file_alloc", "security_file_free", "security_file_permission",
	"security_file_receive", "security_mmap_file", "security_file_mprotect", "security_file_ioctl",
	"security_inode_getattr",
	"security_path_mknod", "security_path_mkdir", "security_path_rmdir", "security_path_unlink",
	"security_path_symlink", "security_path_link", "security_path_rename", "security_path_truncate",
	"security_path_chmod", "security_path_chown",
	"security_bprm_creds_for_exec", "security_bprm_creds_from_file", "security_bprm_check",
	"security_bprm_committing_creds", "security_bprm_committed_creds",
	"security_prepare_creds", "security_cred_free", "security_cred_alloc_blank", "security_transfer_creds",
	"security_task_alloc", "security_task_free", "security_task_kill", "security_task_setrlimit",
	"security_capable", "security_capget",
	"security_sk_alloc", "security_sk_free", "security_socket_create", "security_socket_post_create",
	"security_socket_connect", "security_socket_sendmsg", "security_socket_recvmsg",
	"security_socket_getsockname", "security_socket_getsockopt", "security_socket_setsockopt",
	"security_sock_graft", "security_socket_shutdown",
}

// hookTimer times the functions of lsmEntryPoints: an fentry program stores the time at
// entry in starts[i], an fexit program adds the time since to sums[i] and counts the call.
// The guest has one vCPU, and none of these functions calls another of them for the
// workloads (a call nested in another would be counted twice).
type hookTimer struct {
	starts, sums *ebpf.Map
	names        []string
	progs        []*ebpf.Program
	links        []link.Link
}

func newHookTimer(tb testing.TB) *hookTimer {
	spec, err := btf.LoadKernelSpec()
	if err != nil {
		tb.Fatalf("kernel BTF: %v", err)
	}
	h := &hookTimer{}
	for _, name := range lsmEntryPoints {
		var fn *btf.Func
		if err := spec.TypeByName(name, &fn); err != nil {
			fmt.Printf("# hook timing: %s left out: not in the kernel's BTF\n", name)
			continue
		}
		h.names = append(h.names, name)
	}
	n := uint32(len(h.names))
	if h.starts, err = ebpf.NewMap(&ebpf.MapSpec{Type: ebpf.Array, KeySize: 4, ValueSize: 8, MaxEntries: n}); err != nil {
		tb.Fatalf("hook timing map: %v", err)
	}
	if h.sums, err = ebpf.NewMap(&ebpf.MapSpec{Type: ebpf.Array, KeySize: 4, ValueSize: 16, MaxEntries: n}); err != nil {
		tb.Fatalf("hook timing map: %v", err)
	}
	var kept []string
	for i, name := range h.names {
		entry, err := ebpf.NewProgram(&ebpf.ProgramSpec{Name: "hooktime_in", Type: ebpf.Tracing, AttachType: ebpf.AttachTraceFEntry,
			AttachTo: name, License: "GPL", Instructions: h.entryProgram(int32(i))})
		if err != nil {
			fmt.Printf("# hook timing: %s left out: %v\n", name, err)
			continue
		}
		exit, err := ebpf.NewProgram(&ebpf.ProgramSpec{Name: "hooktime_out", Type: ebpf.Tracing, AttachType: ebpf.AttachTraceFExit,
			AttachTo: name, License: "GPL", Instructions: h.exitProgram(int32(i))})
		if err != nil {
			entry.Close()
			fmt.Printf("# hook timing: %s left out: %v\n", name, err)
			continue
		}
		h.progs = append(h.progs, entry, exit)
		kept = append(kept, name)
	}
	// Indices stay those of h.names; the maps are sized for all of them.
	fmt.Printf("# hook timing: %d security_* functions timed\n", len(kept))
	return h
}

// lookupSlot sets R0 to the value of m at the key on the stack (the function's index), or
// jumps to "out".
func lookupSlot(m *ebpf.Map) asm.Instructions {
	return asm.Instructions{
		asm.Mov.Reg(asm.R2, asm.RFP),
		asm.Add.Imm(asm.R2, -4),
		asm.LoadMapPtr(asm.R1, m.FD()),
		asm.FnMapLookupElem.Call(),
		asm.JEq.Imm(asm.R0, 0, "out"),
	}
}

// entryProgram: starts[i] = now.
func (h *hookTimer) entryProgram(i int32) asm.Instructions {
	ins := asm.Instructions{asm.StoreImm(asm.RFP, -4, int64(i), asm.Word)}
	ins = append(ins, lookupSlot(h.starts)...)
	return append(ins,
		asm.Mov.Reg(asm.R6, asm.R0),
		asm.FnKtimeGetNs.Call(),
		asm.StoreMem(asm.R6, 0, asm.R0, asm.DWord),
		asm.Mov.Imm(asm.R0, 0).WithSymbol("out"),
		asm.Return(),
	)
}

// exitProgram: sums[i] += now - starts[i], and one call more, for a call whose entry was
// seen.
func (h *hookTimer) exitProgram(i int32) asm.Instructions {
	ins := asm.Instructions{
		asm.FnKtimeGetNs.Call(),
		asm.Mov.Reg(asm.R7, asm.R0),
		asm.StoreImm(asm.RFP, -4, int64(i), asm.Word),
	}
	ins = append(ins, lookupSlot(h.starts)...)
	ins = append(ins,
		asm.LoadMem(asm.R1, asm.R0, 0, asm.DWord),
		asm.JEq.Imm(asm.R1, 0, "out"),
		asm.Mov.Imm(asm.R2, 0),
		asm.StoreMem(asm.R0, 0, asm.R2, asm.DWord),
		asm.Sub.Reg(asm.R7, asm.R1),
	)
	ins = append(ins, lookupSlot(h.sums)...)
	return append(ins,
		asm.LoadMem(asm.R1, asm.R0, 0, asm.DWord),
		asm.Add.Reg(asm.R1, asm.R7),
		asm.StoreMem(asm.R0, 0, asm.R1, asm.DWord),
		asm.LoadMem(asm.R1, asm.R0, 8, asm.DWord),
		asm.Add.Imm(asm.R1, 1),
		asm.StoreMem(asm.R0, 8, asm.R1, asm.DWord),
		asm.Mov.Imm(asm.R0, 0).WithSymbol("out"),
		asm.Return(),
	)
}

func (h *hookTimer) attach(tb testing.TB) {
	for _, p := range h.progs {
		l, err := link.AttachTracing(link.TracingOptions{Program: p})
		if err != nil {
			tb.Fatalf("attach hook timing program: %v", err)
		}
		h.links = append(h.links, l)
	}
}

func (h *hookTimer) detach() {
	for _, l := range h.links {
		l.Close()
	}
	h.links = nil
}

func (h *hookTimer) close() {
	h.detach()
	for _, p := range h.progs {
		p.Close()
	}
	h.starts.Close()
	h.sums.Close()
}

// read returns the time and the calls of each timed function so far.
func (h *hookTimer) read(tb testing.TB) map[string]progStat {
	m := map[string]progStat{}
	for i, name := range h.names {
		var v [2]uint64
		if err := h.sums.Lookup(uint32(i), &v); err != nil {
			tb.Fatalf("read hook timing of %s: %v", name, err)
		}
		m[name] = progStat{runtime: time.Duration(v[0]), count: v[1]}
	}
	return m
}

// hookTimes runs each workload once more in every configuration with the security_*
// functions timed, and prints the time per operation in LSM hooks, what each
// configuration adds to bare there, and podarmor's addition against AppArmor's with the
// same number of rules.
func (r *benchRig) hookTimes(workloads []benchWorkload, configs []benchConfig) {
	h := newHookTimer(r.tb)
	defer h.close()
	fmt.Printf("\n## time in the LSM hooks (the security_* functions, fentry to fexit, one run of each workload alone): ns per operation, and what a configuration adds to bare\n")
	for _, w := range workloads {
		perOp := map[string]float64{}
		top := map[string]string{}
		for _, c := range configs {
			r.enter(c)
			h.attach(r.tb)
			b := h.read(r.tb)
			r.run(c, []benchWorkload{w})
			a := h.read(r.tb)
			h.detach()
			ops := float64(r.ops[w.name] + r.untimed[w.name])
			var total float64
			type part struct {
				name string
				ns   float64
			}
			var parts []part
			for name, s := range a {
				ns := float64(s.runtime-b[name].runtime) / ops
				total += ns
				if ns >= 1 {
					parts = append(parts, part{strings.TrimPrefix(name, "security_"), ns})
				}
			}
			slices.SortFunc(parts, func(x, y part) int { return int(y.ns - x.ns) })
			var sb strings.Builder
			for i, p := range parts {
				if i == 5 {
					break
				}
				fmt.Fprintf(&sb, " %s %.0f", p.name, p.ns)
			}
			perOp[c.name] = total
			top[c.name] = sb.String()
		}
		for _, c := range configs {
			fmt.Printf("hooks %-9s %-14s %10.0f ns/op in hooks, %+8.0f vs bare;%s\n", w.name, c.name, perOp[c.name], perOp[c.name]-perOp["bare"], top[c.name])
		}
		for _, n := range benchRuleCounts {
			bp, aa := perOp[fmt.Sprintf("bpf-%d", n)]-perOp["bare"], perOp[fmt.Sprintf("apparmor-%d", n)]-perOp["bare"]
			verdict := "met"
			if bp > aa {
				verdict = "NOT MET"
			}
			fmt.Printf("target (hook time) %s: bpf-%d adds %.0f ns/op vs apparmor-%d %.0f ns/op, no slower: %s\n", w.name, n, bp, n, aa, verdict)
		}
	}
}
