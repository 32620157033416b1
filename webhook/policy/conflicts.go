package policy

import (
	"context"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/client-go/dynamic"

	"github.com/podarmor/podarmor/policies/api/v1alpha1"
)

// ConditionConflict is set on ArmorPolicies that select the same pod.
const ConditionConflict = "Conflict"

// FieldManager is the server-side apply field manager of the webhook's status writes.
const FieldManager = "podarmor-webhook"

// ConflictRecorder writes the Conflict condition on every ArmorPolicy of a conflict, off
// the admission path: Report only queues, and one conflict is written once per set of
// policy generations, however many pods hit it.
type ConflictRecorder struct {
	dyn     dynamic.Interface
	log     *slog.Logger
	queue   chan conflict
	mu      sync.Mutex
	written map[string]bool
}

type conflict struct {
	namespace string
	policies  []*v1alpha1.ArmorPolicy // the chosen one first
	pod       string
}

// NewConflictRecorder returns a recorder; Run writes what it queues.
func NewConflictRecorder(dyn dynamic.Interface, log *slog.Logger) *ConflictRecorder {
	return &ConflictRecorder{dyn: dyn, log: log, queue: make(chan conflict, 256), written: map[string]bool{}}
}

// Report queues a conflict; it never blocks admission (a full queue drops the report,
// which the next pod of the same conflict repeats).
func (c *ConflictRecorder) Report(choice Choice, pod string) {
	if choice.Policy.Kind != "ArmorPolicy" || len(choice.Conflicts) == 0 {
		return
	}
	chosen := &v1alpha1.ArmorPolicy{}
	chosen.Name, chosen.Namespace, chosen.Generation = choice.Policy.Name, choice.Policy.Namespace, choice.Generation
	all := append([]*v1alpha1.ArmorPolicy{chosen}, choice.Conflicts...)
	key := conflictKey(all)
	c.mu.Lock()
	seen := c.written[key]
	c.mu.Unlock()
	if seen {
		return
	}
	select {
	case c.queue <- conflict{namespace: choice.Policy.Namespace, policies: all, pod: pod}:
	default:
	}
}

func conflictKey(ps []*v1alpha1.ArmorPolicy) string {
	parts := make([]string, len(ps))
	for i, p := range ps {
		parts[i] = fmt.Sprintf("%s/%s@%d", p.Namespace, p.Name, p.Generation)
	}
	return strings.Join(parts, ",")
}

// Run writes queued conflicts until ctx ends.
func (c *ConflictRecorder) Run(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case cf := <-c.queue:
			key := conflictKey(cf.policies)
			c.mu.Lock()
			done := c.written[key]
			c.mu.Unlock()
			if done {
				continue
			}
			if err := c.write(ctx, cf); err != nil {
				c.log.Warn("record policy conflict", "namespace", cf.namespace, "error", err)
				continue
			}
			c.mu.Lock()
			c.written[key] = true
			c.mu.Unlock()
		}
	}
}

func (c *ConflictRecorder) write(ctx context.Context, cf conflict) error {
	names := make([]string, len(cf.policies))
	for i, p := range cf.policies {
		names[i] = p.Name
	}
	slices.Sort(names)
	msg := fmt.Sprintf("ArmorPolicies %s all select pod %s; the oldest, %s, applies to it",
		strings.Join(names, ", "), cf.pod, cf.policies[0].Name)
	now := metav1.NewTime(time.Now())
	for _, p := range cf.policies {
		reason := "SupersededByOlderPolicy"
		if p == cf.policies[0] {
			reason = "AppliesAsOldest"
		}
		status := map[string]any{"conditions": []any{map[string]any{
			"type": ConditionConflict, "status": string(metav1.ConditionTrue), "reason": reason,
			"message": msg, "lastTransitionTime": now.UTC().Format(time.RFC3339), "observedGeneration": p.Generation,
		}}}
		obj := &unstructured.Unstructured{Object: map[string]any{
			"apiVersion": v1alpha1.SchemeGroupVersion.String(), "kind": "ArmorPolicy",
			"metadata": map[string]any{"name": p.Name, "namespace": p.Namespace},
			"status":   status,
		}}
		_, err := c.dyn.Resource(ArmorPolicies).Namespace(p.Namespace).ApplyStatus(ctx, p.Name, obj,
			metav1.ApplyOptions{FieldManager: FieldManager, Force: true})
		if err != nil {
			return fmt.Errorf("apply Conflict condition to ArmorPolicy %s/%s: %w", p.Namespace, p.Name, err)
		}
	}
	return nil
}
