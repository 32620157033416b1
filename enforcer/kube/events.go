package kube

import (
	"fmt"
	"sync"
	"time"

	"golang.org/x/time/rate"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/podarmor/podarmor/enforcer/event"
	"github.com/podarmor/podarmor/policies/api/v1alpha1"
)

// Defaults of the Kubernetes Events on pods for denials.
const (
	// DefaultEventBurst denials of one rule in one pod become Events at once...
	DefaultEventBurst = 5
	// ...and then one per DefaultEventInterval: an attack loop cannot flood the API
	// server. Every denial is still counted in the metrics and written to the log.
	DefaultEventInterval = time.Minute
)

// podEvents turns denials into Kubernetes Events on their pods, rate-limited per pod and
// rule.
type podEvents struct {
	emit     func(pod *corev1.ObjectReference, reason, note string)
	burst    int
	interval time.Duration

	mu       sync.Mutex
	limiters map[eventKey]*rate.Limiter
	// suppressed counts the denials rate limiting kept from becoming Events.
	suppressed uint64
}

// Suppressed counts the denials rate limiting kept from becoming Events.
func (e *podEvents) Suppressed() uint64 {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.suppressed
}

type eventKey struct {
	pod  types.UID
	rule string
}

func newPodEvents(emit func(pod *corev1.ObjectReference, reason, note string), burst int, interval time.Duration) *podEvents {
	return &podEvents{emit: emit, burst: burst, interval: interval, limiters: map[eventKey]*rate.Limiter{}}
}

// record emits an Event for a denial of a container of ref's pod, if the pod and rule
// have budget left.
func (e *podEvents) record(ref podRef, r event.Record) {
	if r.Action != v1alpha1.ActionEnforce || ref.UID == "" {
		return
	}
	e.mu.Lock()
	k := eventKey{ref.UID, r.Rule}
	l := e.limiters[k]
	if l == nil {
		l = rate.NewLimiter(rate.Every(e.interval), e.burst)
		e.limiters[k] = l
	}
	ok := l.Allow()
	if !ok {
		e.suppressed++
	}
	e.mu.Unlock()
	if !ok {
		return
	}
	what := r.Operation
	if r.Path != "" {
		what += " " + r.Path
	}
	if r.Address != "" {
		what += " " + r.Address
	}
	note := fmt.Sprintf("%s denied by rule %s of %s in container %s (pid %d, %s)", what, r.Rule, r.Policy, ref.Container, r.PID, r.Comm)
	if len(note) > 1024 {
		note = note[:1024]
	}
	e.emit(&corev1.ObjectReference{Kind: "Pod", APIVersion: "v1", Namespace: ref.Namespace, Name: ref.Name, UID: ref.UID}, "PodarmorDenied", note)
}

// forget drops the limiters of pods that are gone.
func (e *podEvents) forget(alive map[types.UID]bool) {
	e.mu.Lock()
	defer e.mu.Unlock()
	for k := range e.limiters {
		if !alive[k.pod] {
			delete(e.limiters, k)
		}
	}
}
