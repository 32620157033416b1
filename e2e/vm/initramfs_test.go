package vm

import (
	"bytes"
	"errors"
	"io"
	"os"
	"path"
	"testing"

	"github.com/cavaliergopher/cpio"
)

// TestInitramfs builds the archives of an initramfs as Run does and reads them back:
// the base userland, then the caller's files, every directory before what is in it, and
// the libraries of a dynamic executable brought along.
func TestInitramfs(t *testing.T) {
	if err := ToolsMissing(); err != nil {
		if os.Getenv("CI") != "" {
			t.Fatalf("CI is set: %v", err)
		}
		t.Skip(err)
	}
	runc, err := hostTool("runc")
	if err != nil {
		t.Fatal(err)
	}
	parser, err := hostTool("apparmor_parser")
	if err != nil {
		t.Fatal(err)
	}
	archives, err := initramfs([]File{
		{Path: "/podarmor/data/x.json", Data: []byte("{}")},
		{Path: "/opt/runc-copy", Source: runc},
		{Path: "/etc/passwd", Data: []byte("root:x:0:0::/:/bin/sh\n"), Mode: 0o600},
	}, []string{"/var/lib/podarmor"})
	if err != nil {
		t.Fatal(err)
	}
	if len(archives) != 2 {
		t.Fatalf("%d archives, want the base and the extras", len(archives))
	}
	base, extra := readArchive(t, archives[0]), readArchive(t, archives[1])

	tests := map[string]struct {
		records map[string]*cpio.Header
		path    string
		mode    cpio.FileMode
	}{
		"the base has /init":                             {base, "/init", cpio.TypeReg | 0o755},
		"the base has busybox":                           {base, "/bin/busybox", cpio.TypeReg | 0o755},
		"busybox's applets are symlinks":                 {base, "/bin/sh", cpio.TypeSymlink | 0o777},
		"the base has apparmor_parser":                   {base, parser, cpio.TypeReg | 0o755},
		"the base has apparmor_parser's abi":             {base, "/etc/apparmor.d/abi/3.0", cpio.TypeReg | 0o644},
		"the base has the program interpreter":           {base, "/lib64/ld-linux-x86-64.so.2", cpio.TypeReg | 0o755},
		"the base has runc's libseccomp":                 {base, "/lib/x86_64-linux-gnu/libseccomp.so.2", cpio.TypeReg | 0o644},
		"a file from data gets 0644":                     {extra, "/podarmor/data/x.json", cpio.TypeReg | 0o644},
		"a file from the host keeps its mode":            {extra, "/opt/runc-copy", cpio.TypeReg | 0o755},
		"a directory asked for is made":                  {extra, "/var/lib/podarmor", cpio.TypeDir | 0o755},
		"a file of the caller replaces the base's":       {extra, "/etc/passwd", cpio.TypeReg | 0o600},
		"directories the base has are not made again":    {extra, "/podarmor", 0},
		"libraries the base has are not copied again":    {extra, "/lib/x86_64-linux-gnu/libseccomp.so.2", 0},
		"nothing of a boot is in the builder's archives": {extra, "/podarmor/run", 0},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			hdr, ok := tc.records[tc.path]
			switch {
			case tc.mode == 0 && ok:
				t.Errorf("%s is in the archive", tc.path)
			case tc.mode != 0 && !ok:
				t.Errorf("%s is missing", tc.path)
			case ok && hdr.Mode != tc.mode:
				t.Errorf("%s has mode %o, want %o", tc.path, hdr.Mode, tc.mode)
			}
		})
	}
	if got := base["/bin/sh"]; got != nil && got.Linkname != "/bin/busybox" {
		t.Errorf("/bin/sh links to %q, want /bin/busybox", got.Linkname)
	}
}

// readArchive writes a and reads it back, checking that every record's directory comes
// before it (the kernel creates no parents), and returns the records by path.
func readArchive(t *testing.T, a *archive) map[string]*cpio.Header {
	t.Helper()
	var buf bytes.Buffer
	if err := a.write(&buf); err != nil {
		t.Fatal(err)
	}
	if buf.Len()%4 != 0 {
		t.Errorf("the archive is %d bytes long; the next one would not start at a multiple of 4", buf.Len())
	}
	records := map[string]*cpio.Header{}
	r := cpio.NewReader(&buf)
	for {
		hdr, err := r.Next()
		if errors.Is(err, io.EOF) {
			return records
		}
		if err != nil {
			t.Fatal(err)
		}
		name := "/" + hdr.Name
		if dir := path.Dir(name); dir != "/" && records[dir] == nil && !a.parent.has(dir) {
			t.Errorf("%s comes before its directory", name)
		}
		records[name] = hdr
	}
}
