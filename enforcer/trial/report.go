package trial

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"strconv"
	"strings"
	"sync"

	"github.com/podarmor/podarmor/enforcer/event"
)

// Report kinds: what a report line carries after its prefix.
const (
	// KindInfo is a message of the runner: what it loads, what failed.
	KindInfo = "info"
	// KindLog is a line of the enforcer's log (with Config.Verbose).
	KindLog = "log"
	// KindEvent is an event.Record as JSON.
	KindEvent = "event"
	// KindExit is the command's exit code, last.
	KindExit = "exit"
)

// Reporter writes the runner's report. With a prefix, each item is one line
// "PREFIX KIND PAYLOAD" that the host side of `podarmor try` takes apart from the
// command's output (ParseReport); the prefix carries a random nonce, so nothing the
// command prints can pass for a report. Without a prefix the lines are for people.
type Reporter struct {
	w      io.Writer
	prefix string
	mu     sync.Mutex
}

// NewReporter returns a Reporter to w.
func NewReporter(w io.Writer, prefix string) *Reporter {
	return &Reporter{w: w, prefix: prefix}
}

func (r *Reporter) line(kind, payload string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	payload = strings.ReplaceAll(payload, "\n", " ")
	if r.prefix != "" {
		fmt.Fprintf(r.w, "%s %s %s\n", r.prefix, kind, payload)
		return
	}
	switch kind {
	case KindEvent:
		fmt.Fprintf(r.w, "  %s\n", payload)
	case KindLog:
		fmt.Fprintf(r.w, "enforcer: %s\n", payload)
	default:
		fmt.Fprintf(r.w, "podarmor try: %s\n", payload)
	}
}

// Infof reports a message.
func (r *Reporter) Infof(format string, args ...any) { r.line(KindInfo, fmt.Sprintf(format, args...)) }

// Log reports a line of the enforcer's log.
func (r *Reporter) Log(line string) { r.line(KindLog, line) }

// Event reports an event.
func (r *Reporter) Event(rec event.Record) {
	if r.prefix == "" {
		r.line(KindEvent, rec.String())
		return
	}
	b, _ := json.Marshal(rec)
	r.line(KindEvent, string(b))
}

// Exit reports the command's exit code.
func (r *Reporter) Exit(code int) {
	if r.prefix == "" {
		r.line(KindExit, fmt.Sprintf("exit code %d", code))
		return
	}
	r.line(KindExit, strconv.Itoa(code))
}

// Item is one report line, parsed.
type Item struct {
	Kind string
	// Text is the payload of info and log lines.
	Text string
	// Event is the payload of an event line.
	Event event.Record
	// Code is the payload of an exit line.
	Code int
}

// ReportSplitter splits what the guest writes into the command's output and the report
// items, line by line. Write it the guest's output; it writes the output to Output and
// calls Item for each report line. A report line may follow output that did not end
// with a newline: the output part goes on, unchanged.
type ReportSplitter struct {
	Prefix string
	Output io.Writer
	Item   func(Item)

	buf []byte
}

// Write implements io.Writer.
func (s *ReportSplitter) Write(p []byte) (int, error) {
	s.buf = append(s.buf, p...)
	for {
		i := bytes.IndexByte(s.buf, '\n')
		if i < 0 {
			break
		}
		s.handle(s.buf[:i+1])
		s.buf = s.buf[i+1:]
	}
	// Output with no newline yet, and no prefix starting in it, need not wait.
	if len(s.buf) > 0 && !bytes.Contains(s.buf, []byte(s.Prefix[:1])) {
		s.Output.Write(s.buf)
		s.buf = s.buf[:0]
	}
	return len(p), nil
}

// Flush writes what is left.
func (s *ReportSplitter) Flush() {
	if len(s.buf) > 0 {
		s.handle(s.buf)
		s.buf = nil
	}
}

func (s *ReportSplitter) handle(line []byte) {
	i := bytes.Index(line, []byte(s.Prefix+" "))
	if i < 0 {
		s.Output.Write(line)
		return
	}
	if i > 0 {
		s.Output.Write(line[:i])
	}
	rest := strings.TrimRight(string(line[i+len(s.Prefix)+1:]), "\r\n")
	kind, payload, _ := strings.Cut(rest, " ")
	it := Item{Kind: kind, Text: payload}
	switch kind {
	case KindEvent:
		if err := json.Unmarshal([]byte(payload), &it.Event); err != nil {
			it = Item{Kind: KindInfo, Text: fmt.Sprintf("unreadable event %q: %v", payload, err)}
		}
	case KindExit:
		code, err := strconv.Atoi(payload)
		if err != nil {
			it = Item{Kind: KindInfo, Text: fmt.Sprintf("unreadable exit code %q", payload)}
		}
		it.Code = code
	}
	if s.Item != nil {
		s.Item(it)
	}
}
