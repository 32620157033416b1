package cluster

import (
	"fmt"
	"strconv"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"

	"github.com/podarmor/podarmor/policies/api/v1alpha1"
)

// demoPod returns the name of the demo's one running pod.
func (c *cluster) demoPod(t *testing.T) string {
	t.Helper()
	var pods corev1.PodList
	c.getJSON(t, &pods, "-n", demoNamespace, "pods", "-l", "app=demo-app")
	var running []string
	for _, p := range pods.Items {
		if p.DeletionTimestamp == nil && p.Status.Phase == corev1.PodRunning {
			running = append(running, p.Name)
		}
	}
	if len(running) != 1 || len(pods.Items) != 1 {
		t.Fatalf("want one running demo-app pod, found %d pods, running: %v", len(pods.Items), running)
	}
	return running[0]
}

// pod returns a pod of the demo namespace.
func (c *cluster) pod(t *testing.T, name string) *corev1.Pod {
	t.Helper()
	var p corev1.Pod
	c.getJSON(t, &p, "-n", demoNamespace, "pod", name)
	return &p
}

// enforcerPods returns the enforcer's pods that are not being deleted.
func (c *cluster) enforcerPods(t *testing.T) []corev1.Pod {
	t.Helper()
	var pods corev1.PodList
	c.getJSON(t, &pods, "-n", releaseNS, "pods", "-l", "app.kubernetes.io/component=enforcer")
	var live []corev1.Pod
	for _, p := range pods.Items {
		if p.DeletionTimestamp == nil {
			live = append(live, p)
		}
	}
	return live
}

// enforcerPod returns the one enforcer pod (the cluster has one node), which must be ready.
func (c *cluster) enforcerPod(t *testing.T) corev1.Pod {
	t.Helper()
	pods := c.enforcerPods(t)
	if len(pods) != 1 || !podReady(&pods[0]) {
		t.Fatalf("want one ready enforcer pod, found %s", describePods(pods))
	}
	return pods[0]
}

func podReady(p *corev1.Pod) bool {
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

func describePods(pods []corev1.Pod) string {
	var s []string
	for _, p := range pods {
		s = append(s, fmt.Sprintf("%s (uid %s, %s, ready %t)", p.Name, p.UID, p.Status.Phase, podReady(&p)))
	}
	return fmt.Sprintf("%d: %s", len(pods), strings.Join(s, "; "))
}

// metrics returns the enforcer pod's /metrics, through the API server's proxy.
func (c *cluster) metrics(t *testing.T, enforcer string) string {
	t.Helper()
	return c.kubectl(t, "get", "--raw", metricsPath(enforcer))
}

// tryMetrics is metrics for a caller that waits: an enforcer that cannot be reached
// is an error, not the end of the test.
func (c *cluster) tryMetrics(t *testing.T, enforcer string) (string, error) {
	t.Helper()
	r := c.run(t, time.Minute, c.kubectlBin, "get", "--raw", metricsPath(enforcer))
	if r.code != 0 {
		return "", fmt.Errorf("the enforcer's metrics: %s", r)
	}
	return r.out, nil
}

func metricsPath(enforcer string) string {
	return "/api/v1/namespaces/" + releaseNS + "/pods/" + enforcer + ":9810/proxy/metrics"
}

// counter sums the samples of a metric whose labels include every one of labels
// (`name="value"` each).
func counter(metrics, name string, labels ...string) float64 {
	var sum float64
	for _, line := range strings.Split(metrics, "\n") {
		if !strings.HasPrefix(line, name+"{") && !strings.HasPrefix(line, name+" ") {
			continue
		}
		match := true
		for _, l := range labels {
			if !strings.Contains(line, l) {
				match = false
			}
		}
		fields := strings.Fields(line)
		if !match || len(fields) < 2 {
			continue
		}
		v, err := strconv.ParseFloat(fields[len(fields)-1], 64)
		if err == nil {
			sum += v
		}
	}
	return sum
}

// decisions is how many operations of profile a BPF rule refused, by the enforcer's count.
func decisions(metrics, profile, rule string) float64 {
	return counter(metrics, "podarmor_enforcer_decisions_total",
		`profile="`+profile+`"`, `rule="`+rule+`"`, `action="enforce"`)
}

// waitPolicyReady waits until the node reports the policy's current generation loaded.
func (c *cluster) waitPolicyReady(t *testing.T, name string) {
	t.Helper()
	waitFor(t, 4*time.Minute, "policy "+name+" Ready at its generation", func() (bool, string) {
		var p v1alpha1.ArmorPolicy
		c.getJSON(t, &p, "-n", demoNamespace, "armorpolicy", name)
		ready := false
		for _, cond := range p.Status.Conditions {
			if cond.Type == "Ready" && cond.Status == "True" {
				ready = true
			}
		}
		return ready && p.Status.ObservedGeneration == p.Generation,
			fmt.Sprintf("generation %d, status %+v", p.Generation, p.Status)
	})
}

// permissionError reports whether a command's output says the kernel refused it.
func permissionError(out string) bool {
	return strings.Contains(out, "Permission denied") || strings.Contains(out, "Operation not permitted")
}

// expectDenied runs an attack in a container; it must fail with a permission error.
func (c *cluster) expectDenied(t *testing.T, pod, container, what string, argv ...string) {
	t.Helper()
	r := c.exec(t, pod, container, argv...)
	t.Logf("%s (%s/%s: %s): %s", what, pod, container, strings.Join(argv, " "), r)
	if r.code == 0 || !permissionError(r.out) {
		t.Errorf("%s: want a permission error, got %s", what, r)
	}
}

// expectAllowed runs a command in a container; it must succeed.
func (c *cluster) expectAllowed(t *testing.T, pod, container, what string, argv ...string) {
	t.Helper()
	r := c.exec(t, pod, container, argv...)
	t.Logf("%s (%s/%s: %s): %s", what, pod, container, strings.Join(argv, " "), r)
	if r.code != 0 {
		t.Errorf("%s: want success, got %s", what, r)
	}
}

// The probe: a policy and pods of the tests' own in the demo namespace. The pods are not
// privileged (the runtime drops seccomp for a privileged container), so all three
// enforcers confine them, and their command's first actions are one attack for each:
//   - the service-account token read: AppArmor (asked first) refuses it, EACCES;
//   - a connection to the metadata address: only BPF can express it, EPERM;
//   - chroot(2): only seccomp can express a system call rule, EPERM (the runtime's
//     default profile allows chroot, so only this rule refuses it).
const (
	probePolicy  = "e2e-probe"
	probeProfile = "ap.demo.e2e-probe"
)

const probePolicyYAML = `apiVersion: podarmor.io/v1alpha1
kind: ArmorPolicy
metadata:
  name: e2e-probe
  namespace: demo
spec:
  target:
    selector:
      matchLabels:
        podarmor-e2e: probe
  enforcers: [BPF, AppArmor, Seccomp]
  mode: EnhanceProtect
  action: Enforce
  builtinRules:
  - name: disallow-read-serviceaccount-token
  - name: disallow-cloud-metadata-all
  customRules:
    syscalls:
    - name: deny-chroot
      names: [chroot]
`

// probeScript is the probe container's command: the attacks first, then it waits. Its
// errors go to standard output, so that each error and the exit code after it stay in
// order in the container's log (the runtime logs the two streams apart).
const probeScript = `exec 2>&1
cat /var/run/secrets/kubernetes.io/serviceaccount/token >/dev/null; echo "token=$?"
wget -q -T 5 -O /dev/null http://169.254.169.254/latest/meta-data/; echo "metadata=$?"
chroot / true; echo "chroot=$?"
echo probe-done
exec sleep 3600`

func probePodYAML(name string) string {
	return fmt.Sprintf(`apiVersion: v1
kind: Pod
metadata:
  name: %s
  namespace: demo
  labels:
    podarmor-e2e: probe
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: probe
    image: %s
    imagePullPolicy: IfNotPresent
    command: [sh, -c, %q]
`, name, demoImage, probeScript)
}

// runProbe creates a probe pod and checks that each of its first actions was refused
// with the errno of the enforcer that refuses it, and that its process carries the
// probe's AppArmor and seccomp profiles. It deletes the pod at the end.
func (c *cluster) runProbe(t *testing.T, name string) {
	t.Helper()
	c.apply(t, probePodYAML(name))
	t.Cleanup(func() {
		c.run(t, time.Minute, c.kubectlBin, "-n", demoNamespace, "delete", "pod", name, "--wait=false")
	})
	var logs string
	waitFor(t, 4*time.Minute, "probe pod "+name+" through its attacks", func() (bool, string) {
		r := c.run(t, time.Minute, c.kubectlBin, "-n", demoNamespace, "logs", name, "-c", "probe")
		logs = r.out
		if r.code != 0 {
			return false, r.String()
		}
		return strings.Contains(logs, "probe-done"), logs
	})
	t.Logf("probe %s's output:\n%s", name, logs)
	for _, want := range []string{
		"cat: can't open '/var/run/secrets/kubernetes.io/serviceaccount/token': Permission denied\ntoken=1",
		"Operation not permitted\nmetadata=1",
		"chroot: can't change root directory to '/': Operation not permitted\nchroot=1",
	} {
		if !strings.Contains(logs, want) {
			t.Errorf("probe %s: its output lacks %q", name, want)
		}
	}
	p := c.pod(t, name)
	if got := p.Labels["podarmor.io/profile"]; got != probeProfile {
		t.Errorf("probe %s: label podarmor.io/profile is %q, want %q", name, got, probeProfile)
	}
	sc := p.Spec.Containers[0].SecurityContext
	if sc == nil || sc.SeccompProfile == nil || sc.SeccompProfile.Type != corev1.SeccompProfileTypeLocalhost ||
		sc.SeccompProfile.LocalhostProfile == nil || *sc.SeccompProfile.LocalhostProfile != "podarmor/"+probeProfile+".json" {
		t.Errorf("probe %s: seccompProfile %+v, want Localhost podarmor/%s.json", name, sc, probeProfile)
	}
	r := c.exec(t, name, "probe", "sh", "-c", "cat /proc/1/attr/current; grep '^Seccomp:' /proc/1/status")
	t.Logf("probe %s's process: %s", name, r)
	if want := "podarmor-" + probeProfile + " (enforce)\nSeccomp:\t2\n"; r.code != 0 || r.out != want {
		t.Errorf("probe %s: pid 1's AppArmor label and seccomp mode: got %q, want %q", name, r.out, want)
	}
}

// attackLoop is a loop inside the demo pod that keeps trying three denied operations
// (a user namespace and a mount, which BPF refuses, and the token read, which AppArmor
// refuses) and counts its rounds and successes in a file, so that what happened while
// the test was doing something else can be read afterwards.
type attackLoop struct {
	c   *cluster
	pod string
}

const loopScript = `a=0; s=0
while [ ! -e /tmp/e2e-loop.stop ]; do
  a=$((a+1))
  unshare -U true 2>/dev/null && s=$((s+1))
  mount -t tmpfs e2e /tmp/e2e-mnt 2>/dev/null && { s=$((s+1)); umount /tmp/e2e-mnt; }
  cat /var/run/secrets/kubernetes.io/serviceaccount/token >/dev/null 2>&1 && s=$((s+1))
  echo "$a $s" > /tmp/e2e-loop.count
  sleep 0.2
done
echo "$a $s stopped" > /tmp/e2e-loop.count
`

// startLoop starts the loop in the background of pod's app container and waits for its
// first round.
func (c *cluster) startLoop(t *testing.T, pod string) *attackLoop {
	t.Helper()
	r := c.exec(t, pod, "app", "sh", "-c",
		`rm -f /tmp/e2e-loop.*; mkdir -p /tmp/e2e-mnt; printf %s "$1" > /tmp/e2e-loop.sh; sh /tmp/e2e-loop.sh </dev/null >/dev/null 2>&1 &`,
		"sh", loopScript)
	if r.code != 0 {
		t.Fatalf("starting the attack loop: %s", r)
	}
	l := &attackLoop{c: c, pod: pod}
	t.Cleanup(func() {
		c.run(t, time.Minute, c.kubectlBin, "-n", demoNamespace, "exec", pod, "-c", "app", "--", "touch", "/tmp/e2e-loop.stop")
	})
	waitFor(t, time.Minute, "the attack loop's first round", func() (bool, string) {
		n := l.count(t)
		return n.attempts > 0, fmt.Sprint(n)
	})
	return l
}

type loopCount struct {
	attempts, successes int
	stopped             bool
}

func (n loopCount) String() string {
	return fmt.Sprintf("%d rounds (3 attacks each), %d successes", n.attempts, n.successes)
}

// count reads the loop's counts (a round is three attempts). It waits out a kubelet
// that cannot exec for a while (restarting with containerd, say), and fails the test
// after three minutes without a reading.
func (l *attackLoop) count(t *testing.T) loopCount {
	t.Helper()
	deadline := time.Now().Add(3 * time.Minute)
	for {
		r := l.c.exec(t, l.pod, "app", "cat", "/tmp/e2e-loop.count")
		var n loopCount
		var word string
		if k, _ := fmt.Sscan(r.out, &n.attempts, &n.successes, &word); r.code == 0 && k >= 2 {
			n.stopped = word == "stopped"
			return n
		}
		if time.Now().After(deadline) {
			t.Fatalf("no count of the attack loop for 3 minutes; last: %s", r)
		}
		// Read while the loop rewrote it (empty for a moment), not written yet, or
		// the kubelet is not answering.
		time.Sleep(500 * time.Millisecond)
	}
}

// stop ends the loop and returns its final counts.
func (l *attackLoop) stop(t *testing.T) loopCount {
	t.Helper()
	if r := l.c.exec(t, l.pod, "app", "touch", "/tmp/e2e-loop.stop"); r.code != 0 {
		t.Fatalf("stopping the attack loop: %s", r)
	}
	var n loopCount
	waitFor(t, time.Minute, "the attack loop to stop", func() (bool, string) {
		n = l.count(t)
		return n.stopped, fmt.Sprint(n)
	})
	return n
}

// replaceEnforcer runs trigger, which makes the DaemonSet replace its pod, while the
// attack loop runs in the demo pod, and checks that the loop kept trying and never
// succeeded: before the old pod went away, while there was no enforcer pod, and once
// the new one was ready. It returns the new enforcer pod.
func (c *cluster) replaceEnforcer(t *testing.T, trigger func()) corev1.Pod {
	t.Helper()
	pod := c.demoPod(t)
	old := c.enforcerPod(t)
	loop := c.startLoop(t, pod)
	before := loop.count(t)
	t.Logf("before: enforcer %s (uid %s); loop: %v", old.Name, old.UID, before)
	trigger()
	waitFor(t, 6*time.Minute, "the old enforcer pod "+old.Name+" to be gone", func() (bool, string) {
		// The uid first, then what says why the pod is still there: whether its
		// deletion was asked for, its phase and its containers' states.
		r := c.run(t, time.Minute, c.kubectlBin, "-n", releaseNS, "get", "pod", old.Name, "-o",
			"jsonpath={.metadata.uid} deletion={.metadata.deletionTimestamp} phase={.status.phase} {.status.containerStatuses[*].state}")
		uid, _, _ := strings.Cut(r.out, " ")
		return r.code != 0 && strings.Contains(r.out, "NotFound") || r.code == 0 && uid != string(old.UID), r.String()
	})
	gone := loop.count(t)
	t.Logf("old enforcer gone; loop: %v", gone)
	var fresh corev1.Pod
	waitFor(t, 6*time.Minute, "a new enforcer pod to be ready", func() (bool, string) {
		pods := c.enforcerPods(t)
		if len(pods) == 1 && pods[0].UID != old.UID && podReady(&pods[0]) {
			fresh = pods[0]
			return true, ""
		}
		return false, describePods(pods)
	})
	ready := loop.count(t)
	t.Logf("new enforcer %s (uid %s) ready; loop: %v", fresh.Name, fresh.UID, ready)
	// A few rounds under the new enforcer.
	waitFor(t, 2*time.Minute, "three rounds of the loop under the new enforcer", func() (bool, string) {
		n := loop.count(t)
		return n.attempts >= ready.attempts+3, fmt.Sprint(n)
	})
	final := loop.stop(t)
	t.Logf("final: loop %v", final)
	if ready.attempts <= gone.attempts {
		t.Errorf("the loop made no attempt between the old enforcer's end (%v) and the new one's readiness (%v)", gone, ready)
	}
	if final.successes != 0 {
		t.Errorf("attacks succeeded: before %v, old enforcer gone %v, new ready %v, final %v", before, gone, ready, final)
	}
	if p := c.pod(t, pod); p.Status.ContainerStatuses[0].RestartCount != 0 {
		t.Errorf("the demo pod's container restarted %d times", p.Status.ContainerStatuses[0].RestartCount)
	}
	return fresh
}
