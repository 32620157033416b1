package standalone

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"syscall"
)

// readKmsg streams the kernel log records written from now on, one per string, until
// ctx ends. Each read of /dev/kmsg returns exactly one record; records overwritten before
// they were read (EPIPE) are skipped.
func readKmsg(ctx context.Context, path string) (<-chan string, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("open the kernel log: %w", err)
	}
	// Skip what was logged before: only decisions from now on are ours to report.
	if _, err := f.Seek(0, io.SeekEnd); err != nil {
		f.Close()
		return nil, fmt.Errorf("seek to the end of %s: %w", path, err)
	}
	out := make(chan string, 256)
	// /dev/kmsg can be polled, so Go's poller waits for it and Close wakes the read.
	stop := context.AfterFunc(ctx, func() { f.Close() })
	go func() {
		defer close(out)
		defer stop()
		buf := make([]byte, 8192) // a record is at most 1 KiB of text plus its header
		for {
			n, err := f.Read(buf)
			if errors.Is(err, syscall.EPIPE) {
				continue
			}
			if err != nil {
				return
			}
			out <- string(buf[:n])
		}
	}()
	return out, nil
}
