// Package containerd follows containerd's event stream: the enforcer's fallback for nodes
// where containerd runs without NRI. A container started there has no OCI hook, so it
// runs before the enforcer registers it; following the stream, the enforcer reconciles
// at each task start instead of waiting for its next periodic reconciliation, and the
// gap shrinks from up to a period to the time one reconciliation takes.
package containerd

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	taskevents "github.com/containerd/containerd/api/events"
	containersapi "github.com/containerd/containerd/api/services/containers/v1"
	eventsapi "github.com/containerd/containerd/api/services/events/v1"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/protobuf/proto"
)

// Defaults of Config.
const (
	// DefaultNamespace is the containerd namespace of the CRI plugin's containers.
	DefaultNamespace = "k8s.io"
	// DefaultRetry is how long Follow waits before it subscribes again.
	DefaultRetry = 2 * time.Second
	// TopicTaskStart is the topic of a task's start.
	TopicTaskStart = "/tasks/start"
)

// TaskStart is a container's task started: its process runs.
type TaskStart struct {
	ContainerID string
	Pid         uint32
	// Labels are the container's labels in containerd, read when the start is
	// reported; nil when they could not be read (the container already gone).
	Labels map[string]string
}

// The labels containerd's CRI plugin gives the containers it creates.
const (
	labelKind          = "io.cri-containerd.kind" // "container", or "sandbox" for a pod's pause
	labelContainerName = "io.kubernetes.container.name"
)

// KubernetesContainer returns the name of the pod's container this task runs, from the
// labels of containerd's CRI plugin; ok is false for a pod's sandbox (pause) container
// and for containers not made by the CRI plugin.
func (s TaskStart) KubernetesContainer() (name string, ok bool) {
	name = s.Labels[labelContainerName]
	if s.Labels[labelKind] != "container" || name == "" {
		return "", false
	}
	return name, true
}

// Config configures Follow.
type Config struct {
	// Socket is containerd's gRPC socket, e.g. /run/containerd/containerd.sock. Required.
	Socket string
	// Namespace is the containerd namespace followed; DefaultNamespace when empty.
	Namespace string
	// Retry is the wait before subscribing again after the stream broke or could not
	// be opened; DefaultRetry when zero.
	Retry time.Duration
	// Subscribed, if set, is called each time the subscription is (re)established:
	// tasks started while there was none were not reported.
	Subscribed func()
	// Started is called for every task start in the namespace. Required.
	Started func(TaskStart)
	// Logger; slog.Default() when nil.
	Logger *slog.Logger
}

// Follow reports task starts until ctx ends, subscribing again whenever containerd goes
// away (a restart, an upgrade). It returns ctx's error, or an error at once for a
// configuration it cannot use.
func Follow(ctx context.Context, cfg Config) error {
	if cfg.Socket == "" {
		return errors.New("containerd: no socket")
	}
	if cfg.Started == nil {
		return errors.New("containerd: no Started callback")
	}
	if cfg.Namespace == "" {
		cfg.Namespace = DefaultNamespace
	}
	if cfg.Retry == 0 {
		cfg.Retry = DefaultRetry
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	conn, err := grpc.NewClient("unix://"+cfg.Socket, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return fmt.Errorf("containerd: client for %s: %w", cfg.Socket, err)
	}
	defer conn.Close()
	client := eventsapi.NewEventsClient(conn)
	containers := containersapi.NewContainersClient(conn)
	log := cfg.Logger.With("socket", cfg.Socket, "namespace", cfg.Namespace)
	broken := false
	for {
		err := follow(ctx, client, containers, cfg, func() {
			if broken {
				log.Info("following containerd's task starts again")
			} else {
				log.Info("following containerd's task starts")
			}
			broken = false
		})
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if !broken {
			log.Warn("containerd's event stream is unavailable; containers started meanwhile wait for the periodic reconciliation", "error", err, "retry", cfg.Retry)
			broken = true
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(cfg.Retry):
		}
	}
}

// follow holds one subscription until it breaks.
func follow(ctx context.Context, client eventsapi.EventsClient, containers containersapi.ContainersClient, cfg Config, subscribed func()) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stream, err := client.Subscribe(ctx, &eventsapi.SubscribeRequest{
		Filters: []string{fmt.Sprintf("topic==%q,namespace==%q", TopicTaskStart, cfg.Namespace)},
	})
	if err != nil {
		return err
	}
	// The call returns once the request is on a connected transport (it fails at once
	// without a server): containerd takes the subscription as it reads it, so a start
	// before that is one the caller's reconciliation at Subscribed finds.
	subscribed()
	if cfg.Subscribed != nil {
		cfg.Subscribed()
	}
	for {
		env, err := stream.Recv()
		if err != nil {
			return err
		}
		start, err := decode(env.GetTopic(), env.GetEvent().GetTypeUrl(), env.GetEvent().GetValue())
		if err != nil {
			cfg.Logger.Warn("containerd event not understood", "error", err)
			continue
		}
		start.Labels = labelsOf(ctx, containers, cfg.Namespace, start.ContainerID)
		cfg.Started(start)
	}
}

// decode reads a task start from an event's topic and payload.
func decode(topic, typeURL string, value []byte) (TaskStart, error) {
	if topic != TopicTaskStart {
		return TaskStart{}, fmt.Errorf("topic %q, want %s", topic, TopicTaskStart)
	}
	const want = "containerd.events.TaskStart"
	if typeURL != want && !strings.HasSuffix(typeURL, "/"+want) {
		return TaskStart{}, fmt.Errorf("event of type %q on %s, want %s", typeURL, topic, want)
	}
	var ev taskevents.TaskStart
	if err := proto.Unmarshal(value, &ev); err != nil {
		return TaskStart{}, fmt.Errorf("event %s: %w", want, err)
	}
	if ev.GetContainerID() == "" {
		return TaskStart{}, fmt.Errorf("event %s without a container id", want)
	}
	return TaskStart{ContainerID: ev.GetContainerID(), Pid: ev.GetPid()}, nil
}

// labelsOf reads container id's labels, or returns nil.
func labelsOf(ctx context.Context, containers containersapi.ContainersClient, namespace, id string) map[string]string {
	ctx, cancel := context.WithTimeout(metadata.AppendToOutgoingContext(ctx, "containerd-namespace", namespace), 5*time.Second)
	defer cancel()
	res, err := containers.Get(ctx, &containersapi.GetContainerRequest{ID: id})
	if err != nil {
		return nil
	}
	return res.GetContainer().GetLabels()
}
