package cluster

import (
	"encoding/json"
	"fmt"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	corev1 "k8s.io/api/core/v1"
)

// testPolicyChange edits the demo's policy while its pod runs: two file rules are added,
// the running pod (not restarted) is refused what they name once the policy is Ready at
// its new generation, and allowed again once they are removed.
func testPolicyChange(t *testing.T, c *cluster) {
	pod := c.demoPod(t)
	before := c.pod(t, pod).Status.ContainerStatuses[0]
	// Two files in the container: one for a read-only rule, which only BPF can express;
	// one for a rule on every access, which AppArmor (asked first) expresses too.
	const bpfFile, aaFile = "/tmp/podarmor-e2e-read", "/tmp/podarmor-e2e-any"
	if r := c.exec(t, pod, "app", "sh", "-c", "echo secret > "+bpfFile+"; echo secret > "+aaFile); r.code != 0 {
		t.Fatalf("writing the files: %s", r)
	}
	c.expectAllowed(t, pod, "app", "read before the change", "cat", bpfFile)
	c.expectAllowed(t, pod, "app", "read before the change", "cat", aaFile)

	enforcer := c.enforcerPod(t).Name
	m0 := c.metrics(t, enforcer)
	patch := fmt.Sprintf(`{"spec":{"customRules":{"files":[
		{"name":"e2e-deny-read","paths":[%q],"permissions":["read"]},
		{"name":"e2e-deny-any","paths":[%q],"permissions":["read","write","append","create","delete","rename","link","chmod","chown"]}]}}}`,
		bpfFile, aaFile)
	revert := func() {
		c.kubectl(t, "-n", demoNamespace, "patch", "armorpolicy", demoPolicy, "--type=merge", "-p", `{"spec":{"customRules":null}}`)
	}
	t.Log(c.kubectl(t, "-n", demoNamespace, "patch", "armorpolicy", demoPolicy, "--type=merge", "-p", patch))
	reverted := false
	t.Cleanup(func() {
		if !reverted {
			revert()
		}
	})
	c.waitPolicyReady(t, demoPolicy)
	c.expectDenied(t, pod, "app", "read after the change (BPF)", "cat", bpfFile)
	c.expectDenied(t, pod, "app", "read after the change (AppArmor)", "cat", aaFile)
	c.expectDenied(t, pod, "app", "write after the change (AppArmor)", "sh", "-c", "echo x >> "+aaFile)
	m1 := c.metrics(t, enforcer)
	if d0, d1 := decisions(m0, demoProfile, "custom/e2e-deny-read"), decisions(m1, demoProfile, "custom/e2e-deny-read"); d1 <= d0 {
		t.Errorf("the enforcer counted %v then %v refusals of rule custom/e2e-deny-read; want more after the read", d0, d1)
	}

	revert()
	reverted = true
	c.waitPolicyReady(t, demoPolicy)
	c.expectAllowed(t, pod, "app", "read after the revert", "cat", bpfFile)
	c.expectAllowed(t, pod, "app", "read after the revert", "cat", aaFile)
	// The demo's own rules still hold.
	c.expectDenied(t, pod, "app", "token read after the revert", "cat", "/var/run/secrets/kubernetes.io/serviceaccount/token")

	after := c.pod(t, pod).Status.ContainerStatuses[0]
	if after.ContainerID != before.ContainerID || after.RestartCount != before.RestartCount {
		t.Errorf("the container changed: %s (restarts %d) before, %s (restarts %d) after",
			before.ContainerID, before.RestartCount, after.ContainerID, after.RestartCount)
	}
}

// testEphemeralContainer adds a debugging container to the demo pod with kubectl debug:
// the webhook gives it the pod's profiles, the enforcer registers it, and it is confined;
// the enforcer counts its refusal under the pod's profile.
func testEphemeralContainer(t *testing.T, c *cluster) {
	pod := c.demoPod(t)
	// Ephemeral containers cannot be removed; a name of its own per run.
	name := fmt.Sprintf("e2e-debug-%d", time.Now().Unix()%100000)
	enforcer := c.enforcerPod(t).Name
	m0 := c.metrics(t, enforcer)
	t.Log(c.kubectl(t, "-n", demoNamespace, "debug", pod, "-c", name, "--image", demoImage,
		"--image-pull-policy", "IfNotPresent", "--profile", "general", "--", "sleep", "3600"))
	waitFor(t, 3*time.Minute, "ephemeral container "+name+" running", func() (bool, string) {
		p := c.pod(t, pod)
		for _, s := range p.Status.EphemeralContainerStatuses {
			if s.Name == name {
				return s.State.Running != nil, fmt.Sprintf("%+v", s.State)
			}
		}
		return false, "no status yet"
	})
	p := c.pod(t, pod)
	var app, dbg *corev1.SecurityContext
	for _, ctr := range p.Spec.Containers {
		if ctr.Name == "app" {
			app = ctr.SecurityContext
		}
	}
	for _, ctr := range p.Spec.EphemeralContainers {
		if ctr.Name == name {
			dbg = ctr.SecurityContext
		}
	}
	if dbg == nil || dbg.AppArmorProfile == nil || dbg.AppArmorProfile.LocalhostProfile == nil ||
		*dbg.AppArmorProfile.LocalhostProfile != "podarmor-"+demoProfile {
		t.Errorf("ephemeral container %s: appArmorProfile %s, want Localhost podarmor-%s", name, jsonOf(dbg), demoProfile)
	}
	if dbg == nil || dbg.SeccompProfile == nil || dbg.SeccompProfile.LocalhostProfile == nil ||
		*dbg.SeccompProfile.LocalhostProfile != "podarmor/"+demoProfile+".json" {
		t.Errorf("ephemeral container %s: seccompProfile %s, want Localhost podarmor/%s.json", name, jsonOf(dbg), demoProfile)
	}
	t.Logf("security contexts: app %s, %s %s", jsonOf(app), name, jsonOf(dbg))

	r := c.exec(t, pod, name, "sh", "-c", "cat /proc/self/attr/current; grep '^Seccomp:' /proc/self/status")
	t.Logf("the ephemeral container's process: %s", r)
	if want := "podarmor-" + demoProfile + " (enforce)\nSeccomp:\t2\n"; r.code != 0 || r.out != want {
		t.Errorf("ephemeral container %s: AppArmor label and seccomp mode: got %q, want %q", name, r.out, want)
	}
	// BPF alone can refuse the connection; seccomp refuses the user namespace before
	// the kernel gets to BPF. (kubectl debug mounts no service-account token into the
	// ephemeral container, so there is no token read to try.)
	c.expectDenied(t, pod, name, "metadata from the ephemeral container (BPF)",
		"wget", "-q", "-T", "5", "-O", "/dev/null", "http://169.254.169.254/latest/meta-data/")
	c.expectDenied(t, pod, name, "user namespace from the ephemeral container (seccomp)", "unshare", "-Ur", "id")

	m1 := c.metrics(t, enforcer)
	const metaRule = "builtin/disallow-cloud-metadata-all"
	if d0, d1 := decisions(m0, demoProfile, metaRule), decisions(m1, demoProfile, metaRule); d1 <= d0 {
		t.Errorf("the enforcer counted %v then %v refusals of %s under profile %s; want more after the ephemeral container's", d0, d1, metaRule, demoProfile)
	}
	const reg = "podarmor_enforcer_registrations_total"
	r0, r1 := counter(m0, reg, `result="ok"`), counter(m1, reg, `result="ok"`)
	t.Logf("registrations: %v before, %v after (%s)", r0, r1, grepLines(m1, reg))
	if r1 <= r0 {
		t.Errorf("the enforcer's successful registrations went from %v to %v; want the ephemeral container's", r0, r1)
	}
	logs := c.kubectl(t, "-n", releaseNS, "logs", enforcer, "-c", "enforcer")
	var found []string
	for _, line := range strings.Split(logs, "\n") {
		if strings.Contains(line, metaRule) && strings.Contains(line, demoProfile) && strings.Contains(line, name) {
			found = append(found, line)
		}
	}
	if len(found) == 0 {
		t.Errorf("the enforcer's log has no decision of %s naming profile %s and container %s; its last lines:\n%s",
			metaRule, demoProfile, name, lastLines(logs, 20))
	} else {
		t.Logf("the enforcer's log: %s", found[len(found)-1])
	}
}

// testThreeEnforcers runs the probe (helpers_test.go): a pod whose first actions are one
// attack for each enforcer, each refused with that enforcer's errno.
func testThreeEnforcers(t *testing.T, c *cluster) {
	c.apply(t, probePolicyYAML)
	c.waitPolicyReady(t, probePolicy)
	enforcer := c.enforcerPod(t).Name
	m0 := c.metrics(t, enforcer)
	c.runProbe(t, "e2e-probe")
	m1 := c.metrics(t, enforcer)
	const metaRule = "builtin/disallow-cloud-metadata-all"
	if d0, d1 := decisions(m0, probeProfile, metaRule), decisions(m1, probeProfile, metaRule); d1 <= d0 {
		t.Errorf("the enforcer counted %v then %v refusals of %s under profile %s", d0, d1, metaRule, probeProfile)
	}
	// Without seccomp (the demo pod is privileged, so the runtime applies none), the
	// same chroot succeeds: what refused it in the probe was the seccomp rule.
	c.expectAllowed(t, c.demoPod(t), "app", "chroot in the privileged demo pod (no seccomp)", "chroot", "/", "true")
}

// testHelmUpgrade changes the enforcer's log level with helm upgrade, which rolls the
// DaemonSet under the attack loop: the DaemonSet controller deletes the old pod and
// creates the new one, as it does when the pod is deleted by hand (a test of that alone
// took another 6 minutes in make test and checked nothing this one does not).
func testHelmUpgrade(t *testing.T, c *cluster) {
	chart := filepath.Join(c.root, "deploy", "helm", "podarmor")
	fresh := c.replaceEnforcer(t, func() {
		r := c.run(t, 5*time.Minute, c.helmBin, "upgrade", "podarmor", chart, "--namespace", releaseNS,
			"--reuse-values", "--set", "enforcer.logLevel=debug")
		t.Logf("helm upgrade: %s", r)
		if r.code != 0 {
			t.Fatalf("helm upgrade: %s", r)
		}
	})
	var args []string
	for _, ctr := range fresh.Spec.Containers {
		if ctr.Name == "enforcer" {
			args = append(ctr.Command, ctr.Args...)
		}
	}
	if !slices.Contains(args, "--log-level=debug") {
		t.Errorf("the new enforcer pod's command is %q, want --log-level=debug in it", args)
	}
	r := c.run(t, 5*time.Minute, c.kubectlBin, "-n", releaseNS, "rollout", "status", "daemonset/podarmor-enforcer", "--timeout=4m")
	if r.code != 0 {
		t.Errorf("the enforcer's rollout: %s", r)
	}
	c.runProbe(t, "e2e-probe-after-upgrade")
}

// testHelmUninstall removes podarmor: no webhook configuration of it remains, and a pod
// can still be created (and runs) in the namespace that is still labelled.
func testHelmUninstall(t *testing.T, c *cluster) {
	r := c.run(t, 6*time.Minute, c.helmBin, "uninstall", "podarmor", "--namespace", releaseNS, "--wait", "--timeout", "5m")
	t.Logf("helm uninstall: %s", r)
	if r.code != 0 {
		t.Fatalf("helm uninstall: %s", r)
	}
	var mutating admissionregistrationv1.MutatingWebhookConfigurationList
	var validating admissionregistrationv1.ValidatingWebhookConfigurationList
	c.getJSON(t, &mutating, "mutatingwebhookconfigurations")
	c.getJSON(t, &validating, "validatingwebhookconfigurations")
	var left []string
	for _, w := range mutating.Items {
		for _, h := range w.Webhooks {
			if strings.Contains(w.Name, "podarmor") || h.ClientConfig.Service != nil && h.ClientConfig.Service.Namespace == releaseNS {
				left = append(left, "mutating "+w.Name)
			}
		}
	}
	for _, w := range validating.Items {
		for _, h := range w.Webhooks {
			if strings.Contains(w.Name, "podarmor") || h.ClientConfig.Service != nil && h.ClientConfig.Service.Namespace == releaseNS {
				left = append(left, "validating "+w.Name)
			}
		}
	}
	if len(left) > 0 {
		t.Errorf("webhook configurations of podarmor left after helm uninstall: %v", left)
	}
	labels := c.kubectl(t, "get", "namespace", demoNamespace, "-o", "jsonpath={.metadata.labels.podarmor\\.io/enable}")
	if labels != "true" {
		t.Fatalf("namespace %s's podarmor.io/enable label is %q; the test needs it still set", demoNamespace, labels)
	}
	const name = "e2e-after-uninstall"
	c.apply(t, fmt.Sprintf(`apiVersion: v1
kind: Pod
metadata:
  name: %s
  namespace: demo
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: app
    image: %s
    imagePullPolicy: IfNotPresent
    command: [sleep, "3600"]
`, name, demoImage))
	waitFor(t, 4*time.Minute, "pod "+name+" running", func() (bool, string) {
		p := c.pod(t, name)
		return p.Status.Phase == corev1.PodRunning, fmt.Sprintf("%s %s", p.Status.Phase, jsonOf(p.Status.ContainerStatuses))
	})
	if p := c.pod(t, name); p.Labels["podarmor.io/profile"] != "" {
		t.Errorf("pod %s was given profile %q after podarmor was uninstalled", name, p.Labels["podarmor.io/profile"])
	}
	c.run(t, time.Minute, c.kubectlBin, "-n", demoNamespace, "delete", "pod", name, "--wait=false")
}

func jsonOf(v any) string {
	data, err := json.Marshal(v)
	if err != nil {
		return err.Error()
	}
	return string(data)
}

func grepLines(s, prefix string) string {
	var out []string
	for _, line := range strings.Split(s, "\n") {
		if strings.HasPrefix(line, prefix) {
			out = append(out, line)
		}
	}
	return strings.Join(out, "; ")
}
