package archive

import (
	"archive/tar"
	"bytes"
	"os"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"testing"
)

// makeRoot creates a fake store path under dir holding files; a value
// starting with "->" makes a symlink to the rest of it, "/" a directory.
func makeRoot(t *testing.T, dir, name string, files map[string]string) string {
	t.Helper()
	root := filepath.Join(dir, name)
	if err := os.MkdirAll(root, 0o755); err != nil {
		t.Fatal(err)
	}
	for file, content := range files {
		p := filepath.Join(root, file)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		var err error
		switch {
		case content == "/":
			err = os.MkdirAll(p, 0o755)
		case strings.HasPrefix(content, "->"):
			err = os.Symlink(strings.TrimPrefix(content, "->"), p)
		default:
			err = os.WriteFile(p, []byte(content), 0o555)
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	return root
}

// show renders entries one per line as "name type mode target", with
// generated file contents left out.
func show(entries []Entry) []string {
	var lines []string
	for _, e := range entries {
		line := e.Name + " " + string(rune(e.Type)) + " " + strconv.FormatInt(e.Mode, 8)
		if e.Target != "" {
			line += " -> " + e.Target
		}
		lines = append(lines, line)
	}
	return lines
}

// generated are the lines of the entries every image has.
var generated = []string{
	"etc/group 0 644",
	"etc/nsswitch.conf 0 644",
	"etc/passwd 0 644",
	"root 5 700",
	"tmp 5 1777",
}

func TestCustomisation(t *testing.T) {
	store := t.TempDir()
	first := makeRoot(t, store, "aaa-first", map[string]string{
		"bin/tool":                          "first",
		"bin/bash":                          "bash",
		"bin/env":                           "env",
		"share/man/man1/tool.1":             "first",
		"share/doc":                         "first's file",
		"share/first-only/x":                "x",
		"etc/passwd":                        "evil:x:0:0::/:/bin/sh\n",
		"etc/profile":                       "first",
		"etc/ssl/certs/ca-certificates.crt": "CERTS",
		"include/ignored.h":                 "not merged",
	})
	second := makeRoot(t, store, "bbb-second", map[string]string{
		"bin/tool":                    "second",
		"bin/other":                   "other",
		"share/man/man1/tool.1":       "second",
		"share/man/man1/other.1":      "other",
		"share/man/man5/other.5":      "other",
		"share/doc/second/README":     "second",
		"share/info":                  "->../elsewhere",
		"sbin/init":                   "init",
		"etc/profile":                 "second",
		"etc/ssl/certs/ca-bundle.crt": "OTHER CERTS",
	})
	// A third root whose share is a symlink to a directory: it merges.
	third := makeRoot(t, store, "ccc-third", map[string]string{
		"real/man/man1/third.1": "third",
	})
	if err := os.Symlink("real", filepath.Join(third, "share")); err != nil {
		t.Fatal(err)
	}

	entries, info, err := Customisation([]string{first, second, third, first})
	if err != nil {
		t.Fatal(err)
	}
	want := []string{
		"bin 5 755",
		"bin/bash 2 777 -> " + first + "/bin/bash",
		"bin/env 2 777 -> " + first + "/bin/env",
		"bin/other 2 777 -> " + second + "/bin/other",
		"bin/sh 2 777 -> /bin/bash",                // no root has sh: falls back to bash
		"bin/tool 2 777 -> " + first + "/bin/tool", // first root wins
		"etc 5 755",
		"etc/group 0 644",
		"etc/nsswitch.conf 0 644",
		"etc/passwd 0 644", // generated, not first's
		"etc/profile 2 777 -> " + first + "/etc/profile",
		"etc/ssl 5 755",
		"etc/ssl/certs 5 755",
		// The first root with a bundle provides it, under both names.
		"etc/ssl/certs/ca-bundle.crt 2 777 -> " + first + "/etc/ssl/certs/ca-certificates.crt",
		"etc/ssl/certs/ca-certificates.crt 2 777 -> " + first + "/etc/ssl/certs/ca-certificates.crt",
		"root 5 700",
		"sbin 5 755",
		"sbin/init 2 777 -> " + second + "/sbin/init",
		"share 5 755",
		"share/doc 2 777 -> " + first + "/share/doc", // a file first: second's directory dropped
		"share/first-only 2 777 -> " + first + "/share/first-only",
		"share/info 2 777 -> " + second + "/share/info", // a dangling symlink is a file
		"share/man 5 755",
		"share/man/man1 5 755",
		"share/man/man1/other.1 2 777 -> " + second + "/share/man/man1/other.1",
		"share/man/man1/third.1 2 777 -> " + third + "/share/man/man1/third.1",
		"share/man/man1/tool.1 2 777 -> " + first + "/share/man/man1/tool.1",
		"share/man/man5 2 777 -> " + second + "/share/man/man5",
		"tmp 5 1777",
		"usr 5 755",
		"usr/bin 5 755",
		"usr/bin/env 2 777 -> /bin/env",
	}
	if got := show(entries); !reflect.DeepEqual(got, want) {
		t.Errorf("entries:\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	wantInfo := Info{Shell: "/bin/bash", CertFile: "/etc/ssl/certs/ca-bundle.crt", Path: "/bin:/usr/bin:/sbin"}
	if info != wantInfo {
		t.Errorf("info = %+v, want %+v", info, wantInfo)
	}

	// Same roots, same entries, same layer.
	again, _, err := Customisation([]string{first, second, third})
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(again, entries) {
		t.Error("Customisation is not deterministic")
	}
	a, blobA := packEntries(t, entries)
	b, blobB := packEntries(t, again)
	if a != b || !bytes.Equal(blobA, blobB) {
		t.Errorf("customisation layers differ: %+v vs %+v", a, b)
	}

	// The order of roots decides conflicts.
	swapped, _, err := Customisation([]string{second, first})
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range swapped {
		if e.Name == "bin/tool" && e.Target != second+"/bin/tool" ||
			e.Name == "etc/ssl/certs/ca-bundle.crt" && e.Target != second+"/etc/ssl/certs/ca-bundle.crt" {
			t.Errorf("with second first: %s -> %s", e.Name, e.Target)
		}
		// second's directory wins; first's file is dropped.
		if e.Name == "share/doc" && e.Target != second+"/share/doc" {
			t.Errorf("with second first: share/doc -> %s", e.Target)
		}
	}
}

func TestCustomisationSmall(t *testing.T) {
	store := t.TempDir()
	shOwn := makeRoot(t, store, "sh", map[string]string{"bin/sh": "sh", "bin/bash": "bash"})
	noBin := makeRoot(t, store, "lib-only", map[string]string{"lib/libz.so": "z"})
	if err := os.WriteFile(filepath.Join(store, "file"), []byte("x"), 0o444); err != nil {
		t.Fatal(err)
	}

	tests := []struct {
		name  string
		roots []string
		want  []string
		info  Info
	}{
		{"no roots", nil, generated, Info{Path: "/bin"}},
		{"root that is a file", []string{filepath.Join(store, "file")}, generated, Info{Path: "/bin"}},
		{"own sh kept", []string{shOwn}, append([]string{
			"bin 5 755",
			"bin/bash 2 777 -> " + shOwn + "/bin/bash",
			"bin/sh 2 777 -> " + shOwn + "/bin/sh",
		}, generated...), Info{Shell: "/bin/bash", Path: "/bin"}},
		{"no bin", []string{noBin}, append(generated[:3:3], append([]string{
			"lib 5 755",
			"lib/libz.so 2 777 -> " + noBin + "/lib/libz.so",
		}, generated[3:]...)...), Info{Path: "/bin"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			entries, info, err := Customisation(tt.roots)
			if err != nil {
				t.Fatal(err)
			}
			got := show(entries)
			// etc is always there, for the generated files.
			want := append([]string{}, tt.want...)
			want = insertSorted(want, "etc 5 755")
			if !reflect.DeepEqual(got, want) {
				t.Errorf("entries:\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
			}
			if info != tt.info {
				t.Errorf("info = %+v, want %+v", info, tt.info)
			}
		})
	}

	for _, roots := range [][]string{{"relative"}, {filepath.Join(store, "missing")}} {
		if _, _, err := Customisation(roots); err == nil {
			t.Errorf("Customisation(%q) succeeded", roots)
		}
	}
}

func insertSorted(lines []string, line string) []string {
	for i, l := range lines {
		if l > line {
			return append(lines[:i], append([]string{line}, lines[i:]...)...)
		}
	}
	return append(lines, line)
}

func TestCustomisationFiles(t *testing.T) {
	entries, _, err := Customisation(nil)
	if err != nil {
		t.Fatal(err)
	}
	layer, blob := packEntries(t, entries)
	if layer.Size != int64(len(blob)) {
		t.Errorf("size %d of %d bytes", layer.Size, len(blob))
	}
	got, _ := readTar(t, gunzip(t, blob))

	for name, want := range map[string][]string{
		"etc/passwd": {
			"root:x:0:0:System administrator:/root:/bin/sh\n",
			"nobody:x:65534:65534:Unprivileged account:/var/empty:/sbin/nologin\n",
		},
		"etc/group":         {"root:x:0:\n", "nogroup:x:65534:\n"},
		"etc/nsswitch.conf": {"passwd: files\n", "group: files\n", "hosts: files dns\n"},
	} {
		for _, line := range want {
			if !strings.Contains(got[name].data, line) {
				t.Errorf("%s = %q, want a line %q", name, got[name].data, line)
			}
		}
	}
	if e := got["tmp/"]; e.typ != tar.TypeDir || e.mode != 0o1777 {
		t.Errorf("tmp/ = %+v, want a directory with mode 01777", e)
	}
	if e := got["root/"]; e.typ != tar.TypeDir || e.mode != 0o700 {
		t.Errorf("root/ = %+v, want a directory with mode 0700", e)
	}
}

func packEntries(t *testing.T, entries []Entry) (Layer, []byte) {
	t.Helper()
	var blob bytes.Buffer
	layer, err := PackWith(&blob, Options{Format: Gzip, Level: 0}, func(tw *tar.Writer) error { return Entries(tw, entries) })
	if err != nil {
		t.Fatal(err)
	}
	return layer, blob.Bytes()
}
