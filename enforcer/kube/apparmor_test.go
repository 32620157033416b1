package kube

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"

	dto "github.com/prometheus/client_model/go"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/tools/cache"

	"github.com/podarmor/podarmor/enforcer/event"
	"github.com/podarmor/podarmor/policies/api/v1alpha1"
	"github.com/podarmor/podarmor/policies/ruleset"
)

// TestRecordAppArmor: an AppArmor audit record of a podarmor profile gets its rule from
// the policy, its container and pod from the process's cgroup and the node's pod cache,
// becomes an Event on the pod and counts for the pod; a process that is gone leaves the
// record without a pod (and uncounted); other profiles' records are not podarmor's.
func TestRecordAppArmor(t *testing.T) {
	const (
		cid = "4b1f0c6e2d9a8b7c5e3f1a0d9c8b7a6e5f4d3c2b1a0f9e8d7c6b5a4f3e2d1c0b"
		uid = "0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0"
	)
	proc := t.TempDir()
	if err := os.MkdirAll(filepath.Join(proc, "812"), 0o755); err != nil {
		t.Fatal(err)
	}
	cgroup := "0::/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod" +
		"0f1e2d3c_4b5a_6978_8796_a5b4c3d2e1f0.slice/cri-containerd-" + cid + ".scope\n"
	if err := os.WriteFile(filepath.Join(proc, "812", "cgroup"), []byte(cgroup), 0o644); err != nil {
		t.Fatal(err)
	}
	pods := cache.NewSharedIndexInformer(&cache.ListWatch{}, &corev1.Pod{}, 0, cache.Indexers{indexUID: podUID})
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "web-1", UID: uid},
		Status:     corev1.PodStatus{ContainerStatuses: []corev1.ContainerStatus{{Name: "app", ContainerID: "containerd://" + cid}}},
	}
	if err := pods.GetIndexer().Add(pod); err != nil {
		t.Fatal(err)
	}
	var notes []string
	a := &agent{
		cfg:      Config{NodeName: "node-a", Proc: proc, PodEventBurst: 5},
		pods:     pods,
		resolver: &podResolver{},
		results:  []PolicyResult{{Kind: "ArmorPolicy", Namespace: "shop", Name: "web", ProfileID: "ap.shop.web"}},
		rulesets: map[string]*ruleset.RuleSet{"ap.shop.web": {Rules: []ruleset.Rule{{
			ID: "builtin/runtime-default-proc-write", Action: v1alpha1.ActionEnforce,
			File: &ruleset.File{Paths: []string{"/proc/sys/**"}, Permissions: []v1alpha1.FilePermission{v1alpha1.FileWrite}},
		}}}},
	}
	a.podEvents = newPodEvents(func(_ *corev1.ObjectReference, _, note string) { notes = append(notes, note) }, 5, DefaultEventInterval)
	a.metrics = newMetrics(a)

	const denied = `audit(1700000000.123:45): apparmor="DENIED" operation="open" class="file" profile="podarmor-ap.shop.web" name="/proc/sys/kernel/domainname" pid=%s comm="sh" requested_mask="wc" denied_mask="w" fsuid=0 ouid=0`
	r, ok := a.recordAppArmor(fmt.Sprintf(denied, "812"))
	if !ok {
		t.Fatal("a denial of a podarmor profile was not taken")
	}
	r.Time = r.Time.Truncate(0)
	want := event.Record{
		Time: r.Time, Enforcer: v1alpha1.EnforcerAppArmor, Action: v1alpha1.ActionEnforce, Profile: "ap.shop.web",
		Rule: "builtin/runtime-default-proc-write", Hook: "open", Operation: "write", Path: "/proc/sys/kernel/domainname",
		Container: cid, Node: "node-a", Namespace: "shop", Pod: "web-1", ContainerName: "app", Policy: "ArmorPolicy shop/web",
		PID: 812, Comm: "sh",
	}
	if r != want {
		t.Errorf("record\n%+v\nwant\n%+v", r, want)
	}
	if len(notes) != 1 {
		t.Errorf("pod Events %q, want one", notes)
	}

	// The process is gone: no pod, still the profile's policy and rule.
	r, ok = a.recordAppArmor(fmt.Sprintf(denied, "813"))
	if !ok || r.Pod != "" || r.Container != "" || r.Policy != "ArmorPolicy shop/web" || r.Rule != "builtin/runtime-default-proc-write" {
		t.Errorf("record of a gone process %+v (%v), want no pod, the policy and rule", r, ok)
	}
	var m dto.Metric
	if err := a.metrics.podDenials.WithLabelValues("shop", "web-1", "ArmorPolicy shop/web").Write(&m); err != nil {
		t.Fatal(err)
	}
	if got := m.GetCounter().GetValue(); got != 1 {
		t.Errorf("pod denials of shop/web-1 = %v, want 1", got)
	}

	for name, text := range map[string]string{
		"another profile's denial": `audit(1700000000.123:46): apparmor="DENIED" operation="open" class="file" profile="cri-containerd.apparmor.d" name="/etc/shadow" pid=812 comm="cat" requested_mask="r" denied_mask="r"`,
		"a record of another kind": `audit(1700000000.123:47): arch=c000003e syscall=257 success=no exit=-13`,
	} {
		if _, ok := a.recordAppArmor(text); ok {
			t.Errorf("%s was taken as a podarmor decision", name)
		}
	}
}
