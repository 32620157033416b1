package kube

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes/fake"
	"k8s.io/client-go/tools/cache"

	"github.com/podarmor/podarmor/enforcer/event"
	"github.com/podarmor/podarmor/enforcer/hook"
	"github.com/podarmor/podarmor/enforcer/profiles"
	"github.com/podarmor/podarmor/policies/api/v1alpha1"
)

const (
	uid = "0b7a1c2d-3e4f-5a6b-7c8d-9e0f1a2b3c4d"
	cid = "4f1b2c3d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f60718293a4b5c6d7e8f9"
)

func TestParseCgroup(t *testing.T) {
	us := strings.ReplaceAll(uid, "-", "_")
	tests := map[string]struct {
		data string
		ok   bool
	}{
		"containerd, systemd driver":  {"0::/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod" + us + ".slice/cri-containerd-" + cid + ".scope\n", true},
		"containerd, cgroupfs driver": {"0::/kubepods/burstable/pod" + uid + "/" + cid + "\n", true},
		"CRI-O, guaranteed":           {"0::/kubepods.slice/kubepods-pod" + us + ".slice/crio-" + cid + ".scope\n", true},
		"cgroup v1":                   {"12:pids:/kubepods/pod" + uid + "/" + cid + "\n11:cpu:/kubepods/pod" + uid + "/" + cid + "\n", true},
		"a host service":              {"0::/system.slice/containerd.service\n", false},
		"a container outside a pod":   {"0::/default/" + cid + "\n", false},
		"garbage":                     {"\x00:::\n", false},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			id, pod, ok := parseCgroup([]byte(tc.data))
			if ok != tc.ok || (ok && (id != cid || pod != uid)) {
				t.Errorf("got %q %q %v", id, pod, ok)
			}
		})
	}
}

func TestScanProc(t *testing.T) {
	proc := t.TempDir()
	write := func(name, data string) {
		t.Helper()
		if err := os.MkdirAll(filepath.Dir(filepath.Join(proc, name)), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(proc, name), []byte(data), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write("stat", "cpu 1 2 3\nbtime 1700000000\n")
	cg := "0::/kubepods/pod" + uid + "/" + cid + "\n"
	// pid 30 started first (tick 500): the container's init; 31 later; 40 is a host process.
	stat := func(pid, ticks int) string {
		return fmt.Sprintf("%d (sh (odd) name) S 1 %d %d 0 -1 4194560 100 0 0 0 0 0 0 0 20 0 1 0 %d 2297856 200 18446744073709551615\n", pid, pid, pid, ticks)
	}
	write("30/cgroup", cg)
	write("30/stat", stat(30, 500))
	write("31/cgroup", cg)
	write("31/stat", stat(31, 900))
	write("40/cgroup", "0::/system.slice/kubelet.service\n")
	write("40/stat", stat(40, 100))
	got, err := scanProc(proc)
	if err != nil {
		t.Fatal(err)
	}
	want := procContainer{ID: cid, PodUID: uid, PID: 30, Started: time.Unix(1700000005, 0)}
	if len(got) != 1 || got[0] != want {
		t.Errorf("got %+v, want %+v", got, want)
	}
}

func TestResolve(t *testing.T) {
	labelled := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "web", UID: uid, Labels: map[string]string{v1alpha1.LabelProfile: "ap.shop.web"}}}
	plain := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "plain", UID: "u2"}}
	late := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "late", UID: "u3", Labels: map[string]string{v1alpha1.LabelProfile: "ap.shop.late"}}}
	store := cache.NewIndexer(cache.MetaNamespaceKeyFunc, cache.Indexers{})
	for _, p := range []*corev1.Pod{labelled, plain} {
		if err := store.Add(p); err != nil {
			t.Fatal(err)
		}
	}
	// The API server knows "late", which the informer has not seen yet.
	r := &podResolver{pods: store, kube: fake.NewClientset(late), wait: 50 * time.Millisecond}
	ann := func(ns, name, uid, typ string) map[string]string {
		return map[string]string{
			"io.kubernetes.cri.container-type": typ, "io.kubernetes.cri.sandbox-namespace": ns,
			"io.kubernetes.cri.sandbox-name": name, "io.kubernetes.cri.sandbox-uid": uid,
			"io.kubernetes.cri.container-name": "app",
		}
	}
	tests := map[string]struct {
		annotations map[string]string
		want        string
		wantErr     string
	}{
		"a container of a labelled pod":          {annotations: ann("shop", "web", uid, "container"), want: "ap.shop.web"},
		"its pause container":                    {annotations: ann("shop", "web", uid, "sandbox")},
		"a container of a pod without the label": {annotations: ann("shop", "plain", "u2", "container")},
		"a pod only the API server knows yet":    {annotations: ann("shop", "late", "u3", "container"), want: "ap.shop.late"},
		"a pod that does not exist":              {annotations: ann("shop", "ghost", "u9", "container"), wantErr: "pod shop/ghost does not exist"},
		"a recreated pod with the same name":     {annotations: ann("shop", "late", "u-old", "container"), wantErr: "not the container's pod u-old"},
		"CRI-O's annotations":                    {annotations: map[string]string{"io.kubernetes.pod.namespace": "shop", "io.kubernetes.pod.name": "web", "io.kubernetes.pod.uid": uid, "io.kubernetes.cri-o.ContainerType": "container"}, want: "ap.shop.web"},
		"not a Kubernetes container, annotated":  {annotations: map[string]string{hook.AnnotationProfile: "ap.x.y"}, want: "ap.x.y"},
		"a pod's container cannot choose its profile": {annotations: func() map[string]string {
			a := ann("shop", "plain", "u2", "container")
			a[hook.AnnotationProfile] = "ap.x.y"
			return a
		}()},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			got, err := r.Resolve(context.Background(), hook.Request{ContainerID: "c", Annotations: tc.annotations})
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("error %v, want %q", err, tc.wantErr)
				}
				return
			}
			if err != nil || got != tc.want {
				t.Errorf("got %q, %v; want %q", got, err, tc.want)
			}
		})
	}
}

func TestContainerIDs(t *testing.T) {
	pod := &corev1.Pod{Status: corev1.PodStatus{
		InitContainerStatuses:      []corev1.ContainerStatus{{Name: "init", ContainerID: "containerd://aa"}},
		ContainerStatuses:          []corev1.ContainerStatus{{Name: "app", ContainerID: "cri-o://bb"}, {Name: "waiting"}},
		EphemeralContainerStatuses: []corev1.ContainerStatus{{Name: "debugger", ContainerID: "containerd://cc"}},
	}}
	if got := fmt.Sprint(containerIDs(pod)); got != "map[aa:init bb:app cc:debugger]" {
		t.Errorf("got %s", got)
	}
}

func TestNodeReport(t *testing.T) {
	started := time.Unix(1700000000, 0)
	results := []PolicyResult{
		{Kind: "ArmorPolicy", Namespace: "shop", Name: "web", UID: "u1", Generation: 3, ProfileID: "ap.shop.web",
			SpecEnforcers: []v1alpha1.Enforcer{v1alpha1.EnforcerBPF, v1alpha1.EnforcerAppArmor},
			Enforcers: []profiles.EnforcerResult{
				{Enforcer: v1alpha1.EnforcerBPF, State: profiles.Loaded, NotEnforced: []profiles.NotEnforced{{RuleID: "builtin/disallow-create-userns", Reason: "LSM hook userns_create: not in this kernel"}}},
				{Enforcer: v1alpha1.EnforcerAppArmor, State: profiles.Unsupported, Reason: "apparmor: not an active LSM"},
			}},
		{Kind: "ClusterArmorPolicy", Name: "default", Generation: 1, CompileError: "spec.builtinRules[0]: unknown rule",
			SpecEnforcers: []v1alpha1.Enforcer{v1alpha1.EnforcerSeccomp}},
	}
	r := nodeReport(started, v1alpha1.NodeFeatures{BPFLSM: true}, results)
	if len(r.Policies) != 2 || !r.Enforcer.StartTime.Time.Equal(started) || !r.Features.BPFLSM {
		t.Fatalf("report %+v", r)
	}
	web, def := r.Policies[0], r.Policies[1]
	if web.Kind != v1alpha1.KindArmorPolicy || web.Generation != 3 || web.ProfileID != "ap.shop.web" ||
		fmt.Sprint(web.Enforcers) != "[{BPF Loaded } {AppArmor Unsupported apparmor: not an active LSM}]" ||
		len(web.UnenforcedRules) != 1 || web.UnenforcedRules[0].Rule != "builtin/disallow-create-userns" || web.UnenforcedRules[0].Enforcer != v1alpha1.EnforcerBPF {
		t.Errorf("web: %+v", web)
	}
	if len(def.Enforcers) != 1 || def.Enforcers[0].State != v1alpha1.LoadFailed || !strings.Contains(def.Enforcers[0].Reason, "unknown rule") {
		t.Errorf("a policy that does not compile: %+v", def)
	}
}

func TestPodEvents(t *testing.T) {
	var notes []string
	e := newPodEvents(func(pod *corev1.ObjectReference, reason, note string) {
		notes = append(notes, pod.Namespace+"/"+pod.Name+" "+reason+": "+note)
	}, 2, time.Hour)
	web := podRef{Namespace: "shop", Name: "web", UID: "u1", Container: "app"}
	deny := event.Record{Action: v1alpha1.ActionEnforce, Rule: "custom/no-secret", Policy: "ArmorPolicy shop/web", Operation: "read", Path: "/secret", PID: 7, Comm: "cat"}
	for range 10 {
		e.record(web, deny)
	}
	other := deny
	other.Rule = "builtin/disallow-mount"
	e.record(web, other)
	audit := deny
	audit.Action = v1alpha1.ActionAudit
	e.record(web, audit)
	if len(notes) != 3 || e.Suppressed() != 8 {
		t.Fatalf("events %q, suppressed %d; want 2 for the first rule, 1 for the second, none for audits, 8 suppressed", notes, e.Suppressed())
	}
	if want := "shop/web PodarmorDenied: read /secret denied by rule custom/no-secret of ArmorPolicy shop/web in container app (pid 7, cat)"; notes[0] != want {
		t.Errorf("note %q, want %q", notes[0], want)
	}
	e.forget(map[types.UID]bool{})
	e.record(web, deny)
	if len(notes) != 4 {
		t.Errorf("a forgotten pod's budget is not renewed: %d events", len(notes))
	}
}

func TestSpecChanges(t *testing.T) {
	var calls []string
	h := specChanges(cache.ResourceEventHandlerFuncs{
		AddFunc:    func(any) { calls = append(calls, "add") },
		UpdateFunc: func(any, any) { calls = append(calls, "update") },
		DeleteFunc: func(any) { calls = append(calls, "delete") },
	})
	p := func(uid string, gen int64, rv string) *v1alpha1.ArmorPolicy {
		return &v1alpha1.ArmorPolicy{ObjectMeta: metav1.ObjectMeta{UID: types.UID(uid), Generation: gen, ResourceVersion: rv}}
	}
	h.OnAdd(p("a", 1, "1"), false)
	h.OnUpdate(p("a", 1, "1"), p("a", 1, "2")) // a status write
	h.OnUpdate(p("a", 1, "2"), p("a", 2, "3")) // a spec change
	h.OnUpdate(p("a", 2, "3"), p("b", 2, "4")) // deleted and re-created meanwhile
	h.OnDelete(p("b", 2, "4"))
	if got := fmt.Sprint(calls); got != "[add update update delete]" {
		t.Errorf("calls %s", got)
	}
}

type fakeNRI struct {
	connected bool
	seen      map[string]bool
}

func (f fakeNRI) Connected() bool     { return f.connected }
func (f fakeNRI) Seen(id string) bool { return f.seen[id] }

func TestIgnoredPlugin(t *testing.T) {
	seen := map[string]bool{"synced": true, "created": true}
	tests := map[string]struct {
		plugin fakeNRI
		late   []string
		want   string
	}{
		"nothing registered late":                            {plugin: fakeNRI{true, seen}},
		"containers of the synchronization, registered late": {plugin: fakeNRI{true, seen}, late: []string{"synced", "created"}},
		"a container the runtime never told the plugin of":   {plugin: fakeNRI{true, seen}, late: []string{"synced", "unseen"}, want: "unseen"},
		"the plugin is not connected: nothing to conclude":   {plugin: fakeNRI{false, seen}, late: []string{"unseen"}},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			id, ok := ignoredPlugin(tc.plugin, tc.late)
			if id != tc.want || ok != (tc.want != "") {
				t.Errorf("ignoredPlugin = %q, %t; want %q", id, ok, tc.want)
			}
		})
	}
}

// TestStartedContainers: the names containerd's starts give are kept while their
// processes run, dropped once a scan after their start no longer finds them, and not
// dropped by a scan that began before they were reported.
func TestStartedContainers(t *testing.T) {
	var s startedContainers
	if _, ok := s.name("a"); ok {
		t.Fatal("a name before any start")
	}
	before := time.Now()
	s.add("a", "web")
	s.add("b", "db")
	if name, ok := s.name("a"); !ok || name != "web" {
		t.Errorf("a: %q %t, want web", name, ok)
	}
	s.forget(map[string]bool{}, before) // a scan that began before both starts
	if _, ok := s.name("b"); !ok {
		t.Error("b forgotten by a scan that began before it started")
	}
	s.forget(map[string]bool{"a": true}, time.Now())
	if _, ok := s.name("a"); !ok {
		t.Error("a forgotten while its process runs")
	}
	if _, ok := s.name("b"); ok {
		t.Error("b kept after a scan no longer found it")
	}
}
