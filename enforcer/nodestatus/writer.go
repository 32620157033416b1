// Package nodestatus writes the enforcer's report about its node: the ArmorNodeStatus
// object named after the node (podarmor.io/v1alpha1), which the webhook's leader
// aggregates into each policy's status (webhook/policystatus, docs/status.md).
//
// The enforcer calls Set with the whole report whenever anything in it changes; Set
// only records it. Run writes: at most one create or update per Interval however
// often Set is called, none when the report did not change since the last write, and
// after an error (the API server unreachable, a conflict) it retries with exponential
// backoff, always with the latest report, until it is written.
package nodestatus

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/dynamic"

	"github.com/podarmor/podarmor/policies/api/v1alpha1"
)

// Defaults of Options.
const (
	DefaultInterval   = 2 * time.Second
	DefaultMinBackoff = time.Second
	DefaultMaxBackoff = time.Minute
	DefaultResync     = 10 * time.Minute
)

// Resources the writer uses.
var (
	ArmorNodeStatuses = v1alpha1.SchemeGroupVersion.WithResource("armornodestatuses")
	Nodes             = schema.GroupVersionResource{Version: "v1", Resource: "nodes"}
)

// Options tune a Writer; the zero value takes every default.
type Options struct {
	// Interval is the shortest time between two writes. Default DefaultInterval.
	Interval time.Duration
	// MinBackoff and MaxBackoff bound the wait before retrying a failed write; it
	// doubles from MinBackoff up to MaxBackoff. Defaults DefaultMinBackoff and
	// DefaultMaxBackoff.
	MinBackoff time.Duration
	MaxBackoff time.Duration
	// Resync is how often the writer reads its object back and writes it again if it
	// differs from the report or is gone (someone deleted or edited it). Default
	// DefaultResync; negative turns it off.
	Resync time.Duration
	// Logger receives the writer's logs. Default slog.Default().
	Logger *slog.Logger
}

func (o *Options) defaults() error {
	if o.Interval == 0 {
		o.Interval = DefaultInterval
	}
	if o.MinBackoff == 0 {
		o.MinBackoff = DefaultMinBackoff
	}
	if o.MaxBackoff == 0 {
		o.MaxBackoff = DefaultMaxBackoff
	}
	if o.Resync == 0 {
		o.Resync = DefaultResync
	}
	if o.Interval < 0 || o.MinBackoff < 0 || o.MaxBackoff < o.MinBackoff {
		return fmt.Errorf("node status: Interval %s and MinBackoff %s must not be negative, MaxBackoff %s not below MinBackoff",
			o.Interval, o.MinBackoff, o.MaxBackoff)
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	return nil
}

// Writer keeps one node's ArmorNodeStatus equal to the last report Set.
type Writer struct {
	client dynamic.Interface
	node   string
	opts   Options
	log    *slog.Logger

	mu      sync.Mutex
	desired *v1alpha1.NodeReport // nil until the first Set
	dirty   bool                 // desired differs from what was last written
	stats   Stats
	wake    chan struct{}

	// Owned by Run.
	current *v1alpha1.ArmorNodeStatus // the object as last read or written
	owner   *metav1.OwnerReference
}

// Stats counts what a Writer did.
type Stats struct {
	// Sets counts calls of Set that changed the report.
	Sets int64
	// Writes counts successful creates and updates.
	Writes int64
	// Failures counts failed attempts.
	Failures int64
}

// New returns a Writer for the node nodeName; Run does the writing. The client needs
// create, get and update on armornodestatuses (the node's own) and get on nodes.
func New(client dynamic.Interface, nodeName string, opts Options) (*Writer, error) {
	if client == nil {
		return nil, errors.New("node status: no client")
	}
	if nodeName == "" {
		return nil, errors.New("node status: no node name")
	}
	if err := opts.defaults(); err != nil {
		return nil, err
	}
	return &Writer{
		client: client, node: nodeName, opts: opts,
		log:  opts.Logger.With("component", "node-status", "node", nodeName),
		wake: make(chan struct{}, 1),
	}, nil
}

// Set records r as the report to write. It is cheap and never blocks on the API
// server: call it whenever anything changes. The writer keeps its own copy,
// normalised (see Normalize).
func (w *Writer) Set(r v1alpha1.NodeReport) {
	n := Normalize(r)
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.desired != nil && equality.Semantic.DeepEqual(w.desired, &n) {
		return
	}
	w.desired = &n
	w.dirty = true
	w.stats.Sets++
	select {
	case w.wake <- struct{}{}:
	default:
	}
}

// Pending reports whether a report was Set that is not written yet.
func (w *Writer) Pending() bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.dirty
}

// Stats returns the counts so far.
func (w *Writer) Stats() Stats {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.stats
}

// Run writes until ctx ends, then returns nil. Nothing is written before the first Set.
func (w *Writer) Run(ctx context.Context) error {
	var (
		next    time.Time // no write before then: the interval, or a backoff
		backoff time.Duration
		timer   = time.NewTimer(time.Hour)
		resync  <-chan time.Time
	)
	timer.Stop()
	defer timer.Stop()
	if w.opts.Resync > 0 {
		t := time.NewTicker(w.opts.Resync)
		defer t.Stop()
		resync = t.C
	}

	for {
		select {
		case <-ctx.Done():
			return nil
		case <-w.wake:
		case <-timer.C:
		case <-resync:
			if err := w.verify(ctx); err != nil && ctx.Err() == nil {
				w.log.Warn("node status not read back", "error", err)
			}
		}
		if !w.Pending() {
			continue
		}
		// Coalesce: a write waits until the interval since the previous one (or the
		// backoff after a failure) has passed, and then takes the latest report.
		if wait := time.Until(next); wait > 0 {
			resetTimer(timer, wait)
			continue
		}
		w.mu.Lock()
		report := w.desired.DeepCopy()
		w.mu.Unlock()
		err := w.write(ctx, report)
		w.mu.Lock()
		if err == nil {
			w.stats.Writes++
			// Set may have brought a newer report while this one was written.
			w.dirty = !equality.Semantic.DeepEqual(w.desired, report)
		} else {
			w.stats.Failures++
		}
		pending := w.dirty
		w.mu.Unlock()
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			backoff = min(max(2*backoff, w.opts.MinBackoff), w.opts.MaxBackoff)
			wait := jitter(backoff)
			w.log.Warn("node status not written; retrying", "error", err, "retry_in", wait)
			next = time.Now().Add(wait)
			resetTimer(timer, wait)
			continue
		}
		if backoff > 0 {
			w.log.Info("node status written after failures")
		}
		backoff = 0
		next = time.Now().Add(w.opts.Interval)
		if pending {
			resetTimer(timer, w.opts.Interval)
		}
	}
}

// resetTimer makes t fire after d, dropping a pending fire.
func resetTimer(t *time.Timer, d time.Duration) {
	t.Stop()
	select {
	case <-t.C:
	default:
	}
	t.Reset(d)
}

// jitter spreads retries of many nodes over [d/2, d].
func jitter(d time.Duration) time.Duration {
	return d/2 + rand.N(d/2+1)
}

// write makes the object hold report: an update of the object last seen, or a create
// when there is none; on a conflict or a missing object it reads the object and tries
// once more.
func (w *Writer) write(ctx context.Context, report *v1alpha1.NodeReport) error {
	if w.owner == nil {
		w.owner = w.nodeOwner(ctx)
	}
	for attempt := 0; ; attempt++ {
		err := w.writeOnce(ctx, report)
		if err == nil || attempt == 1 || !(apierrors.IsConflict(err) || apierrors.IsNotFound(err) || apierrors.IsAlreadyExists(err)) {
			return err
		}
		if err := w.refresh(ctx); err != nil {
			return err
		}
	}
}

func (w *Writer) writeOnce(ctx context.Context, report *v1alpha1.NodeReport) error {
	res := w.client.Resource(ArmorNodeStatuses)
	if w.current == nil {
		obj := &v1alpha1.ArmorNodeStatus{ObjectMeta: metav1.ObjectMeta{Name: w.node}, Status: *report}
		if w.owner != nil {
			obj.OwnerReferences = []metav1.OwnerReference{*w.owner}
		}
		u, err := toUnstructured(obj)
		if err != nil {
			return err
		}
		created, err := res.Create(ctx, u, metav1.CreateOptions{FieldManager: "podarmor-enforcer"})
		if err != nil {
			return fmt.Errorf("create ArmorNodeStatus %s: %w", w.node, err)
		}
		return w.remember(created)
	}
	obj := w.current.DeepCopy()
	obj.Status = *report
	if w.owner != nil && !slices.ContainsFunc(obj.OwnerReferences, func(r metav1.OwnerReference) bool { return r.UID == w.owner.UID }) {
		obj.OwnerReferences = append(obj.OwnerReferences, *w.owner)
	}
	u, err := toUnstructured(obj)
	if err != nil {
		return err
	}
	updated, err := res.Update(ctx, u, metav1.UpdateOptions{FieldManager: "podarmor-enforcer"})
	if err != nil {
		return fmt.Errorf("update ArmorNodeStatus %s: %w", w.node, err)
	}
	return w.remember(updated)
}

// refresh reads the object; current becomes nil when it does not exist.
func (w *Writer) refresh(ctx context.Context) error {
	u, err := w.client.Resource(ArmorNodeStatuses).Get(ctx, w.node, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		w.current = nil
		return nil
	}
	if err != nil {
		return fmt.Errorf("get ArmorNodeStatus %s: %w", w.node, err)
	}
	return w.remember(u)
}

// verify reads the object back and marks the report for writing when the object is
// gone or says something else.
func (w *Writer) verify(ctx context.Context) error {
	w.mu.Lock()
	desired := w.desired
	w.mu.Unlock()
	if desired == nil {
		return nil
	}
	if err := w.refresh(ctx); err != nil {
		return err
	}
	if w.current != nil && equality.Semantic.DeepEqual(&w.current.Status, desired) {
		return nil
	}
	w.log.Info("node status object missing or changed by someone else; writing it again")
	w.mu.Lock()
	w.dirty = true
	w.mu.Unlock()
	return nil
}

func (w *Writer) remember(u *unstructured.Unstructured) error {
	var obj v1alpha1.ArmorNodeStatus
	if err := runtime.DefaultUnstructuredConverter.FromUnstructured(u.Object, &obj); err != nil {
		return fmt.Errorf("decode ArmorNodeStatus %s: %w", w.node, err)
	}
	w.current = &obj
	return nil
}

// nodeOwner returns the owner reference to the Node, or nil when the Node cannot be
// read (the report is written without it, and the next write tries again).
func (w *Writer) nodeOwner(ctx context.Context) *metav1.OwnerReference {
	n, err := w.client.Resource(Nodes).Get(ctx, w.node, metav1.GetOptions{})
	if err != nil {
		w.log.Warn("Node not read; the node status is written without its owner reference for now", "error", err)
		return nil
	}
	return &metav1.OwnerReference{APIVersion: "v1", Kind: "Node", Name: n.GetName(), UID: n.GetUID()}
}

func toUnstructured(obj *v1alpha1.ArmorNodeStatus) (*unstructured.Unstructured, error) {
	obj.APIVersion, obj.Kind = v1alpha1.SchemeGroupVersion.String(), "ArmorNodeStatus"
	m, err := runtime.DefaultUnstructuredConverter.ToUnstructured(obj)
	if err != nil {
		return nil, fmt.Errorf("encode ArmorNodeStatus %s: %w", obj.Name, err)
	}
	return &unstructured.Unstructured{Object: m}, nil
}

// Normalize returns r as the writer stores it: policies sorted by kind, namespace and
// name and enforcer results in canonical enforcer order; lists cut to the API's bounds
// (v1alpha1.MaxUnenforcedRules and the others) with what was cut counted in
// UnenforcedRulesOmitted; reasons cut to v1alpha1.MaxReasonLength; StartTime to whole
// seconds (what the API stores); and Summary computed from Policies.
func Normalize(r v1alpha1.NodeReport) v1alpha1.NodeReport {
	r = *r.DeepCopy()
	r.Enforcer.StartTime = metav1.NewTime(r.Enforcer.StartTime.Truncate(time.Second))
	if r.Enforcer.StartTime.IsZero() {
		r.Enforcer.StartTime = metav1.Time{}
	}
	f := &r.Features
	if len(f.UnattachedHooks) > v1alpha1.MaxUnattachedHooks {
		f.UnattachedHooks = f.UnattachedHooks[:v1alpha1.MaxUnattachedHooks]
	}
	for i := range f.UnattachedHooks {
		f.UnattachedHooks[i].Reason = clip(f.UnattachedHooks[i].Reason)
	}
	if len(f.AppArmorFeatures) > v1alpha1.MaxAppArmorFeatures {
		f.AppArmorFeatures = f.AppArmorFeatures[:v1alpha1.MaxAppArmorFeatures]
	}

	slices.SortFunc(r.Policies, func(a, b v1alpha1.NodePolicyStatus) int {
		return strings.Compare(string(a.Kind)+"\x00"+a.Namespace+"\x00"+a.Name, string(b.Kind)+"\x00"+b.Namespace+"\x00"+b.Name)
	})
	r.Summary = v1alpha1.NodeSummary{Policies: int32(len(r.Policies))}
	for i := range r.Policies {
		p := &r.Policies[i]
		slices.SortFunc(p.Enforcers, func(a, b v1alpha1.EnforcerResult) int {
			return slices.Index(v1alpha1.Enforcers, a.Enforcer) - slices.Index(v1alpha1.Enforcers, b.Enforcer)
		})
		failed := false
		for j := range p.Enforcers {
			p.Enforcers[j].Reason = clip(p.Enforcers[j].Reason)
			failed = failed || p.Enforcers[j].State == v1alpha1.LoadFailed
		}
		if failed {
			r.Summary.Failed++
		} else {
			r.Summary.Loaded++
		}
		if n := len(p.UnenforcedRules); n > v1alpha1.MaxUnenforcedRules {
			p.UnenforcedRulesOmitted += int32(n - v1alpha1.MaxUnenforcedRules)
			p.UnenforcedRules = p.UnenforcedRules[:v1alpha1.MaxUnenforcedRules]
		}
	}
	return r
}

// clip cuts s to v1alpha1.MaxReasonLength bytes on a character boundary.
func clip(s string) string {
	if len(s) <= v1alpha1.MaxReasonLength {
		return s
	}
	cut := v1alpha1.MaxReasonLength
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return s[:cut]
}
