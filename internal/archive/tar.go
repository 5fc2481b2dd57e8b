package archive

import (
	"archive/tar"
	"bytes"
	"cmp"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strings"
	"time"
)

// epoch is the modification time of every entry: one second after the Unix
// epoch, the time Nix gives every file in the store.
var epoch = time.Unix(1, 0).UTC()

// dirMode is the mode of directories that are synthesised rather than
// copied: parents such as "nix/" and "nix/store/", and the directories of
// the customisation layer.
const dirMode = 0o755

// StorePaths writes the given store paths into tw as a deterministic tar.
//
// Paths must be absolute (they are normally under /nix/store, but any
// absolute path works, which tests rely on). Entries are named relative to
// "/", e.g. "nix/store/abc-hello/bin/hello"; the parent directories of every
// path ("nix/", "nix/store/") come first with mode 0755, and all entries are
// sorted by name. Permission bits are kept as on disk, symlinks stay
// symlinks with their target, and a store path that is itself a file or a
// symlink is written as such. Listing a path twice, or a path and one inside
// it, writes each entry once.
//
// Hard links are not preserved: a file with several links (Nix's
// auto-optimise-store links identical files across store paths) is written
// in full every time. A layer must be self-contained — a hard link can only
// point to an earlier entry of the same tar — and its bytes must not depend
// on whether the store happened to be optimised when it was packed.
//
// Sockets, devices and named pipes are an error: the Nix store has none.
func StorePaths(tw *tar.Writer, paths []string) error {
	l, err := ListStorePaths(paths)
	if err != nil {
		return err
	}
	return l.Write(tw)
}

// Listing is what StorePaths writes for some store paths, listed but not
// yet read: the walk of the file tree done, the file contents not. It lets
// a caller learn a layer's size before packing it (to pack the biggest
// layers first) without walking the tree twice.
type Listing struct {
	items map[string]item
	size  int64
}

// ListStorePaths walks paths as StorePaths does (same rules, same errors)
// and returns what it would write.
func ListStorePaths(paths []string) (*Listing, error) {
	l := &Listing{items: map[string]item{}}
	found := l.items
	for _, p := range paths {
		if !filepath.IsAbs(p) {
			return nil, fmt.Errorf("store path %q: not absolute", p)
		}
		p = filepath.Clean(p)
		if p == "/" {
			return nil, fmt.Errorf("store path %q: refusing to pack the root directory", p)
		}
		err := filepath.WalkDir(p, func(file string, d fs.DirEntry, err error) error {
			if err != nil {
				return err
			}
			info, err := d.Info()
			if err != nil {
				return err
			}
			it, err := diskItem(file, info)
			if err != nil {
				return err
			}
			if old, ok := found[it.name]; ok {
				l.size -= old.size
			}
			found[it.name] = it
			l.size += it.size
			return nil
		})
		if err != nil {
			return nil, fmt.Errorf("store path %s: %w", p, err)
		}
	}
	// Parents only where no path supplies the real directory.
	for _, p := range paths {
		for dir := filepath.Dir(filepath.Clean(p)); dir != "/"; dir = filepath.Dir(dir) {
			name := strings.TrimPrefix(filepath.ToSlash(dir), "/") + "/"
			if _, ok := found[name]; !ok {
				found[name] = item{name: name, typ: tar.TypeDir, mode: dirMode}
			}
		}
	}
	return l, nil
}

// Size is the bytes of file content the listing holds (the tar is a little
// larger: headers and padding).
func (l *Listing) Size() int64 { return l.size }

// TarSize is the bytes of the tar Write makes (the stream before
// compression): each entry's 512-byte header and its content padded to
// 512 bytes, and the two zero blocks that end it. It is exact for entries
// that fit USTAR; for one that needs PAX records (a long or non-ASCII
// name or link target) it counts one header and one block of records
// more, exact for names under about 450 bytes.
func (l *Listing) TarSize() int64 {
	n := int64(2 * blockSize)
	for _, it := range l.items {
		n += blockSize + (it.size+blockSize-1)/blockSize*blockSize
		if !fitsUSTAR(it.name) || len(it.target) > 100 || !isASCII(it.target) {
			n += 2 * blockSize
		}
	}
	return n
}

const blockSize = 512

// fitsUSTAR reports whether archive/tar writes name in a plain USTAR
// header: 100 bytes of name, or a split at a slash into a prefix of at
// most 155 and a name of at most 100 (as its splitUSTARPath does).
func fitsUSTAR(name string) bool {
	if !isASCII(name) {
		return false
	}
	if len(name) <= 100 {
		return true
	}
	n := len(name)
	if n > 156 {
		n = 156
	} else if name[n-1] == '/' {
		n--
	}
	i := strings.LastIndexByte(name[:n], '/')
	suffix := len(name) - i - 1
	return i > 0 && suffix <= 100 && suffix > 0 && i <= 155
}

func isASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] >= 0x80 {
			return false
		}
	}
	return true
}

// Write writes the listed entries into tw as a deterministic tar, reading
// the files now; a file whose size changed since it was listed is an error.
func (l *Listing) Write(tw *tar.Writer) error { return writeItems(tw, l.items) }

// diskItem describes the file at file, whose Lstat result is info.
func diskItem(file string, info fs.FileInfo) (item, error) {
	name := strings.TrimPrefix(filepath.ToSlash(file), "/")
	it := item{name: name, mode: tarMode(info.Mode())}
	switch m := info.Mode(); {
	case m.IsDir():
		it.typ, it.name = tar.TypeDir, name+"/"
	case m.IsRegular():
		it.typ, it.src, it.size = tar.TypeReg, file, info.Size()
	case m&fs.ModeSymlink != 0:
		target, err := os.Readlink(file)
		if err != nil {
			return item{}, err
		}
		it.typ, it.target = tar.TypeSymlink, target
	default:
		return item{}, fmt.Errorf("%s: unsupported file type %v", file, m.Type())
	}
	return it, nil
}

// tarMode converts a Go file mode into the mode field of a tar header:
// permission bits plus setuid, setgid and sticky.
func tarMode(m fs.FileMode) int64 {
	mode := int64(m.Perm())
	if m&fs.ModeSetuid != 0 {
		mode |= 0o4000
	}
	if m&fs.ModeSetgid != 0 {
		mode |= 0o2000
	}
	if m&fs.ModeSticky != 0 {
		mode |= 0o1000
	}
	return mode
}

// Entry is one file-system object of a synthesised layer (the
// customisation layer).
type Entry struct {
	Name   string // relative to /, e.g. "etc/passwd", "bin", "usr/bin/env"
	Type   byte   // tar.TypeDir, tar.TypeReg or tar.TypeSymlink
	Mode   int64  // permission bits, e.g. 0755, 01777, 0644
	Target string // symlink target
	Data   []byte // regular file content
	// Uid and Gid own the entry: 0 (root) unless it must belong to the
	// image's user, as the home of nonroot does.
	Uid, Gid int
}

// Entries writes entries to tw sorted by name, adding any missing parent
// directory (mode 0755), with the same header conventions as StorePaths.
// A name that is not clean and relative, two entries with the same name,
// or an entry below a non-directory is an error.
func Entries(tw *tar.Writer, entries []Entry) error {
	entries, err := complete(entries)
	if err != nil {
		return err
	}
	items := make(map[string]item, len(entries))
	for _, e := range entries {
		it := item{name: e.Name, typ: e.Type, mode: e.Mode, uid: e.Uid, gid: e.Gid, target: e.Target, data: e.Data, size: int64(len(e.Data))}
		if e.Type == tar.TypeDir {
			it.name += "/"
		}
		items[it.name] = it
	}
	return writeItems(tw, items)
}

// complete validates entries and returns them with their missing parent
// directories added, sorted by name.
func complete(entries []Entry) ([]Entry, error) {
	byName := make(map[string]Entry, len(entries))
	for _, e := range entries {
		if err := validate(e); err != nil {
			return nil, err
		}
		if _, dup := byName[e.Name]; dup {
			return nil, fmt.Errorf("entry %q: duplicate name", e.Name)
		}
		byName[e.Name] = e
	}
	for _, e := range entries {
		for dir := path.Dir(e.Name); dir != "."; dir = path.Dir(dir) {
			parent, ok := byName[dir]
			if !ok {
				byName[dir] = Entry{Name: dir, Type: tar.TypeDir, Mode: dirMode}
			} else if parent.Type != tar.TypeDir {
				return nil, fmt.Errorf("entry %q: parent %q is not a directory", e.Name, dir)
			}
		}
	}
	out := make([]Entry, 0, len(byName))
	for _, e := range byName {
		out = append(out, e)
	}
	slices.SortFunc(out, func(a, b Entry) int { return cmp.Compare(a.Name, b.Name) })
	return out, nil
}

func validate(e Entry) error {
	if e.Name == "" || e.Name == "." || path.IsAbs(e.Name) || path.Clean(e.Name) != e.Name ||
		e.Name == ".." || strings.HasPrefix(e.Name, "../") {
		return fmt.Errorf("entry %q: name must be clean and relative to /", e.Name)
	}
	if e.Mode&^0o7777 != 0 {
		return fmt.Errorf("entry %q: mode %o has more than permission bits", e.Name, e.Mode)
	}
	// 0o7777777 is the largest id the USTAR header holds: beyond it a
	// PAX record would change the format of the whole layer.
	if e.Uid < 0 || e.Gid < 0 || e.Uid > 0o7777777 || e.Gid > 0o7777777 {
		return fmt.Errorf("entry %q: owner %d:%d out of range", e.Name, e.Uid, e.Gid)
	}
	switch e.Type {
	case tar.TypeDir:
		if e.Target != "" || e.Data != nil {
			return fmt.Errorf("entry %q: directory with target or data", e.Name)
		}
	case tar.TypeReg:
		if e.Target != "" {
			return fmt.Errorf("entry %q: regular file with a symlink target", e.Name)
		}
	case tar.TypeSymlink:
		if e.Target == "" || e.Data != nil {
			return fmt.Errorf("entry %q: symlink needs a target and no data", e.Name)
		}
	default:
		return fmt.Errorf("entry %q: unsupported type %q", e.Name, e.Type)
	}
	return nil
}

// item is one tar entry to write: name as in the header (directories end
// in "/"), and its content from src (a file on disk) or data.
type item struct {
	name   string
	typ    byte
	mode   int64
	uid    int
	gid    int
	target string
	size   int64
	src    string
	data   []byte
}

// writeItems writes items sorted by name. Sorting the full names (rather
// than walking each directory in turn) makes the order easy to state and
// check — the names of the tar are sorted — and still puts every directory
// before its contents, because "a/" is a prefix of "a/x".
func writeItems(tw *tar.Writer, items map[string]item) error {
	names := make([]string, 0, len(items))
	for name := range items {
		names = append(names, name)
	}
	slices.Sort(names)
	for _, name := range names {
		if err := writeItem(tw, items[name]); err != nil {
			return fmt.Errorf("%s: %w", name, err)
		}
	}
	return nil
}

func writeItem(tw *tar.Writer, it item) error {
	hdr := &tar.Header{
		Typeflag: it.typ,
		Name:     it.name,
		Linkname: it.target,
		Mode:     it.mode,
		Uid:      it.uid,
		Gid:      it.gid,
		ModTime:  epoch,
	}
	if it.typ == tar.TypeReg {
		hdr.Size = it.size
	}
	if err := tw.WriteHeader(hdr); err != nil {
		return err
	}
	if it.typ != tar.TypeReg {
		return nil
	}
	var body io.Reader = bytes.NewReader(it.data)
	if it.src != "" {
		f, err := os.Open(it.src)
		if err != nil {
			return err
		}
		defer f.Close()
		body = f
	}
	// CopyN, not Copy: a file that changed size since it was listed must
	// fail rather than produce a corrupt entry.
	if _, err := io.CopyN(tw, body, it.size); err != nil {
		if err == io.EOF {
			return fmt.Errorf("file shrank while packing")
		}
		return err
	}
	return nil
}
