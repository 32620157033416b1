package kube

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"time"

	"k8s.io/apimachinery/pkg/types"
)

// procContainer is a container found by scanning /proc: the cgroup of its processes
// names the container and its pod.
type procContainer struct {
	ID     string
	PodUID types.UID
	// PID is the container's first process (its init): the earliest started process of
	// its cgroup.
	PID     int
	Started time.Time
}

var (
	// The last path element of a container's cgroup: containerd and CRI-O, with the
	// systemd ("cri-containerd-<id>.scope", "crio-<id>.scope") or the cgroupfs driver
	// ("<id>").
	cgroupContainer = regexp.MustCompile(`^(?:cri-containerd-|crio-|docker-)?([0-9a-f]{64})(?:\.scope)?$`)
	// A pod's cgroup: "pod<uid>" (cgroupfs) or "kubepods-<qos>-pod<uid_with_underscores>.slice".
	cgroupPod = regexp.MustCompile(`pod([0-9a-f]{8}[-_][0-9a-f]{4}[-_][0-9a-f]{4}[-_][0-9a-f]{4}[-_][0-9a-f]{12})(?:\.slice)?$`)
)

// parseCgroup returns the container ID and pod UID a /proc/<pid>/cgroup names.
func parseCgroup(data []byte) (id string, pod types.UID, ok bool) {
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() {
		// "hierarchy-ID:controllers:path"; cgroup v2 has one line "0::path".
		parts := strings.SplitN(sc.Text(), ":", 3)
		if len(parts) != 3 {
			continue
		}
		elems := strings.Split(parts[2], "/")
		if len(elems) < 2 {
			continue
		}
		m := cgroupContainer.FindStringSubmatch(elems[len(elems)-1])
		if m == nil {
			continue
		}
		for i := len(elems) - 2; i >= 0; i-- {
			if p := cgroupPod.FindStringSubmatch(elems[i]); p != nil {
				return m[1], types.UID(strings.ReplaceAll(p[1], "_", "-")), true
			}
		}
	}
	return "", "", false
}

// scanProc finds the node's Kubernetes containers in procfs.
func scanProc(proc string) ([]procContainer, error) {
	entries, err := os.ReadDir(proc)
	if err != nil {
		return nil, fmt.Errorf("scan %s: %w", proc, err)
	}
	boot, err := bootTime(proc)
	if err != nil {
		return nil, err
	}
	type first struct {
		procContainer
		ticks uint64
	}
	byID := map[string]*first{}
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		data, err := os.ReadFile(filepath.Join(proc, e.Name(), "cgroup"))
		if err != nil {
			continue // gone
		}
		id, pod, ok := parseCgroup(data)
		if !ok {
			continue
		}
		ticks, err := startTicks(proc, pid)
		if err != nil {
			continue
		}
		if f := byID[id]; f == nil || ticks < f.ticks || (ticks == f.ticks && pid < f.PID) {
			byID[id] = &first{procContainer{ID: id, PodUID: pod, PID: pid}, ticks}
		}
	}
	out := make([]procContainer, 0, len(byID))
	for _, f := range byID {
		f.Started = boot.Add(time.Duration(f.ticks) * time.Second / clockTicks)
		out = append(out, f.procContainer)
	}
	return out, nil
}

// clockTicks is USER_HZ, the unit of /proc/<pid>/stat's times: 100 on every Linux
// architecture Kubernetes runs on.
const clockTicks = 100

// startTicks is field 22 of /proc/<pid>/stat: when the process started, in clock ticks
// since boot.
func startTicks(proc string, pid int) (uint64, error) {
	data, err := os.ReadFile(filepath.Join(proc, strconv.Itoa(pid), "stat"))
	if err != nil {
		return 0, err
	}
	// The command name (field 2) is in parentheses and may hold anything: fields count
	// from after its last ')'.
	i := bytes.LastIndexByte(data, ')')
	if i < 0 {
		return 0, fmt.Errorf("pid %d: malformed stat", pid)
	}
	fields := strings.Fields(string(data[i+1:]))
	if len(fields) < 20 {
		return 0, fmt.Errorf("pid %d: malformed stat", pid)
	}
	return strconv.ParseUint(fields[19], 10, 64)
}

// bootTime is when the node booted, from /proc/stat's btime.
func bootTime(proc string) (time.Time, error) {
	data, err := os.ReadFile(filepath.Join(proc, "stat"))
	if err != nil {
		return time.Time{}, err
	}
	for _, line := range strings.Split(string(data), "\n") {
		if v, ok := strings.CutPrefix(line, "btime "); ok {
			s, err := strconv.ParseInt(strings.TrimSpace(v), 10, 64)
			if err != nil {
				return time.Time{}, fmt.Errorf("%s/stat: btime: %w", proc, err)
			}
			return time.Unix(s, 0), nil
		}
	}
	return time.Time{}, fmt.Errorf("%s/stat has no btime", proc)
}
