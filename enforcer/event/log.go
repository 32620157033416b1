package event

import (
	"fmt"
	"io"
	"os"
	"path/filepath"

	"gopkg.in/natefinch/lumberjack.v2"
)

// Stdout is the LogConfig.Path of the process's standard output.
const Stdout = "-"

// Defaults of the rotated file's LogConfig fields.
const (
	DefaultMaxSizeMB  = 100
	DefaultMaxBackups = 5
)

// LogConfig says where the event log goes: stdout, or a file rotated by size.
type LogConfig struct {
	// Path is the file, absolute; Stdout ("-") or empty is standard output, where the
	// other fields do not apply.
	Path string
	// MaxSizeMB is the size in MiB past which the file is rotated: the line that would
	// cross it starts a new file, so a line is never split across files. At least 1.
	MaxSizeMB int
	// MaxBackups is how many rotated files are kept (the oldest go first); 0 keeps
	// every one that MaxAgeDays keeps.
	MaxBackups int
	// MaxAgeDays removes rotated files older than this many days; 0 keeps them
	// whatever their age.
	MaxAgeDays int
	// Compress gzips rotated files (in the background, after the rotation).
	Compress bool
}

// A SettingError is a LogConfig field whose value the log cannot work with; the
// binary names its own flag for Field.
type SettingError struct {
	// Field is the LogConfig field: Path, MaxSizeMB, MaxBackups or MaxAgeDays.
	Field  string
	Value  any
	Reason string
}

func (e *SettingError) Error() string {
	return fmt.Sprintf("event log %s %v: %s", e.Field, e.Value, e.Reason)
}

// ToStdout reports whether the log goes to standard output.
func (c LogConfig) ToStdout() bool { return c.Path == "" || c.Path == Stdout }

// Validate checks c without opening anything: a file path is absolute and not a
// directory, sizes and counts are not negative.
func (c LogConfig) Validate() error {
	if c.MaxSizeMB < 1 {
		return &SettingError{"MaxSizeMB", c.MaxSizeMB, "want at least 1 (MiB)"}
	}
	if c.MaxBackups < 0 {
		return &SettingError{"MaxBackups", c.MaxBackups, "want 0 (keep all) or more"}
	}
	if c.MaxAgeDays < 0 {
		return &SettingError{"MaxAgeDays", c.MaxAgeDays, "want 0 (no age limit) or more"}
	}
	if c.ToStdout() {
		return nil
	}
	if !filepath.IsAbs(c.Path) {
		return &SettingError{"Path", c.Path, "want an absolute path, or " + Stdout + " for stdout"}
	}
	// lumberjack would take a directory at the path for an old log and rename it away.
	if fi, err := os.Stat(c.Path); err == nil && fi.IsDir() {
		return &SettingError{"Path", c.Path, "is a directory; want a file in it"}
	}
	return nil
}

// OpenLog validates c and opens the log. A file is created (with its directory) or
// appended to at once, so that a path the process cannot write fails here and not at
// the first event; stdout is never closed by the returned Closer.
func OpenLog(c LogConfig, stdout io.Writer) (io.WriteCloser, error) {
	if err := c.Validate(); err != nil {
		return nil, err
	}
	if c.ToStdout() {
		return nopCloser{stdout}, nil
	}
	l := &lumberjack.Logger{
		Filename:   c.Path,
		MaxSize:    c.MaxSizeMB,
		MaxBackups: c.MaxBackups,
		MaxAge:     c.MaxAgeDays,
		Compress:   c.Compress,
	}
	// A write of nothing opens (or creates) the file and writes nothing.
	if _, err := l.Write(nil); err != nil {
		return nil, fmt.Errorf("open event log %s: %w", c.Path, err)
	}
	return l, nil
}

type nopCloser struct{ io.Writer }

func (nopCloser) Close() error { return nil }
