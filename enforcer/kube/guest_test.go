//go:build vmguest

package kube

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/podarmor/podarmor/enforcer/bpf"
	"github.com/podarmor/podarmor/enforcer/event"
	"github.com/podarmor/podarmor/enforcer/hook"
	"github.com/podarmor/podarmor/policies/api/v1alpha1"
)

// The host test (e2e/enforcer_test.go) starts a real kube-apiserver, forwards it into
// the VM and passes these.
const (
	envKubeconfig = "PODARMOR_TEST_KUBECONFIG"
	envNamespace  = "PODARMOR_TEST_NAMESPACE"
	// envAgentKubeconfig, when set, is the agent's own kubeconfig (envKubeconfig is the
	// test's, an admin's).
	envAgentKubeconfig = "PODARMOR_TEST_AGENT_KUBECONFIG"
	testNode           = "vm-node"
)

// TestKubernetesMode runs the enforcer's Kubernetes mode on a real kernel against a real
// API server: policies appear, change and disappear as AppArmor profiles, seccomp files
// and BPF profiles; a hooked container of a labelled pod is registered with its pod's
// profile and confined; a registration deleted behind the enforcer's back is repaired by
// reconciliation; the metrics say so.
// agentHarness is the Kubernetes mode running in the guest against the host's API
// server, with one ArmorPolicy "web" in the test's namespace.
type agentHarness struct {
	ns       string
	kube     kubernetes.Interface
	policies dynamic.ResourceInterface
	enf      *bpf.Enforcer
	httpAddr string
	socket   string
	done     chan error
}

// policyObject is the ArmorPolicy "web": its file rule (BPF's) denies reading paths, its
// exec rule audits running auditedExec; the built-in rules change the AppArmor profile
// too.
func policyObject(tb testing.TB, ns, enforcers, builtin string, paths ...string) *unstructured.Unstructured {
	return mustUnstructured(tb, fmt.Sprintf(`{"apiVersion":"podarmor.io/v1alpha1","kind":"ArmorPolicy",
		"metadata":{"name":"web","namespace":%q},
		"spec":{"target":{"selector":{}},"enforcers":[%s],"mode":"EnhanceProtect","builtinRules":[%s],
		"customRules":{"files":[{"name":"no-secret","paths":[%s],"permissions":["read"]}],
		"exec":[{"name":"audit-exec","action":"Audit","paths":[%q]}]}}}`,
		ns, enforcers, builtin, `"`+strings.Join(paths, `","`)+`"`, auditedExec))
}

// auditedExec is a copy of busybox (as "true") whose runs the policy audits.
const auditedExec = "/audited/true"

// installAuditedExec puts auditedExec in place.
func installAuditedExec(tb testing.TB) {
	tb.Helper()
	busybox, err := exec.LookPath("busybox")
	if err != nil {
		tb.Fatal(err)
	}
	data, err := os.ReadFile(busybox)
	if err != nil {
		tb.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Dir(auditedExec), 0o755); err != nil {
		tb.Fatal(err)
	}
	if err := os.WriteFile(auditedExec, data, 0o755); err != nil {
		tb.Fatal(err)
	}
}

// mustRun runs file in pid's mount namespace; it must succeed.
func mustRun(tb testing.TB, pid int, file string) {
	tb.Helper()
	if out, err := exec.Command("nsenter", "-t", fmt.Sprint(pid), "-m", file).CombinedOutput(); err != nil {
		tb.Fatalf("run %s in the container: %v: %s", file, err, out)
	}
}

// eventLogPath is TestKubernetesMode's event log.
const eventLogPath = "/var/log/podarmor/events.jsonl"

// countRecords reads the event log, each line a whole event.Record, and counts the
// denials of custom/no-secret and the audits of custom/audit-exec.
func countRecords(t *testing.T, file string) (n [2]int) {
	t.Helper()
	for i, line := range strings.Split(strings.TrimSuffix(readFile(t, file), "\n"), "\n") {
		dec := json.NewDecoder(strings.NewReader(line))
		dec.DisallowUnknownFields()
		var r event.Record
		if err := dec.Decode(&r); err != nil {
			t.Fatalf("%s line %d: %v\n%s", file, i+1, err, line)
		}
		switch {
		case r.Rule == "custom/no-secret" && r.Action == v1alpha1.ActionEnforce:
			n[0]++
		case r.Rule == "custom/audit-exec" && r.Action == v1alpha1.ActionAudit:
			n[1]++
		}
	}
	return n
}

// startAgent creates the policy, starts the agent and waits until it is ready.
func startAgent(tb testing.TB, ctx context.Context, eventLog io.Writer, level slog.Level) *agentHarness {
	tb.Helper()
	kubeconfig, ns := os.Getenv(envKubeconfig), os.Getenv(envNamespace)
	if kubeconfig == "" || ns == "" {
		tb.Fatalf("%s and %s must be set (by e2e/enforcer_test.go)", envKubeconfig, envNamespace)
	}
	rest, err := clientcmd.BuildConfigFromFlags("", kubeconfig)
	if err != nil {
		tb.Fatal(err)
	}
	// The agent itself may run as another user (the chart's service account); the test
	// acts as the admin.
	agentREST := rest
	if file := os.Getenv(envAgentKubeconfig); file != "" {
		if agentREST, err = clientcmd.BuildConfigFromFlags("", file); err != nil {
			tb.Fatal(err)
		}
	}
	h := &agentHarness{
		ns: ns, kube: kubernetes.NewForConfigOrDie(rest),
		policies: dynamic.NewForConfigOrDie(rest).Resource(armorPolicies).Namespace(ns),
		socket:   "/run/podarmor/kube-test.sock", done: make(chan error, 1),
	}
	if err := os.WriteFile("/secret", []byte("s3cr3t\n"), 0o644); err != nil {
		tb.Fatal(err)
	}
	installAuditedExec(tb)
	if _, err := h.policies.Create(ctx, policyObject(tb, ns, `"BPF","AppArmor","Seccomp"`, ``, "/secret"), metav1.CreateOptions{}); err != nil {
		tb.Fatal(err)
	}
	loaded := make(chan *bpf.Enforcer, 1)
	ready := make(chan string, 1)
	go func() {
		h.done <- Run(ctx, Config{
			NodeName: testNode, REST: agentREST, APIServer: []string{"10.96.0.1"},
			Socket: h.socket, ReconcileInterval: time.Second, Listen: "127.0.0.1:0", BPFStats: true,
			Events: event.NewWriter(eventLog), PodEventBurst: 3,
			Loaded: func(e *bpf.Enforcer) { loaded <- e },
			Ready:  func(addr string) { ready <- addr },
			Logger: slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level})),
		})
	}()
	select {
	case h.httpAddr = <-ready:
	case err := <-h.done:
		tb.Fatalf("enforcer stopped: %v", err)
	case <-time.After(2 * time.Minute):
		tb.Fatal("enforcer not ready after 2 minutes")
	}
	select {
	case h.enf = <-loaded:
	default:
		tb.Fatal("the enforcer is ready without its BPF enforcer (see its log)")
	}
	return h
}

// createPod creates a pod on the test's node, with the profile label when profile is set.
func (h *agentHarness) createPod(tb testing.TB, ctx context.Context, name, profile string) *corev1.Pod {
	tb.Helper()
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		Spec:       corev1.PodSpec{NodeName: testNode, Containers: []corev1.Container{{Name: "app", Image: "busybox"}}},
	}
	if profile != "" {
		pod.Labels = map[string]string{v1alpha1.LabelProfile: profile}
	}
	pod, err := h.kube.CoreV1().Pods(h.ns).Create(ctx, pod, metav1.CreateOptions{})
	if err != nil {
		tb.Fatal(err)
	}
	return pod
}

// TestKubernetesMode runs the enforcer's Kubernetes mode on a real kernel against a real
// API server: policies appear, change and disappear as AppArmor profiles, seccomp files
// and BPF profiles; a hooked container of a labelled pod is registered with its pod's
// profile and confined; a registration deleted behind the enforcer's back is repaired by
// reconciliation; the metrics say so.
func TestKubernetesMode(t *testing.T) {
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	// The event log as the chart configures a file: in a directory the enforcer
	// creates, rotated by lumberjack (not here: a few kilobytes).
	eventLog, err := event.OpenLog(event.LogConfig{Path: eventLogPath, MaxSizeMB: 1, MaxBackups: 2, Compress: true}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer eventLog.Close()
	h := startAgent(t, ctx, eventLog, slog.LevelInfo)
	ns, kube, policies, enf, httpAddr, socket, done := h.ns, h.kube, h.policies, h.enf, h.httpAddr, h.socket, h.done
	policy := func(enforcers, builtin string, paths ...string) *unstructured.Unstructured {
		return policyObject(t, ns, enforcers, builtin, paths...)
	}
	id := "ap." + ns + ".web"
	aaName := "podarmor-" + id
	seccompFile := "/var/lib/kubelet/seccomp/podarmor/" + id + ".json"

	// Every enforcer's profile is in place when the enforcer says it is ready.
	if mode := appArmorMode(t, aaName); mode != "enforce" {
		t.Fatalf("AppArmor profile %s: mode %q", aaName, mode)
	}
	if _, err := os.Stat(seccompFile); err != nil {
		t.Fatalf("seccomp profile: %v", err)
	}
	if _, ok := enf.Slot(id); !ok {
		t.Fatalf("BPF profile %s not loaded", id)
	}

	// A pod on this node with the profile label, and a "container" of it: a process in
	// its own mount namespace, in the pod's cgroup, registered through the hook socket
	// with the annotations containerd gives a pod's container.
	pod := h.createPod(t, ctx, "web", id)
	cid := strings.Repeat("ab", 32)
	ctr := startContainer(t, pod, cid)
	resp, err := (&hook.Client{Socket: socket, Timeout: 10 * time.Second}).Do(ctx, hook.Request{
		Op: hook.OpRegister, ContainerID: cid, PID: ctr.Process.Pid, Status: "creating",
		Annotations: podAnnotations(pod, "app"),
	})
	if err != nil {
		t.Fatalf("hook: %v", err)
	}
	if resp.Profile != id || resp.MountNamespace == 0 {
		t.Fatalf("hook response %+v", resp)
	}
	mustDeny(t, ctr.Process.Pid, "/secret")

	// The denial is a JSON line naming the pod, container and policy, and an Event on
	// the pod. More denials of the same rule exhaust the pod's Event budget (3 here):
	// they are counted, not sent.
	waitFor(t, 30*time.Second, "the denial's JSON line", func() bool {
		return strings.Contains(readFile(t, eventLogPath), `"path":"/secret"`)
	})
	var rec event.Record
	var raw string
	for _, line := range strings.Split(readFile(t, eventLogPath), "\n") {
		if strings.Contains(line, `"path":"/secret"`) {
			if err := json.Unmarshal([]byte(line), &rec); err != nil {
				t.Fatal(err)
			}
			raw = line
			break
		}
	}
	if rec.Node != testNode || rec.Namespace != ns || rec.Pod != "web" || rec.ContainerName != "app" || rec.Container != cid ||
		rec.Policy != "ArmorPolicy "+ns+"/web" || rec.Rule != "custom/no-secret" || rec.Action != v1alpha1.ActionEnforce || rec.Comm != "cat" {
		t.Errorf("event record %s", raw)
	}
	waitFor(t, 90*time.Second, "the Event on the pod", func() bool {
		evs, err := kube.EventsV1().Events(ns).List(ctx, metav1.ListOptions{FieldSelector: "regarding.name=web,reason=PodarmorDenied"})
		return err == nil && len(evs.Items) > 0 && strings.Contains(evs.Items[0].Note, "custom/no-secret")
	})
	for range 10 {
		mustDeny(t, ctr.Process.Pid, "/secret")
	}
	// 11 denials of one rule in one pod, a budget of 3.
	waitFor(t, 30*time.Second, "suppressed Events", func() bool {
		return metricValue(scrape(t, httpAddr), "podarmor_enforcer_pod_events_suppressed_total") >= 8
	})
	const audited = 7
	for range audited {
		mustRun(t, ctr.Process.Pid, auditedExec)
	}
	checkMetrics(t, scrape(t, httpAddr), id, 11, audited)
	// Every decision is one whole line of the log.
	waitFor(t, 30*time.Second, "a line for each decision", func() bool {
		return countRecords(t, eventLogPath) == [2]int{11, audited}
	})

	// AppArmor's decisions come from the kernel's audit log: a write to /proc/sys by a
	// process of the container (its mount namespace and cgroup) under the policy's
	// AppArmor profile (the built-in rule runtime-default-proc-write; AppArmor cannot
	// take read alone away, so custom/no-secret is BPF's only) is one JSON line naming
	// the pod, and is counted for the pod with the BPF denials.
	const procFile = "/proc/sys/kernel/domainname"
	aaPID, aaComm := denyUnderAppArmor(t, ctr.Process.Pid, pod, cid, aaName, procFile)
	isAppArmor := func(line string) bool { return strings.Contains(line, `"enforcer":"AppArmor"`) }
	for deadline := time.Now().Add(30 * time.Second); len(grepLines(readFile(t, eventLogPath), isAppArmor)) == 0; time.Sleep(50 * time.Millisecond) {
		if time.Now().After(deadline) {
			netlink, _ := os.ReadFile("/proc/net/netlink")
			t.Logf("/proc/net/netlink:\n%s", netlink)
			dmesg, _ := exec.Command("dmesg").CombinedOutput()
			t.Fatalf("no line for the AppArmor denial after 30 s; the kernel log's AppArmor lines:\n%s", grepLines(string(dmesg), func(l string) bool { return strings.Contains(l, "apparmor") }))
		}
	}
	time.Sleep(time.Second) // a second line, if any, would be there by now
	aaLines := grepLines(readFile(t, eventLogPath), isAppArmor)
	if len(aaLines) != 1 {
		t.Fatalf("AppArmor lines: %q, want one", aaLines)
	}
	var aaRec event.Record
	if err := json.Unmarshal([]byte(aaLines[0]), &aaRec); err != nil {
		t.Fatal(err)
	}
	aaRec.Time = time.Time{}
	wantAA := event.Record{
		Enforcer: v1alpha1.EnforcerAppArmor, Action: v1alpha1.ActionEnforce, Profile: id, Rule: "builtin/runtime-default-proc-write",
		Hook: "open", Operation: "write", Path: procFile, Container: cid,
		Node: testNode, Namespace: ns, Pod: "web", ContainerName: "app", Policy: "ArmorPolicy " + ns + "/web",
		MountNamespace: mountNamespace(t, ctr.Process.Pid), PID: uint32(aaPID), Comm: aaComm,
	}
	if aaRec != wantAA {
		t.Errorf("AppArmor record %s\nwant %+v", aaLines[0], wantAA)
	}
	podDenials := fmt.Sprintf(`podarmor_enforcer_pod_denials_total{namespace=%q,pod="web",policy="ArmorPolicy %s/web"}`, ns, ns)
	m := scrape(t, httpAddr)
	if got := metricValue(m, podDenials); got != 11+1 {
		t.Errorf("%s = %v, want 12 (11 BPF denials, 1 AppArmor)", podDenials, got)
	}
	if got := metricValue(m, `podarmor_enforcer_kernel_feature{feature="apparmor_audit"}`); got != 1 {
		t.Errorf("apparmor_audit feature = %v, want 1", got)
	}
	// The BPF denials are still 11: AppArmor's is not among them.
	if got := metricValue(m, fmt.Sprintf(`podarmor_enforcer_decisions_total{action="enforce",hook="file_open",profile=%q,rule="custom/no-secret"}`, id)); got != 11 {
		t.Errorf("BPF decisions = %v, want 11", got)
	}

	// A container of a pod without the label is left alone.
	plainPod := h.createPod(t, ctx, "plain", "")
	plain := startContainer(t, plainPod, strings.Repeat("cd", 32))
	resp, err = (&hook.Client{Socket: socket, Timeout: 10 * time.Second}).Do(ctx, hook.Request{
		Op: hook.OpRegister, ContainerID: strings.Repeat("cd", 32), PID: plain.Process.Pid, Status: "creating",
		Annotations: podAnnotations(plainPod, "app"),
	})
	if err != nil || resp.MountNamespace != 0 {
		t.Fatalf("plain pod: %+v, %v", resp, err)
	}
	mustAllow(t, plain.Process.Pid, "/secret")

	// Reconciliation repairs a registration deleted behind the enforcer's back, once
	// the kubelet (here: the test) reports the container in the pod's status.
	pod.Status.ContainerStatuses = []corev1.ContainerStatus{{Name: "app", ContainerID: "containerd://" + cid}}
	if _, err := kube.CoreV1().Pods(ns).UpdateStatus(ctx, pod, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	ctrNS := mountNamespace(t, ctr.Process.Pid)
	if err := enf.Unregister(ctrNS); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 90*time.Second, "the registration to be repaired", func() bool {
		regs, err := enf.Registered()
		_, ok := regs[ctrNS]
		return err == nil && ok
	})
	mustDeny(t, ctr.Process.Pid, "/secret")
	if m := scrape(t, httpAddr); !strings.Contains(m, `podarmor_enforcer_registrations_total{result="ok",source="reconcile"} 1`) ||
		!strings.Contains(m, `podarmor_enforcer_registration_delay_seconds_count{source="reconcile"} 1`) ||
		strings.Contains(m, `podarmor_enforcer_registration_delay_seconds_count{source="hook"}`) ||
		!strings.Contains(m, "podarmor_enforcer_containers_unregistered 0") ||
		!strings.Contains(m, `podarmor_enforcer_profiles{enforcer="AppArmor",state="Loaded"} 1`) {
		t.Errorf("metrics:\n%s", grep(m, "podarmor_enforcer_"))
	}

	// A policy change reaches the running container and every enforcer's profile.
	cur, err := policies.Get(ctx, "web", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	// disallow-file-handles is a seccomp rule: the seccomp file changes too.
	upd := policy(`"BPF","AppArmor","Seccomp"`, `{"name":"disallow-write-core-pattern"},{"name":"disallow-file-handles"}`, "/other")
	upd.SetResourceVersion(cur.GetResourceVersion())
	oldAA := readFile(t, "/var/lib/podarmor/apparmor/"+aaName)
	oldSeccomp := readFile(t, seccompFile)
	start := time.Now()
	if _, err := policies.Update(ctx, upd, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 90*time.Second, "the changed rule to apply", func() bool { return canRead(ctr.Process.Pid, "/secret") })
	t.Logf("policy change to enforcement: %v", time.Since(start).Round(time.Millisecond))
	// BPF's tables change first; apparmor_parser then takes its time.
	waitFor(t, 90*time.Second, "the AppArmor profile to change with the policy", func() bool {
		return readFile(t, "/var/lib/podarmor/apparmor/"+aaName) != oldAA && appArmorMode(t, aaName) == "enforce"
	})
	waitFor(t, 90*time.Second, "the seccomp file to change with the policy", func() bool { return readFile(t, seccompFile) != oldSeccomp })
	if newSeccomp := readFile(t, seccompFile); !json.Valid([]byte(newSeccomp)) ||
		strings.Contains(oldSeccomp, "name_to_handle_at") || !strings.Contains(newSeccomp, "name_to_handle_at") {
		t.Errorf("the seccomp file did not gain disallow-file-handles' name_to_handle_at:\nbefore: %s\nafter: %s", oldSeccomp, newSeccomp)
	}

	// Dropping an enforcer removes its profile; deleting the policy removes all.
	cur, _ = policies.Get(ctx, "web", metav1.GetOptions{})
	upd = policy(`"BPF","AppArmor"`, `{"name":"disallow-write-core-pattern"}`, "/other")
	upd.SetResourceVersion(cur.GetResourceVersion())
	if _, err := policies.Update(ctx, upd, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 90*time.Second, "the seccomp file to go", func() bool { _, err := os.Stat(seccompFile); return errors.Is(err, os.ErrNotExist) })
	if err := policies.Delete(ctx, "web", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 90*time.Second, "the AppArmor profile to go", func() bool { return appArmorMode(t, aaName) == "" })
	waitFor(t, 90*time.Second, "the BPF profile to go", func() bool { _, ok := enf.Slot(id); return !ok })

	// A container of a profile the node does not have is refused.
	_, err = (&hook.Client{Socket: socket, Timeout: 10 * time.Second}).Do(ctx, hook.Request{
		Op: hook.OpRegister, ContainerID: strings.Repeat("ef", 32), PID: ctr.Process.Pid, Status: "creating",
		Annotations: podAnnotations(pod, "app"),
	})
	if err == nil || !strings.Contains(err.Error(), "is not loaded on this node") {
		t.Errorf("container of a deleted policy's pod: %v", err)
	}

	// The pod's denial counter leaves the node with the pod.
	zero := int64(0)
	if err := kube.CoreV1().Pods(ns).Delete(ctx, "web", metav1.DeleteOptions{GracePeriodSeconds: &zero}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 30*time.Second, "the deleted pod's denial counter to go", func() bool {
		return !strings.Contains(scrape(t, httpAddr), `podarmor_enforcer_pod_denials_total{namespace="`+ns+`",pod="web"`)
	})

	cancel()
	if err := <-done; err != nil && !errors.Is(err, context.Canceled) {
		t.Errorf("enforcer: %v", err)
	}
}

// checkMetrics checks the enforcer's /metrics after the one hooked container of profile
// id was denied its read denied times and ran auditedExec audited times: the decision
// counters are exact; registrations, map occupancy, kernel features and profile loads
// say what happened; the BPF programs' statistics (BPFStats) show runs.
func checkMetrics(t *testing.T, m, id string, denied, audited int) {
	t.Helper()
	exact := map[string]float64{
		fmt.Sprintf(`podarmor_enforcer_decisions_total{action="enforce",hook="file_open",profile=%q,rule="custom/no-secret"}`, id):          float64(denied),
		fmt.Sprintf(`podarmor_enforcer_decisions_total{action="audit",hook="bprm_check_security",profile=%q,rule="custom/audit-exec"}`, id): float64(audited),
		`podarmor_enforcer_decisions_uncounted_total`:                               0,
		`podarmor_enforcer_registrations_total{result="ok",source="hook"}`:          1,
		`podarmor_enforcer_containers_registered`:                                   1,
		`podarmor_enforcer_containers_unregistered`:                                 0,
		`podarmor_enforcer_bpf_map_entries{map="containers"}`:                       1,
		`podarmor_enforcer_bpf_map_entries{map="profile_active"}`:                   1,
		`podarmor_enforcer_bpf_map_max_entries{map="containers"}`:                   4096,
		`podarmor_enforcer_kernel_feature{feature="bpf_lsm"}`:                       1,
		`podarmor_enforcer_kernel_feature{feature="apparmor"}`:                      1,
		`podarmor_enforcer_kernel_feature{feature="seccomp"}`:                       1,
		`podarmor_enforcer_kernel_feature{feature="lsm_hook/file_open"}`:            1,
		`podarmor_enforcer_profile_load_errors_total{backend="bpf"}`:                0,
		`podarmor_enforcer_profile_load_errors_total{backend="apparmor"}`:           0,
		`podarmor_enforcer_profile_load_errors_total{backend="seccomp"}`:            0,
		`podarmor_enforcer_profile_load_duration_seconds_count{backend="bpf"}`:      1,
		`podarmor_enforcer_profile_load_duration_seconds_count{backend="apparmor"}`: 1,
		`podarmor_enforcer_profile_load_duration_seconds_count{backend="seccomp"}`:  1,
		`podarmor_enforcer_profile_compile_errors_total{backend="bpf"}`:             0,
	}
	for series, want := range exact {
		if got := metricValue(m, series); got != want {
			t.Errorf("%s = %v, want %v", series, got, want)
		}
	}
	// each rule decided through its one hook: no other decision series of the profile
	var series []string
	for _, line := range strings.Split(m, "\n") {
		if strings.HasPrefix(line, "podarmor_enforcer_decisions_total{") && strings.Contains(line, fmt.Sprintf("profile=%q", id)) {
			series = append(series, line)
		}
	}
	if len(series) != 2 {
		t.Errorf("decision series of profile %s: %q, want the two above", id, series)
	}
	for _, series := range []string{
		`podarmor_enforcer_bpf_program_runs_total{hook="file_open",`,
		`podarmor_enforcer_bpf_program_run_seconds_total{hook="file_open",`,
		`podarmor_enforcer_bpf_program_runs_total{hook="bprm_check_security",`,
		`podarmor_enforcer_profile_compile_duration_seconds_count{backend="bpf"}`,
	} {
		if v := firstValue(m, series); v <= 0 {
			t.Errorf("%s...: %v, want more than 0", series, v)
		}
	}
	if t.Failed() {
		t.Logf("metrics:\n%s", grep(m, "podarmor_enforcer_"))
	}
}

// firstValue is the value of the first series that starts with prefix, -1 when none does.
func firstValue(scrape, prefix string) float64 {
	for _, line := range strings.Split(scrape, "\n") {
		if strings.HasPrefix(line, prefix) {
			var f float64
			if _, err := fmt.Sscan(line[strings.LastIndexByte(line, ' ')+1:], &f); err == nil {
				return f
			}
		}
	}
	return -1
}

// startContainer starts a process in a new mount namespace, in the cgroup the kubelet
// would give container cid of pod.
func startContainer(t testing.TB, pod *corev1.Pod, cid string) *exec.Cmd {
	t.Helper()
	cg := filepath.Join("/sys/fs/cgroup/kubepods", "pod"+string(pod.UID), cid)
	if err := os.MkdirAll(cg, 0o755); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("unshare", "-m", "sleep", "3600")
	cmd.SysProcAttr = &syscall.SysProcAttr{UseCgroupFD: true, CgroupFD: openDir(t, cg)}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	// unshare execs sleep in the new namespace: wait until it did.
	host := mountNamespace(t, os.Getpid())
	waitFor(t, 10*time.Second, "the container's namespace", func() bool {
		ns, err := hook.MountNamespace(fmt.Sprintf("/proc/%d/ns/mnt", cmd.Process.Pid))
		return err == nil && ns != host
	})
	return cmd
}

func openDir(t testing.TB, dir string) int {
	t.Helper()
	fd, err := syscall.Open(dir, syscall.O_RDONLY|syscall.O_DIRECTORY, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { syscall.Close(fd) })
	return fd
}

// canRead reports whether a process entering pid's mount namespace can read file.
func canRead(pid int, file string) bool {
	return exec.Command("nsenter", "-t", fmt.Sprint(pid), "-m", "cat", file).Run() == nil
}

func mustDeny(t testing.TB, pid int, file string) {
	t.Helper()
	out, err := exec.Command("nsenter", "-t", fmt.Sprint(pid), "-m", "cat", file).CombinedOutput()
	if err == nil || !strings.Contains(string(out), "Operation not permitted") {
		t.Fatalf("cat %s in the container: %v: %s", file, err, out)
	}
}

func mustAllow(t testing.TB, pid int, file string) {
	t.Helper()
	if out, err := exec.Command("nsenter", "-t", fmt.Sprint(pid), "-m", "cat", file).CombinedOutput(); err != nil {
		t.Fatalf("cat %s in the container: %v: %s", file, err, out)
	}
}

func mountNamespace(t testing.TB, pid int) uint32 {
	t.Helper()
	ns, err := hook.MountNamespace(fmt.Sprintf("/proc/%d/ns/mnt", pid))
	if err != nil {
		t.Fatal(err)
	}
	return ns
}

// appArmorMode is the mode securityfs lists profile name in, "" when it is not loaded.
func appArmorMode(t testing.TB, name string) string {
	t.Helper()
	data := readFile(t, "/sys/kernel/security/apparmor/profiles")
	for _, line := range strings.Split(data, "\n") {
		if rest, ok := strings.CutPrefix(line, name+" ("); ok {
			return strings.TrimSuffix(rest, ")")
		}
	}
	return ""
}

func readFile(t testing.TB, file string) string {
	t.Helper()
	data, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	return string(data)
}

func waitFor(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", timeout, what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func scrape(t testing.TB, addr string) string {
	t.Helper()
	resp, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return string(data)
}

// metricValue is the value of a series (a metric's name, with its labels in the order
// of the text format, sorted) in a scrape, -1 when it is missing.
func metricValue(scrape, name string) float64 {
	for _, line := range strings.Split(scrape, "\n") {
		if v, ok := strings.CutPrefix(line, name+" "); ok {
			var f float64
			if _, err := fmt.Sscan(v, &f); err == nil {
				return f
			}
		}
	}
	return -1
}

func grep(s, substr string) string {
	var b bytes.Buffer
	for _, line := range strings.Split(s, "\n") {
		if strings.Contains(line, substr) && !strings.HasPrefix(line, "#") {
			b.WriteString(line + "\n")
		}
	}
	return b.String()
}

func mustUnstructured(t testing.TB, js string) *unstructured.Unstructured {
	t.Helper()
	u := &unstructured.Unstructured{}
	if err := u.UnmarshalJSON([]byte(js)); err != nil {
		t.Fatal(err)
	}
	return u
}

// denyUnderAppArmor runs, in the mount namespace of pid and the cgroup of container cid
// of pod, the test binary confined by AppArmor profile profile, opening file for
// writing, which the profile denies (EACCES: AppArmor's, where BPF's is EPERM); it
// outlives the open by a few seconds, so that the enforcer finds its cgroup. It returns
// the process's pid and comm.
func denyUnderAppArmor(t testing.TB, pid int, pod *corev1.Pod, cid, profile, file string) (int, string) {
	t.Helper()
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	attr := "/proc/self/attr/apparmor/exec"
	if _, err := os.Stat(attr); err != nil {
		attr = "/proc/self/attr/exec"
	}
	script := fmt.Sprintf(`echo -n "exec %s" > %s && exec %s`, profile, attr, self)
	cmd := exec.Command("nsenter", "-t", fmt.Sprint(pid), "-m", "sh", "-c", script)
	cmd.Env = append(os.Environ(), envOpenWrite+"="+file)
	cg := filepath.Join("/sys/fs/cgroup/kubepods", "pod"+string(pod.UID), cid)
	cmd.SysProcAttr = &syscall.SysProcAttr{UseCgroupFD: true, CgroupFD: openDir(t, cg)}
	out, err := cmd.CombinedOutput()
	t.Logf("under AppArmor: %s", out)
	if err != nil || !strings.Contains(string(out), "open "+file+": permission denied") {
		t.Fatalf("write %s under AppArmor profile %s: %v: %s", file, profile, err, out)
	}
	comm := filepath.Base(self)
	if len(comm) > 15 { // TASK_COMM_LEN - 1
		comm = comm[:15]
	}
	return cmd.Process.Pid, comm
}

// grepLines are the lines of s that keep keeps.
func grepLines(s string, keep func(string) bool) []string {
	var out []string
	for _, line := range strings.Split(s, "\n") {
		if line != "" && keep(line) {
			out = append(out, line)
		}
	}
	return out
}
