package bpf

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"syscall"
	"unsafe"

	"github.com/podarmor/podarmor/enforcer/tables"
)

// Decision is one counted decision: a profile's rule, the hook that decided (as its
// event names it) and what was done.
type Decision struct {
	Profile string
	Rule    string
	Hook    tables.Hook
	Action  tables.Action
}

// Event is a decoded deny or audit event.
type Event struct {
	tables.Event
	// Profile and Rule name the profile and rule ID, "" when the body was retired
	// before the event was read.
	Profile string
	Rule    string
	// PathText is the resolved path, when the hook has one.
	PathText string
	// Address is the destination of a connect or send, when the hook has one.
	Address netip.AddrPort
}

// DecodeEvent decodes one ring buffer record (tables.DecodeEvent).
func DecodeEvent(raw []byte) (tables.Event, error) {
	ev, err := tables.DecodeEvent(raw)
	if err != nil {
		return ev, fmt.Errorf("bpf: %w", err)
	}
	return ev, nil
}

// Events streams the deny and audit events until ctx ends.
func (e *Enforcer) Events(ctx context.Context) (<-chan Event, error) {
	raw := make(chan []byte, 1024)
	rb, err := e.mod.InitRingBuf("events", raw)
	if err != nil {
		return nil, fmt.Errorf("bpf: open event ring buffer: %w", err)
	}
	rb.Poll(100)
	// Close stops the reader too: libbpfgo's ring buffer must not be stopped twice at
	// once (it would close its channel twice), so Close cancels ctx and waits for this
	// stop before freeing the ring buffer.
	ctx, stop := context.WithCancel(ctx)
	e.mu.Lock()
	e.stopReaders = append(e.stopReaders, stop)
	e.mu.Unlock()
	e.readers.Add(1)
	out := make(chan Event, 1024)
	go func() {
		defer close(out)
		go func() {
			<-ctx.Done()
			rb.Stop()
			e.readers.Done()
		}()
		for b := range raw {
			te, err := DecodeEvent(b)
			if err != nil {
				e.log.Error("bad event", "err", err)
				continue
			}
			out <- e.describe(te)
		}
	}()
	return out, nil
}

func (e *Enforcer) describe(te tables.Event) Event {
	ev := Event{Event: te}
	e.mu.Lock()
	if int(te.Body) < len(e.bodies) {
		bs := e.bodies[te.Body]
		ev.Profile = bs.profile
		if int(te.Rule) < len(bs.rules) {
			ev.Rule = bs.rules[te.Rule]
		}
	}
	e.mu.Unlock()
	ev.PathText = te.PathText()
	ev.Address = te.Address()
	return ev
}

// Counters returns the exact decision counts, summed over CPUs, including those of rule
// bodies already retired.
func (e *Enforcer) Counters() (map[Decision]uint64, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	out := map[Decision]uint64{}
	for d, n := range e.retired {
		out[d] += n
	}
	ks, err := keys(e.maps["counters"])
	if err != nil {
		return nil, err
	}
	for _, k := range ks {
		var ck tables.CounterKey
		if err := decode(k, &ck); err != nil {
			return nil, err
		}
		if ck.Body == 0 {
			continue // no rule body: the uncounted counter (Uncounted)
		}
		n, err := e.percpuSum("counters", k)
		if err != nil {
			return nil, err
		}
		out[e.decision(ck)] += n
	}
	return out, nil
}

func (e *Enforcer) decision(ck tables.CounterKey) Decision {
	d := Decision{Action: ck.Action, Hook: ck.Hook}
	if int(ck.Body) < len(e.bodies) {
		bs := e.bodies[ck.Body]
		d.Profile = bs.profile
		if int(ck.Rule) < len(bs.rules) {
			d.Rule = bs.rules[ck.Rule]
		} else {
			d.Rule = fmt.Sprintf("rule #%d", ck.Rule)
		}
	}
	return d
}

// Uncounted returns the number of decisions that were not counted under their own
// (profile, rule, hook, action) because the counters map was full (Capacity.Counters):
// they were enforced, and reported when their event was delivered, but are missing from
// Counters.
func (e *Enforcer) Uncounted() (uint64, error) {
	n, err := e.percpuSum("counters", encode(tables.UncountedKey))
	if errors.Is(err, syscall.ENOENT) {
		return 0, nil // adopted from an enforcer that did not reserve it (logged at load)
	}
	return n, err
}

// foldCounters moves a retiring body's counts into e.retired.
func (e *Enforcer) foldCounters(b uint32) {
	ks, err := keys(e.maps["counters"])
	if err != nil {
		e.log.Error("cannot read counters of a retiring rule body", "body", b, "err", err)
		return
	}
	for _, k := range ks {
		var ck tables.CounterKey
		if decode(k, &ck) != nil || ck.Body != b {
			continue
		}
		n, err := e.percpuSum("counters", k)
		if err != nil {
			continue
		}
		if e.retired == nil {
			e.retired = map[Decision]uint64{}
		}
		e.retired[e.decision(ck)] += n
	}
}

// percpuSum reads a per-CPU u64 value and sums it.
func (e *Enforcer) percpuSum(name string, key []byte) (uint64, error) {
	v, err := e.maps[name].GetValue(unsafe.Pointer(&key[0]))
	if err != nil {
		return 0, fmt.Errorf("bpf: read map %s: %w", name, err)
	}
	var sum uint64
	for off := 0; off+8 <= len(v); off += 8 {
		sum += binary.LittleEndian.Uint64(v[off:])
	}
	return sum, nil
}

// Drops returns the events lost, by reason (tables.DropRingbuf...).
func (e *Enforcer) Drops() ([tables.NumDrops]uint64, error) {
	var out [tables.NumDrops]uint64
	for i := range uint32(tables.NumDrops) {
		k := encode(i)
		n, err := e.percpuSum("drops", k)
		if err != nil {
			return out, err
		}
		out[i] = n
	}
	return out, nil
}
