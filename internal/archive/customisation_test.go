package archive

import (
	"archive/tar"
	"bytes"
	"io"
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

	entries, info, err := Customisation([]string{first, second, third, first}, Setup{})
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
	again, _, err := Customisation([]string{first, second, third}, Setup{})
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
	swapped, _, err := Customisation([]string{second, first}, Setup{})
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
			entries, info, err := Customisation(tt.roots, Setup{})
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
		if _, _, err := Customisation(roots, Setup{}); err == nil {
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
	entries, _, err := Customisation(nil, Setup{})
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

func TestCustomisationNonRoot(t *testing.T) {
	store := t.TempDir()
	// A package that brings its own user database and a home: the
	// generated ones win, and home is not a merged directory anyway.
	pkg := makeRoot(t, store, "pkg", map[string]string{
		"bin/tool":           "tool",
		"etc/passwd":         "evil:x:0:0::/:/bin/sh\n",
		"etc/group":          "evil:x:0:\n",
		"home/nonroot/.keep": "x",
	})
	rootEntries, rootInfo, err := Customisation([]string{pkg}, Setup{})
	if err != nil {
		t.Fatal(err)
	}
	entries, info, err := Customisation([]string{pkg}, Setup{NonRoot: true})
	if err != nil {
		t.Fatal(err)
	}

	// Only the user database and the home differ from the root image.
	byName := func(es []Entry) map[string]Entry {
		m := map[string]Entry{}
		for _, e := range es {
			m[e.Name] = e
		}
		return m
	}
	root, nonroot := byName(rootEntries), byName(entries)
	for name, e := range nonroot {
		r, ok := root[name]
		switch name {
		case "etc/passwd", "etc/group":
			if !ok || bytes.Equal(r.Data, e.Data) {
				t.Errorf("%s is the root image's", name)
			}
		case "home", "home/nonroot":
			if ok {
				t.Errorf("the root image has %s", name)
			}
		default:
			if !reflect.DeepEqual(r, e) {
				t.Errorf("%s differs from the root image's: %+v vs %+v", name, e, r)
			}
		}
	}
	if len(nonroot) != len(root)+2 {
		t.Errorf("nonroot has %d entries, root %d; want 2 more (home, home/nonroot)", len(nonroot), len(root))
	}

	for _, tt := range []struct {
		name     string
		typ      byte
		mode     int64
		uid, gid int
	}{
		{"home", tar.TypeDir, 0o755, 0, 0},
		{"home/nonroot", tar.TypeDir, 0o755, 65532, 65532},
		{"tmp", tar.TypeDir, 0o1777, 0, 0},
		{"root", tar.TypeDir, 0o700, 0, 0},
		{"etc/passwd", tar.TypeReg, 0o644, 0, 0},
		{"etc/group", tar.TypeReg, 0o644, 0, 0},
	} {
		e := nonroot[tt.name]
		if e.Type != tt.typ || e.Mode != tt.mode || e.Uid != tt.uid || e.Gid != tt.gid {
			t.Errorf("%s = type %q mode %o owner %d:%d; want type %q mode %o owner %d:%d",
				tt.name, e.Type, e.Mode, e.Uid, e.Gid, tt.typ, tt.mode, tt.uid, tt.gid)
		}
	}
	if _, ok := nonroot["home/nonroot/.keep"]; ok {
		t.Error("a package's file landed in the home")
	}

	wantPasswd := []string{
		"root:x:0:0:System administrator:/root:/bin/sh",
		"nobody:x:65534:65534:Unprivileged account:/var/empty:/sbin/nologin",
		"nonroot:x:65532:65532:Unprivileged user:/home/nonroot:/bin/sh",
	}
	wantGroup := []string{"root:x:0:", "nogroup:x:65534:", "nonroot:x:65532:"}
	for _, tt := range []struct {
		name   string
		fields int
		want   []string
	}{
		{"etc/passwd", 7, wantPasswd},
		{"etc/group", 4, wantGroup},
	} {
		data := string(nonroot[tt.name].Data)
		lines := strings.Split(strings.TrimSuffix(data, "\n"), "\n")
		if !strings.HasSuffix(data, "\n") || !reflect.DeepEqual(lines, tt.want) {
			t.Errorf("%s = %q, want the lines %q", tt.name, data, tt.want)
		}
		// Well-formed: the number of fields, and names and ids unique.
		names, ids := map[string]bool{}, map[string]bool{}
		for _, l := range lines {
			f := strings.Split(l, ":")
			if len(f) != tt.fields || names[f[0]] || ids[f[2]] {
				t.Errorf("%s: bad or repeated line %q", tt.name, l)
				continue
			}
			names[f[0]], ids[f[2]] = true, true
		}
		if root := string(root[tt.name].Data); !strings.HasPrefix(data, root) {
			t.Errorf("%s does not extend the root image's %q", tt.name, root)
		}
	}

	wantInfo := rootInfo
	wantInfo.User, wantInfo.Home = "65532:65532", "/home/nonroot"
	if info != wantInfo || rootInfo.User != "" || rootInfo.Home != "" {
		t.Errorf("info = %+v (root image: %+v), want %+v", info, rootInfo, wantInfo)
	}

	// In the tar: the home belongs to 65532:65532, everything else to
	// root (readTar checks that), and the layer is deterministic.
	layer, blob := packEntries(t, entries)
	got, _ := readTar(t, gunzip(t, blob))
	if e := got["home/nonroot/"]; e.typ != tar.TypeDir || e.mode != 0o755 {
		t.Errorf("home/nonroot/ = %+v", e)
	}
	tr := tar.NewReader(bytes.NewReader(gunzip(t, blob)))
	for {
		hdr, err := tr.Next()
		if err != nil {
			t.Fatalf("home/nonroot/ not found: %v", err)
		}
		if hdr.Name == "home/nonroot/" {
			if hdr.Uid != 65532 || hdr.Gid != 65532 {
				t.Errorf("home/nonroot/ owned by %d:%d, want 65532:65532", hdr.Uid, hdr.Gid)
			}
			break
		}
	}
	again, _, _ := Customisation([]string{pkg}, Setup{NonRoot: true})
	if l2, _ := packEntries(t, again); l2 != layer {
		t.Errorf("nonroot customisation layer not deterministic: %+v vs %+v", l2, layer)
	}
	if rl, _ := packEntries(t, rootEntries); rl.Digest == layer.Digest {
		t.Error("root and nonroot customisation layers are the same blob")
	}
}

func TestEntriesOwner(t *testing.T) {
	for _, owner := range [][2]int{{-1, 0}, {0, -1}, {0o10000000, 0}} {
		e := Entry{Name: "x", Type: tar.TypeDir, Mode: 0o755, Uid: owner[0], Gid: owner[1]}
		if err := Entries(tar.NewWriter(io.Discard), []Entry{e}); err == nil {
			t.Errorf("owner %d:%d accepted", owner[0], owner[1])
		}
	}
}

func TestCustomisationProgram(t *testing.T) {
	store := t.TempDir()
	hello := makeRoot(t, store, "aaa-hello", map[string]string{
		"bin/hello":     "hello",
		"bin/greet":     "->hello",
		"bin/dir":       "/",
		"share/data":    "data",
		"bin/dangling":  "->nothing",
		"libexec/inner": "inner",
	})
	other := makeRoot(t, store, "bbb-other", map[string]string{"bin/other": "other"})
	// Not a root, though its name starts with one's.
	outside := makeRoot(t, store, "aaa-hello2", map[string]string{"bin/hello": "hello"})
	if err := os.Chmod(filepath.Join(hello, "share/data"), 0o444); err != nil {
		t.Fatal(err)
	}
	roots := []string{hello, other}

	tests := []struct {
		name     string
		programs []string
		want     string
	}{
		{"none", nil, ""},
		{"one", []string{hello + "/bin/hello"}, hello + "/bin/hello"},
		{"the same twice", []string{hello + "/bin/hello", hello + "/bin/hello"}, hello + "/bin/hello"},
		{"a symlink to a program", []string{hello + "/bin/greet"}, hello + "/bin/greet"},
		{"outside bin", []string{hello + "/libexec/inner"}, hello + "/libexec/inner"},
		{"two packages with programs", []string{hello + "/bin/hello", other + "/bin/other"}, ""},
		{"not a root", []string{outside + "/bin/hello"}, ""},
		{"missing", []string{hello + "/bin/nothing"}, ""},
		{"dangling symlink", []string{hello + "/bin/dangling"}, ""},
		{"a directory", []string{hello + "/bin/dir"}, ""},
		{"not executable", []string{hello + "/share/data"}, ""},
		{"relative", []string{"bin/hello"}, ""},
		{"not clean", []string{hello + "/bin/../bin/hello"}, ""},
		{"escapes the root", []string{hello + "/../aaa-hello2/bin/hello"}, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			entries, info, err := Customisation(roots, Setup{Programs: tt.programs})
			if err != nil {
				t.Fatal(err)
			}
			if info.Program != tt.want {
				t.Errorf("Program = %q, want %q", info.Program, tt.want)
			}
			// The program only goes into the config: the layer is the same.
			plain, _, _ := Customisation(roots, Setup{})
			if !reflect.DeepEqual(entries, plain) {
				t.Error("programs changed the customisation layer")
			}
		})
	}
}
