package archive

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"errors"
	"io"
	"io/fs"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
)

// fixture builds a small fake store under a temporary directory and returns
// the store paths in it. It covers plain and executable files, nested
// directories, relative and absolute symlinks, a store path that is a single
// file, one that is a symlink, and a file hard-linked across two store paths.
// Modes are set as in the Nix store and mtimes are odd.
func fixture(t testing.TB) (store string, paths []string) {
	t.Helper()
	store = filepath.Join(t.TempDir(), "store")
	hello := filepath.Join(store, "aaa-hello")
	lib := filepath.Join(store, "bbb-lib")
	single := filepath.Join(store, "ccc-file")
	link := filepath.Join(store, "ddd-link")

	mkdir := func(dir string) {
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	write := func(file, content string, mode fs.FileMode) {
		mkdir(filepath.Dir(file))
		if err := os.WriteFile(file, []byte(content), mode); err != nil {
			t.Fatal(err)
		}
	}
	symlink := func(target, file string) {
		mkdir(filepath.Dir(file))
		if err := os.Symlink(target, file); err != nil {
			t.Fatal(err)
		}
	}
	write(filepath.Join(hello, "bin/hello"), "#!/bin/sh\necho hello\n", 0o555)
	write(filepath.Join(hello, "share/doc/hello/README"), "shared text\n", 0o444)
	// "share/doc/hello-b" sorts before "share/doc/hello/", and so before
	// the directory's contents.
	write(filepath.Join(hello, "share/doc/hello-b"), "sorts before hello/\n", 0o444)
	symlink("share/doc", filepath.Join(hello, "doc"))
	symlink(filepath.Join(lib, "lib/libx.so.1"), filepath.Join(hello, "lib/libx.so"))
	write(filepath.Join(lib, "lib/libx.so.1"), strings.Repeat("\x7fELF", 1000), 0o555)
	mkdir(filepath.Join(lib, "lib/empty"))
	// A hard link across store paths, as auto-optimise-store makes them.
	mkdir(filepath.Join(lib, "share"))
	if err := os.Link(filepath.Join(hello, "share/doc/hello/README"), filepath.Join(lib, "share/README")); err != nil {
		t.Fatal(err)
	}
	write(single, "a store path that is a file\n", 0o444)
	symlink(hello, link)

	// Odd mtimes, then Nix store modes (directories last, bottom-up).
	odd := time.Date(2021, 3, 4, 5, 6, 7, 891011, time.UTC)
	var dirs []string
	err := filepath.WalkDir(store, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.Type()&fs.ModeSymlink == 0 {
			odd = odd.Add(time.Hour + 17*time.Millisecond)
			if err := os.Chtimes(p, odd, odd); err != nil {
				return err
			}
		}
		if d.IsDir() && p != store {
			dirs = append(dirs, p)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range slices.Backward(dirs) {
		if err := os.Chmod(d, 0o555); err != nil {
			t.Fatal(err)
		}
	}
	// Let t.TempDir's cleanup remove the read-only tree when not root.
	t.Cleanup(func() {
		for _, d := range dirs {
			os.Chmod(d, 0o755)
		}
	})
	return store, []string{link, single, lib, hello}
}

// pack packs paths and returns the layer and its blob.
func pack(t testing.TB, level int, paths []string) (Layer, []byte) {
	t.Helper()
	var blob bytes.Buffer
	layer, err := PackWith(&blob, Options{Format: Gzip, Level: level}, func(tw *tar.Writer) error { return StorePaths(tw, paths) })
	if err != nil {
		t.Fatal(err)
	}
	return layer, blob.Bytes()
}

func gunzip(t testing.TB, blob []byte) []byte {
	t.Helper()
	zr, err := gzip.NewReader(bytes.NewReader(blob))
	if err != nil {
		t.Fatal(err)
	}
	raw, err := io.ReadAll(zr)
	if err != nil {
		t.Fatal(err)
	}
	return raw
}

func TestPackDeterministic(t *testing.T) {
	store, paths := fixture(t)
	for _, level := range []int{0, 1, 9} {
		layer, blob := pack(t, level, paths)

		if want := digest.FromBytes(blob); layer.Digest != want {
			t.Errorf("level %d: Digest %s, sha256 of blob %s", level, layer.Digest, want)
		}
		if want := digest.FromBytes(gunzip(t, blob)); layer.DiffID != want {
			t.Errorf("level %d: DiffID %s, sha256 of tar %s", level, layer.DiffID, want)
		}
		if layer.Size != int64(len(blob)) {
			t.Errorf("level %d: Size %d, blob has %d bytes", level, layer.Size, len(blob))
		}

		// Same content in another order and with other mtimes: same bytes.
		later := time.Now()
		filepath.WalkDir(store, func(p string, d fs.DirEntry, err error) error {
			if err == nil && d.Type()&fs.ModeSymlink == 0 {
				later = later.Add(-time.Minute - time.Nanosecond)
				os.Chtimes(p, later, later)
			}
			return nil
		})
		reversed := slices.Clone(paths)
		slices.Reverse(reversed)
		again, blob2 := pack(t, level, append(reversed, paths[0]))
		if again != layer || !bytes.Equal(blob, blob2) {
			t.Errorf("level %d: packing twice differs: %+v vs %+v", level, layer, again)
		}
	}
}

func TestPackGzipHeader(t *testing.T) {
	_, blob := pack(t, 0, nil)
	zr, err := gzip.NewReader(bytes.NewReader(blob))
	if err != nil {
		t.Fatal(err)
	}
	if zr.Name != "" || zr.Comment != "" || !zr.ModTime.IsZero() || zr.Extra != nil {
		t.Errorf("gzip header carries variable data: %+v", zr.Header)
	}
	if _, err := PackWith(io.Discard, Options{Format: Gzip, Level: 42}, func(*tar.Writer) error { return nil }); err == nil {
		t.Error("Pack accepted gzip level 42")
	}
	boom := errors.New("boom")
	if _, err := PackWith(io.Discard, Options{Format: Gzip, Level: 0}, func(*tar.Writer) error { return boom }); !errors.Is(err, boom) {
		t.Errorf("Pack error = %v, want the write function's", err)
	}
}

// entry is what the tests check of a tar header and its content.
type entry struct {
	typ    byte
	mode   int64
	target string
	data   string
}

// readTar reads a tar stream, checks the conventions every entry shares and
// returns the entries by name, and the names in order.
func readTar(t *testing.T, raw []byte) (map[string]entry, []string) {
	t.Helper()
	got := map[string]entry{}
	var names []string
	tr := tar.NewReader(bytes.NewReader(raw))
	for {
		hdr, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		// Only the home of nonroot belongs to someone else than root.
		if owner := [2]int{hdr.Uid, hdr.Gid}; owner != [2]int{} && !(hdr.Name == "home/nonroot/" && owner == [2]int{NonRootID, NonRootID}) || hdr.Uname != "" || hdr.Gname != "" {
			t.Errorf("%s: owner %d:%d %q:%q, want 0:0 and no names", hdr.Name, hdr.Uid, hdr.Gid, hdr.Uname, hdr.Gname)
		}
		if !hdr.ModTime.Equal(time.Unix(1, 0)) {
			t.Errorf("%s: mtime %v, want 1970-01-01T00:00:01Z", hdr.Name, hdr.ModTime)
		}
		if len(hdr.PAXRecords) > 0 && len(hdr.Name) < 100 {
			t.Errorf("%s: unneeded PAX records %v", hdr.Name, hdr.PAXRecords)
		}
		if strings.HasPrefix(hdr.Name, "/") || (hdr.Typeflag == tar.TypeDir) != strings.HasSuffix(hdr.Name, "/") {
			t.Errorf("%s: badly formed name for type %q", hdr.Name, hdr.Typeflag)
		}
		if _, dup := got[hdr.Name]; dup {
			t.Errorf("%s: written twice", hdr.Name)
		}
		if parent := filepath.Dir(strings.TrimSuffix(hdr.Name, "/")); parent != "." {
			if _, ok := got[parent+"/"]; !ok {
				t.Errorf("%s: parent %s/ not written before", hdr.Name, parent)
			}
		}
		data, err := io.ReadAll(tr)
		if err != nil {
			t.Fatal(err)
		}
		got[hdr.Name] = entry{hdr.Typeflag, hdr.Mode, hdr.Linkname, string(data)}
		names = append(names, hdr.Name)
	}
	if !slices.IsSorted(names) {
		t.Errorf("names not sorted: %q", names)
	}
	return got, names
}

func TestStorePaths(t *testing.T) {
	store, paths := fixture(t)
	_, blob := pack(t, 0, paths)
	got, names := readTar(t, gunzip(t, blob))

	s := strings.TrimPrefix(store, "/")
	readme := "shared text\n"
	want := map[string]entry{
		s + "/":                                 {tar.TypeDir, 0o755, "", ""}, // synthesised parent
		s + "/aaa-hello/":                       {tar.TypeDir, 0o555, "", ""},
		s + "/aaa-hello/bin/":                   {tar.TypeDir, 0o555, "", ""},
		s + "/aaa-hello/bin/hello":              {tar.TypeReg, 0o555, "", "#!/bin/sh\necho hello\n"},
		s + "/aaa-hello/doc":                    {tar.TypeSymlink, 0o777, "share/doc", ""},
		s + "/aaa-hello/lib/":                   {tar.TypeDir, 0o555, "", ""},
		s + "/aaa-hello/lib/libx.so":            {tar.TypeSymlink, 0o777, store + "/bbb-lib/lib/libx.so.1", ""},
		s + "/aaa-hello/share/":                 {tar.TypeDir, 0o555, "", ""},
		s + "/aaa-hello/share/doc/":             {tar.TypeDir, 0o555, "", ""},
		s + "/aaa-hello/share/doc/hello/":       {tar.TypeDir, 0o555, "", ""},
		s + "/aaa-hello/share/doc/hello/README": {tar.TypeReg, 0o444, "", readme},
		s + "/aaa-hello/share/doc/hello-b":      {tar.TypeReg, 0o444, "", "sorts before hello/\n"},
		s + "/bbb-lib/":                         {tar.TypeDir, 0o555, "", ""},
		s + "/bbb-lib/lib/":                     {tar.TypeDir, 0o555, "", ""},
		s + "/bbb-lib/lib/empty/":               {tar.TypeDir, 0o555, "", ""},
		s + "/bbb-lib/lib/libx.so.1":            {tar.TypeReg, 0o555, "", strings.Repeat("\x7fELF", 1000)},
		s + "/bbb-lib/share/":                   {tar.TypeDir, 0o555, "", ""},
		s + "/bbb-lib/share/README":             {tar.TypeReg, 0o444, "", readme}, // hard link, in full
		s + "/ccc-file":                         {tar.TypeReg, 0o444, "", "a store path that is a file\n"},
		s + "/ddd-link":                         {tar.TypeSymlink, 0o777, store + "/aaa-hello", ""},
	}
	for name, w := range want {
		if g, ok := got[name]; !ok {
			t.Errorf("%s missing", name)
		} else if g != w {
			t.Errorf("%s = %+v, want %+v", name, g, w)
		}
	}
	for _, name := range names {
		if _, ok := want[name]; !ok && !strings.HasPrefix(s+"/", name) {
			t.Errorf("unexpected entry %s", name)
		}
	}
	// Every ancestor of the store is a synthesised directory, first.
	parents := strings.Count(s, "/") + 1
	for i, name := range names[:parents] {
		if g := got[name]; g.typ != tar.TypeDir || g.mode != 0o755 || !strings.HasPrefix(s+"/", name) {
			t.Errorf("entry %d = %s %+v, want a parent directory of the store", i, name, g)
		}
	}
}

func TestStorePathsNixStoreNames(t *testing.T) {
	// Real store paths may exist on the machine; this only checks naming.
	dir := t.TempDir()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	if err := StorePaths(tw, []string{dir}); err != nil {
		t.Fatal(err)
	}
	tw.Close()
	_, names := readTar(t, buf.Bytes())
	if names[0] != strings.SplitAfter(dir, "/")[1] || names[len(names)-1] != strings.TrimPrefix(dir, "/")+"/" {
		t.Errorf("names = %q", names)
	}
}

func TestStorePathsLongName(t *testing.T) {
	dir := filepath.Join(t.TempDir(), strings.Repeat("n", 120), strings.Repeat("ü", 60))
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "f"), []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	a, blob := pack(t, 0, []string{dir})
	b, _ := pack(t, 0, []string{dir})
	if a != b {
		t.Errorf("long names not deterministic: %+v vs %+v", a, b)
	}
	got, _ := readTar(t, gunzip(t, blob))
	if e := got[strings.TrimPrefix(dir, "/")+"/f"]; e.data != "x" {
		t.Errorf("long name entry = %+v", e)
	}
}

func TestStorePathsErrors(t *testing.T) {
	dir := t.TempDir()
	fifo := filepath.Join(dir, "fifo")
	if err := syscall.Mkfifo(fifo, 0o644); err != nil {
		t.Fatal(err)
	}
	for _, paths := range [][]string{
		{"relative/path"},
		{"/"},
		{filepath.Join(dir, "missing")},
		{dir}, // contains the fifo
	} {
		if err := StorePaths(tar.NewWriter(io.Discard), paths); err == nil {
			t.Errorf("StorePaths(%q) succeeded", paths)
		}
	}
}

func TestEntries(t *testing.T) {
	tests := []struct {
		name    string
		entries []Entry
		want    []string // "name type mode target data"
		wantErr bool
	}{
		{
			name: "parents synthesised and sorted",
			entries: []Entry{
				{Name: "usr/bin/env", Type: tar.TypeSymlink, Mode: 0o777, Target: "/bin/env"},
				{Name: "tmp", Type: tar.TypeDir, Mode: 0o1777},
				{Name: "etc/passwd", Type: tar.TypeReg, Mode: 0o644, Data: []byte("root:x:0:0::/root:/bin/sh\n")},
				{Name: "etc", Type: tar.TypeDir, Mode: 0o711},
				{Name: "bin-x", Type: tar.TypeReg, Mode: 0o755},
				{Name: "bin/sh", Type: tar.TypeSymlink, Mode: 0o777, Target: "bash"},
			},
			want: []string{
				"bin-x 0 755  ",
				"bin/ 5 755  ",
				"bin/sh 2 777 bash ",
				"etc/ 5 711  ",
				"etc/passwd 0 644  root:x:0:0::/root:/bin/sh\n",
				"tmp/ 5 1777  ",
				"usr/ 5 755  ",
				"usr/bin/ 5 755  ",
				"usr/bin/env 2 777 /bin/env ",
			},
		},
		{name: "empty", entries: nil, want: nil},
		{name: "duplicate", wantErr: true, entries: []Entry{
			{Name: "a", Type: tar.TypeDir, Mode: 0o755}, {Name: "a", Type: tar.TypeDir, Mode: 0o755},
		}},
		{name: "below a symlink", wantErr: true, entries: []Entry{
			{Name: "bin", Type: tar.TypeSymlink, Mode: 0o777, Target: "usr/bin"}, {Name: "bin/sh", Type: tar.TypeReg},
		}},
		{name: "absolute name", wantErr: true, entries: []Entry{{Name: "/etc", Type: tar.TypeDir}}},
		{name: "unclean name", wantErr: true, entries: []Entry{{Name: "etc/../x", Type: tar.TypeDir}}},
		{name: "trailing slash", wantErr: true, entries: []Entry{{Name: "etc/", Type: tar.TypeDir}}},
		{name: "dot-dot", wantErr: true, entries: []Entry{{Name: "../x", Type: tar.TypeReg}}},
		{name: "empty name", wantErr: true, entries: []Entry{{Type: tar.TypeDir}}},
		{name: "hard link type", wantErr: true, entries: []Entry{{Name: "x", Type: tar.TypeLink, Target: "y"}}},
		{name: "symlink without target", wantErr: true, entries: []Entry{{Name: "x", Type: tar.TypeSymlink}}},
		{name: "mode with type bits", wantErr: true, entries: []Entry{{Name: "x", Type: tar.TypeReg, Mode: 0o100644}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var buf bytes.Buffer
			tw := tar.NewWriter(&buf)
			err := Entries(tw, tt.entries)
			if (err != nil) != tt.wantErr {
				t.Fatalf("Entries error = %v, want error %v", err, tt.wantErr)
			}
			if err != nil {
				return
			}
			tw.Close()
			got, names := readTar(t, buf.Bytes())
			var lines []string
			for _, n := range names {
				e := got[n]
				lines = append(lines, n+" "+string(rune(e.typ))+" "+strconv.FormatInt(e.mode, 8)+" "+e.target+" "+e.data)
			}
			if !slices.Equal(lines, tt.want) {
				t.Errorf("entries:\n%q\nwant\n%q", lines, tt.want)
			}
		})
	}
}

func BenchmarkPack(b *testing.B) {
	// ~50 MB in 200 files, half random (incompressible), half repetitive.
	dir := filepath.Join(b.TempDir(), "store", "bench")
	r := rand.New(rand.NewPCG(1, 2))
	var total int64
	for i := range 200 {
		data := make([]byte, 256<<10)
		if i%2 == 0 {
			for j := range data {
				data[j] = byte(r.Uint32())
			}
		} else {
			for j := range data {
				data[j] = "the quick brown fox "[j%20] ^ byte(j/4096)
			}
		}
		file := filepath.Join(dir, string(rune('a'+i%26)), string(rune('a'+i/26))+".bin")
		os.MkdirAll(filepath.Dir(file), 0o755)
		if err := os.WriteFile(file, data, 0o444); err != nil {
			b.Fatal(err)
		}
		total += int64(len(data))
	}
	b.SetBytes(total)
	for b.Loop() {
		if _, err := PackWith(io.Discard, Options{Format: Gzip, Level: 0}, func(tw *tar.Writer) error { return StorePaths(tw, []string{dir}) }); err != nil {
			b.Fatal(err)
		}
	}
}

// A Listing writes what StorePaths writes, knows its content size before
// reading a byte, and refuses a file that changed size since it was listed.
func TestListStorePaths(t *testing.T) {
	_, paths := fixture(t)
	l, err := ListStorePaths(paths)
	if err != nil {
		t.Fatal(err)
	}
	var listed, direct bytes.Buffer
	if err := writeTar(&listed, l.Write); err != nil {
		t.Fatal(err)
	}
	if err := writeTar(&direct, func(tw *tar.Writer) error { return StorePaths(tw, paths) }); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(listed.Bytes(), direct.Bytes()) {
		t.Error("Listing.Write and StorePaths wrote different tars")
	}
	entries, _ := readTar(t, listed.Bytes())
	var want int64
	for _, e := range entries {
		want += int64(len(e.data))
	}
	if l.Size() != want {
		t.Errorf("Size %d, want %d (the file contents in the tar)", l.Size(), want)
	}
	// Listing a path twice counts it once.
	if l2, err := ListStorePaths(append(paths, paths[2])); err != nil || l2.Size() != want {
		t.Errorf("path listed twice: size %d, %v; want %d", l2.Size(), err, want)
	}

	grown := filepath.Join(t.TempDir(), "store", "eee-grows")
	if err := os.MkdirAll(grown, 0o755); err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(grown, "f")
	if err := os.WriteFile(file, []byte("short"), 0o644); err != nil {
		t.Fatal(err)
	}
	l, err = ListStorePaths([]string{grown})
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(file, []byte("s"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := writeTar(io.Discard, l.Write); err == nil || !strings.Contains(err.Error(), "shrank") {
		t.Errorf("file shrunk since listing: %v, want an error", err)
	}
}

// writeTar writes a tar with write and closes it.
func writeTar(w io.Writer, write func(*tar.Writer) error) error {
	tw := tar.NewWriter(w)
	if err := write(tw); err != nil {
		return err
	}
	return tw.Close()
}

// TarSize is the bytes of the tar Write makes, long names too; Progress
// hears every one of them.
func TestTarSizeAndProgress(t *testing.T) {
	dir := t.TempDir()
	long := filepath.Join(dir, strings.Repeat("d", 120), strings.Repeat("n", 90))
	deep := filepath.Join(dir, strings.Repeat("x", 99), strings.Repeat("y", 99), strings.Repeat("z", 99))
	for _, f := range []string{long, deep} {
		if err := os.MkdirAll(filepath.Dir(f), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	for f, size := range map[string]int{filepath.Join(dir, "a"): 0, filepath.Join(dir, "b"): 1, filepath.Join(dir, "c"): 513, long: 5000, deep: 7} {
		if err := os.WriteFile(f, bytes.Repeat([]byte("x"), size), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Symlink(strings.Repeat("t", 150), filepath.Join(dir, "link")); err != nil {
		t.Fatal(err)
	}
	l, err := ListStorePaths([]string{dir})
	if err != nil {
		t.Fatal(err)
	}
	var heard int64
	layer, err := PackWith(io.Discard, Options{Progress: func(n int64) { heard += n }}, l.Write)
	if err != nil {
		t.Fatal(err)
	}
	if l.TarSize() != layer.TarSize || heard != layer.TarSize {
		t.Errorf("TarSize %d, Progress heard %d, the tar has %d", l.TarSize(), heard, layer.TarSize)
	}
}
