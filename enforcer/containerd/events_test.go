package containerd

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	taskevents "github.com/containerd/containerd/api/events"
	"google.golang.org/protobuf/proto"

	"github.com/podarmor/podarmor/e2e/framework"
)

func TestDecode(t *testing.T) {
	start, err := proto.Marshal(&taskevents.TaskStart{ContainerID: "c1", Pid: 42})
	if err != nil {
		t.Fatal(err)
	}
	noID, err := proto.Marshal(&taskevents.TaskStart{Pid: 42})
	if err != nil {
		t.Fatal(err)
	}
	for _, url := range []string{"containerd.events.TaskStart", "type.googleapis.com/containerd.events.TaskStart"} {
		got, err := decode(TopicTaskStart, url, start)
		if err != nil || got.ContainerID != "c1" || got.Pid != 42 {
			t.Errorf("decode of a task start typed %q: %+v, %v", url, got, err)
		}
	}
	for _, c := range []struct {
		topic, url string
		value      []byte
		want       string
	}{
		{"/tasks/exit", "containerd.events.TaskStart", start, `topic "/tasks/exit"`},
		{TopicTaskStart, "containerd.events.TaskExit", start, `type "containerd.events.TaskExit"`},
		{TopicTaskStart, "containerd.events.TaskStart", []byte{0xff, 0xff}, "containerd.events.TaskStart: "},
		{TopicTaskStart, "containerd.events.TaskStart", noID, "without a container id"},
	} {
		if _, err := decode(c.topic, c.url, c.value); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("decode(%s, %s): %v, want an error with %q", c.topic, c.url, err, c.want)
		}
	}
}

func TestFollowRefusesAnIncompleteConfig(t *testing.T) {
	ctx := context.Background()
	if err := Follow(ctx, Config{Started: func(TaskStart) {}}); err == nil || !strings.Contains(err.Error(), "no socket") {
		t.Errorf("without a socket: %v", err)
	}
	if err := Follow(ctx, Config{Socket: "/run/containerd/containerd.sock"}); err == nil || !strings.Contains(err.Error(), "no Started") {
		t.Errorf("without Started: %v", err)
	}
}

// TestFollowRealContainerd follows a real containerd (the node's 1.7) while ctr runs real
// runc containers: each start in the followed namespace is reported once, with the
// container's id, its process's pid and its labels (a pod's container by the labels of
// containerd's CRI plugin, a pause container, a container of no pod); the other events
// of a run (create, exit, delete) and the starts in another namespace are not. When
// containerd is killed and started again, Follow subscribes again on its own and reports
// the next start.
func TestFollowRealContainerd(t *testing.T) {
	if testing.Short() {
		t.Skip("-short: starts containerd and runc containers")
	}
	ctrd := framework.StartContainerd(t)
	rootfs := filepath.Join(t.TempDir(), "rootfs")
	if err := os.MkdirAll(filepath.Join(rootfs, "bin"), 0o755); err != nil {
		t.Fatal(err)
	}
	busybox, err := os.ReadFile("/bin/busybox") // busybox-static, which hack/deps.sh installs
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(rootfs, "bin/busybox"), busybox, 0o755); err != nil {
		t.Fatal(err)
	}
	run := func(ns, id string, labels ...string) {
		t.Helper()
		args := []string{"run", "--rm"}
		for _, l := range labels {
			args = append(args, "--label", l)
		}
		// --rootfs: the first argument is a directory, not an image
		ctrd.Ctr(t, ns, append(args, "--rootfs", rootfs, id, "/bin/busybox", "true")...)
	}

	ctx, cancel := context.WithCancel(context.Background())
	started := make(chan TaskStart, 16)
	subscribed := make(chan struct{}, 4)
	done := make(chan error, 1)
	go func() {
		done <- Follow(ctx, Config{Socket: ctrd.Socket, Retry: 200 * time.Millisecond,
			Subscribed: func() { subscribed <- struct{}{} },
			Started:    func(s TaskStart) { started <- s }})
	}()
	defer func() {
		cancel()
		if err := <-done; err != context.Canceled {
			t.Errorf("Follow returned %v after its context ended, want context.Canceled", err)
		}
	}()
	waitSubscribed := func(when string) {
		t.Helper()
		select {
		case <-subscribed:
		case <-time.After(30 * time.Second):
			t.Fatalf("%s: not subscribed within 30 s", when)
		}
	}
	next := func(want, container string) {
		t.Helper()
		select {
		case s := <-started:
			if s.ContainerID != want || s.Pid == 0 {
				t.Fatalf("reported %+v, want the start of %s with its pid", s, want)
			}
			if name, ok := s.KubernetesContainer(); name != container || ok != (container != "") {
				t.Errorf("the start of %s: Kubernetes container %q (%t), want %q; labels %v", want, name, ok, container, s.Labels)
			}
		case <-time.After(30 * time.Second):
			t.Fatalf("the start of %s was not reported within 30 s", want)
		}
	}
	none := func(when string) {
		t.Helper()
		select {
		case s := <-started:
			t.Fatalf("%s: reported %+v", when, s)
		case <-time.After(time.Second):
		}
	}

	waitSubscribed("at start")
	run(DefaultNamespace, "first", "io.cri-containerd.kind=container", "io.kubernetes.container.name=web")
	next("first", "web")
	run("elsewhere", "other", "io.cri-containerd.kind=container", "io.kubernetes.container.name=web")
	run(DefaultNamespace, "pause", "io.cri-containerd.kind=sandbox", "io.kubernetes.container.name=POD")
	next("pause", "")
	run(DefaultNamespace, "second")
	next("second", "")
	none("after the runs")

	ctrd.Stop()
	ctrd.Start(t)
	waitSubscribed("after containerd restarted")
	run(DefaultNamespace, "third", "io.cri-containerd.kind=container", "io.kubernetes.container.name=db")
	next("third", "db")
	none("after the run that followed the restart")
}
