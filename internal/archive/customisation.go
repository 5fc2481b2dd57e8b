package archive

import (
	"archive/tar"
	"fmt"
	"io/fs"
	"maps"
	"os"
	"path"
	"slices"
	"strings"
)

// Info is what the image configuration needs to know about the
// customisation layer.
//
// Its fields are manifest.Runtime's, in the same order, so that the
// builder converts one into the other (manifest.Runtime(info)) and a new
// fact is added in both or neither compiles.
type Info struct {
	Path     string // value for PATH: "/bin", then "/usr/bin" and "/sbin" when the image has them
	CertFile string // "/etc/ssl/certs/ca-bundle.crt" when a root provides CA certificates, else ""
	Shell    string // "/bin/bash" if bash ended up in /bin, else ""
	// Program is the absolute path of the image's one main program
	// (Setup.Programs), or "".
	Program string
	User    string // "65532:65532" when the image runs as nonroot (Setup.NonRoot), else "" (root)
	Home    string // the home of User ("/home/nonroot"), else ""
}

// Setup says what the customisation layer sets up besides the roots'
// files. Its zero value is a root image.
type Setup struct {
	// NonRoot adds the user and group nonroot (NonRootID) with its home
	// NonRootHome, owned by it, and names them in Info.User and Info.Home.
	NonRoot bool
	// Programs are the main programs of the requested packages, one per
	// package that declares meta.mainProgram, as absolute paths the way
	// nixpkgs' lib.getExe spells them ("/nix/store/…-hello/bin/hello").
	// When there is exactly one (duplicates count once) and it is a file
	// of a root, Info.Program names it.
	Programs []string
}

// NonRootID is the uid and gid of the user nonroot: 65532, the convention
// of distroless and Chainguard images, so that security policies and
// volume ownership written for those images fit these.
const NonRootID = 65532

// NonRootHome is the home directory of nonroot, as in distroless images.
const NonRootHome = "/home/nonroot"

// nonRootHomeMode: the home is 0755, not 0700. A container has one user,
// so 0700 protects from no one; 0755 still lets a process that an
// orchestrator runs under another uid (Kubernetes runAsUser, OpenShift's
// arbitrary uids) read what the image put there, while only nonroot can
// write. Files a program wants private it creates with its own mode.
const nonRootHomeMode = 0o755

// mergedDirs are the top-level directories of the roots that are merged
// into the image's root.
var mergedDirs = []string{"bin", "etc", "lib", "sbin", "share"}

// certNames are the names under etc/ssl/certs a CA bundle is looked up by,
// and linked as, in order of preference.
var certNames = []string{"ca-bundle.crt", "ca-certificates.crt"}

// Generated files of every image.
const (
	passwd = "root:x:0:0:System administrator:/root:/bin/sh\n" +
		"nobody:x:65534:65534:Unprivileged account:/var/empty:/sbin/nologin\n"
	group = "root:x:0:\n" +
		"nogroup:x:65534:\n"
	// Added by Setup.NonRoot; the login shell is root's, since /bin/sh
	// exists whenever the image has a shell to log in with.
	nonRootPasswd = "nonroot:x:65532:65532:Unprivileged user:/home/nonroot:/bin/sh\n"
	nonRootGroup  = "nonroot:x:65532:\n"
	nsswitch      = "passwd: files\n" +
		"group: files\n" +
		"shadow: files\n" +
		"hosts: files dns\n"
)

// Customisation builds the entries of the customisation layer for an image
// whose top-level packages are roots (realised store paths, in request
// order), reading the roots from the file system. See CustomisationFS.
func Customisation(roots []string, setup Setup) ([]Entry, Info, error) {
	return CustomisationFS(os.DirFS("/"), roots, setup)
}

// CustomisationFS is Customisation reading from fsys, which stands for the
// file system root: root "/nix/store/x" is read as "nix/store/x". Symlinks
// in the result still point to the absolute root paths.
//
// The layer it describes, like nixpkgs' buildEnv:
//
//   - The directories bin, sbin, lib, share and etc of every root are
//     merged into /: they become real directories whose entries are
//     symlinks to the store, e.g. bin/hello → /nix/store/…-hello/bin/hello.
//     A directory that several roots have is made real too and its children
//     are merged the same way; a directory only one root has is a single
//     symlink. A symlink to a directory counts as that directory.
//   - Conflicts: when roots have different things at the same place, the
//     root that comes first in roots wins. If the winner has a directory
//     there, later roots' directories are merged into it and their other
//     files are dropped. The order of the request thus decides, the same
//     way every time.
//   - Generated files win over package-provided ones: /etc/passwd (root and
//     nobody), /etc/group (root and nogroup), /etc/nsswitch.conf, /tmp (mode
//     01777) and /root (0700) are always present, and packages' files at
//     those names are skipped. The image must be usable as root whatever
//     packages it holds.
//   - With setup.NonRoot, /etc/passwd and /etc/group also have nonroot
//     (65532:65532), whose home /home/nonroot (0755) it owns; /tmp stays
//     01777, so the user can write both. Nothing else differs: the store
//     paths' layers of a nonroot image are those of the root image.
//   - /usr/bin/env → /bin/env when /bin/env exists, so that "#!/usr/bin/env"
//     scripts run; /bin/sh → /bin/bash when no root provides bin/sh but one
//     provides bin/bash.
//   - CA certificates: the first root with etc/ssl/certs/ca-bundle.crt (or
//     else ca-certificates.crt) provides the bundle, linked under both names
//     in /etc/ssl/certs; Info.CertFile then names it.
//   - Info.Program is the one main program of setup.Programs if it is an
//     executable file (symlinks followed) inside one of the roots: a
//     package that names a program it does not have gets no Cmd rather
//     than one that cannot start.
//
// The entries are sorted by name and include all parent directories; the
// same roots and files give the same entries.
func CustomisationFS(fsys fs.FS, roots []string, setup Setup) ([]Entry, Info, error) {
	m := &merger{fsys: fsys, reserved: map[string]bool{}, forced: map[string]bool{}}
	var gen []Entry
	add := func(e Entry) {
		gen = append(gen, e)
		m.reserved[e.Name] = true
		for dir := path.Dir(e.Name); dir != "."; dir = path.Dir(dir) {
			m.forced[dir] = true
		}
	}
	add(Entry{Name: "tmp", Type: tar.TypeDir, Mode: 0o1777})
	add(Entry{Name: "root", Type: tar.TypeDir, Mode: 0o700})
	users, groups := passwd, group
	var info Info
	if setup.NonRoot {
		users, groups = users+nonRootPasswd, groups+nonRootGroup
		add(Entry{Name: fsName(NonRootHome), Type: tar.TypeDir, Mode: nonRootHomeMode, Uid: NonRootID, Gid: NonRootID})
		info.User = fmt.Sprintf("%d:%d", NonRootID, NonRootID)
		info.Home = NonRootHome
	}
	add(Entry{Name: "etc/passwd", Type: tar.TypeReg, Mode: 0o644, Data: []byte(users)})
	add(Entry{Name: "etc/group", Type: tar.TypeReg, Mode: 0o644, Data: []byte(groups)})
	add(Entry{Name: "etc/nsswitch.conf", Type: tar.TypeReg, Mode: 0o644, Data: []byte(nsswitch)})

	var sources []source
	seen := map[string]bool{}
	for _, root := range roots {
		if !path.IsAbs(root) {
			return nil, Info{}, fmt.Errorf("root %q: not absolute", root)
		}
		root = path.Clean(root)
		if seen[root] {
			continue
		}
		seen[root] = true
		name := fsName(root)
		if _, err := fs.Stat(fsys, name); err != nil {
			return nil, Info{}, fmt.Errorf("root %s: %w", root, err)
		}
		sources = append(sources, source{name: name, target: root})
	}
	info.Program = mainProgram(fsys, sources, setup.Programs)

	if bundle := findCerts(fsys, sources); bundle != "" {
		for _, n := range certNames {
			add(Entry{Name: "etc/ssl/certs/" + n, Type: tar.TypeSymlink, Mode: 0o777, Target: bundle})
		}
		info.CertFile = "/etc/ssl/certs/" + certNames[0]
	}

	for _, top := range mergedDirs {
		var dirs []source
		for _, s := range sources {
			if child := s.child(top); m.isDir(child.name) {
				dirs = append(dirs, child)
			}
		}
		if len(dirs) > 0 {
			if err := m.merge(top, dirs); err != nil {
				return nil, Info{}, err
			}
		}
	}

	has := map[string]byte{}
	for _, e := range m.entries {
		has[e.Name] = e.Type
	}
	if t, ok := has["bin/env"]; ok && t != tar.TypeDir {
		add(Entry{Name: "usr/bin/env", Type: tar.TypeSymlink, Mode: 0o777, Target: "/bin/env"})
	}
	if t, ok := has["bin/bash"]; ok && t != tar.TypeDir {
		info.Shell = "/bin/bash"
		if _, ok := has["bin/sh"]; !ok {
			add(Entry{Name: "bin/sh", Type: tar.TypeSymlink, Mode: 0o777, Target: "/bin/bash"})
		}
	}

	entries, err := complete(append(m.entries, gen...))
	if err != nil {
		return nil, Info{}, err
	}
	dirs := map[string]bool{}
	for _, e := range entries {
		dirs[e.Name] = e.Type == tar.TypeDir
	}
	info.Path = "/bin" // even if empty: PATH without it surprises everyone
	for _, d := range []string{"usr/bin", "sbin", "usr/sbin"} {
		if dirs[d] {
			info.Path += ":/" + d
		}
	}
	return entries, info, nil
}

// mainProgram returns the one distinct program of programs if it is an
// executable file inside one of the sources, or "".
func mainProgram(fsys fs.FS, sources []source, programs []string) string {
	programs = slices.Compact(slices.Sorted(slices.Values(programs)))
	if len(programs) != 1 {
		return ""
	}
	p := programs[0]
	if !path.IsAbs(p) || path.Clean(p) != p {
		return ""
	}
	for _, s := range sources {
		if !strings.HasPrefix(p, s.target+"/") {
			continue
		}
		info, err := fs.Stat(fsys, fsName(p))
		if err == nil && info.Mode().IsRegular() && info.Mode().Perm()&0o111 != 0 {
			return p
		}
	}
	return ""
}

// fsName is the fs.FS name of an absolute, clean path.
func fsName(abs string) string {
	if abs == "/" {
		return "."
	}
	return strings.TrimPrefix(abs, "/")
}

// source is a file of a root: its fs.FS name and its absolute path, which
// symlinks point to.
type source struct{ name, target string }

func (s source) child(name string) source {
	return source{name: path.Join(s.name, name), target: path.Join(s.target, name)}
}

// findCerts returns the absolute path of the first CA bundle the sources
// provide, or "".
func findCerts(fsys fs.FS, sources []source) string {
	for _, s := range sources {
		for _, n := range certNames {
			c := s.child("etc/ssl/certs/" + n)
			if info, err := fs.Stat(fsys, c.name); err == nil && !info.IsDir() {
				return c.target
			}
		}
	}
	return ""
}

// merger merges directories of several roots into entries.
type merger struct {
	fsys     fs.FS
	reserved map[string]bool // generated entries: package files there are skipped
	forced   map[string]bool // parents of generated entries: must be real directories
	entries  []Entry
}

// isDir reports whether name is a directory, following symlinks.
func (m *merger) isDir(name string) bool {
	info, err := fs.Stat(m.fsys, name)
	return err == nil && info.IsDir()
}

// merge makes rel a real directory holding the children of dirs, which are
// in root order.
func (m *merger) merge(rel string, dirs []source) error {
	m.entries = append(m.entries, Entry{Name: rel, Type: tar.TypeDir, Mode: dirMode})

	type candidate struct {
		src   source
		isDir bool
	}
	children := map[string][]candidate{}
	for _, d := range dirs {
		list, err := fs.ReadDir(m.fsys, d.name)
		if err != nil {
			return fmt.Errorf("reading %s: %w", d.target, err)
		}
		for _, e := range list {
			c := candidate{src: d.child(e.Name()), isDir: e.IsDir()}
			if e.Type()&fs.ModeSymlink != 0 {
				c.isDir = m.isDir(c.src.name)
			}
			children[e.Name()] = append(children[e.Name()], c)
		}
	}

	for _, n := range slices.Sorted(maps.Keys(children)) {
		rel := path.Join(rel, n)
		cands := children[n]
		if m.reserved[rel] {
			continue
		}
		first := cands[0]
		if !first.isDir {
			if !m.forced[rel] {
				m.link(rel, first.src.target)
			}
			continue
		}
		var sub []source
		for _, c := range cands {
			if c.isDir {
				sub = append(sub, c.src)
			}
		}
		if len(sub) == 1 && !m.forced[rel] {
			m.link(rel, first.src.target)
			continue
		}
		if err := m.merge(rel, sub); err != nil {
			return err
		}
	}
	return nil
}

func (m *merger) link(rel, target string) {
	m.entries = append(m.entries, Entry{Name: rel, Type: tar.TypeSymlink, Mode: 0o777, Target: target})
}
