// Package demo ships Nixery's own offline package set: a small Nix package
// set shaped like nixpkgs (hello, bashInteractive, coreutils, git, python3
// with withPackages and python3Packages, a nested xorg set, shared
// "libraries", and test fixtures such as a broken and a slow package) that
// real Nix builds from nothing but a static busybox. Tests and local
// experiments use it where nixpkgs and a binary cache are out of reach.
//
// The Nix files are embedded; Extract writes them into a directory, which
// then serves as a "path" package source (NIXERY_PKGS_PATH), for example:
//
//	bb, _ := demo.FindBusybox()
//	_ = demo.Extract(dir, bb)
//	// nix-build dir -A hello
//
// The directory is a flake too (flake.nix, without inputs: its
// legacyPackages for x86_64-linux and aarch64-linux are the same set), so
// NIXERY_PKGS_FLAKE=path:<dir> serves it, and so does git+file:// of a git
// repository holding it with bootstrap/busybox committed.
package demo

import (
	"bytes"
	"debug/elf"
	"embed"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
)

// pkgs holds the package set; "all:" keeps files whose names start with
// "." or "_" as well.
//
//go:embed all:pkgs
var pkgs embed.FS

// bootstrapBusybox is where the package set expects its only input, the
// static busybox that every derivation is built and run with.
const bootstrapBusybox = "bootstrap/busybox"

// Extract writes the demo package set into dir (created if needed) and
// copies the busybox binary at busybox (which must be statically linked,
// see FindBusybox) to dir/bootstrap/busybox with mode 0555.
//
// Extract is idempotent: files that already have the right content are
// left alone, and every other file is written to a temporary name and
// renamed into place, so that a concurrent reader (say, a Nix evaluation
// of the same directory) never sees a half-written file.
func Extract(dir, busybox string) error {
	err := fs.WalkDir(pkgs, "pkgs", func(name string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel("pkgs", filepath.FromSlash(name))
		if err != nil {
			return err
		}
		dst := filepath.Join(dir, rel)
		if d.IsDir() {
			return os.MkdirAll(dst, 0o755)
		}
		data, err := pkgs.ReadFile(name)
		if err != nil {
			return err
		}
		return writeFile(dst, data, 0o644)
	})
	if err != nil {
		return fmt.Errorf("extract demo package set: %w", err)
	}
	data, err := os.ReadFile(busybox)
	if err != nil {
		return fmt.Errorf("extract demo package set: read busybox: %w", err)
	}
	dst := filepath.Join(dir, filepath.FromSlash(bootstrapBusybox))
	if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
		return fmt.Errorf("extract demo package set: %w", err)
	}
	if err := writeFile(dst, data, 0o555); err != nil {
		return fmt.Errorf("extract demo package set: %w", err)
	}
	return nil
}

// writeFile atomically replaces path with data and mode, unless it holds
// exactly that already.
func writeFile(path string, data []byte, mode fs.FileMode) error {
	if fi, err := os.Stat(path); err == nil && fi.Mode().IsRegular() && fi.Mode().Perm() == mode {
		if old, err := os.ReadFile(path); err == nil && bytes.Equal(old, data) {
			return nil
		}
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), ".tmp-"+filepath.Base(path)+"-*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name()) // fails harmlessly once renamed
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Chmod(mode); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), path)
}

// FindBusybox returns the path of a statically linked busybox: the first
// one named busybox on PATH, or /bin/busybox. The package set's programs
// run inside container images that have no C library of their own, which
// is why a dynamically linked busybox will not do.
func FindBusybox() (string, error) {
	var candidates []string
	if p, err := exec.LookPath("busybox"); err == nil {
		candidates = append(candidates, p)
	}
	candidates = append(candidates, "/bin/busybox")
	var dynamic []string
	for _, p := range candidates {
		static, err := isStatic(p)
		if err != nil {
			continue
		}
		if static {
			return p, nil
		}
		dynamic = append(dynamic, p)
	}
	if len(dynamic) > 0 {
		return "", fmt.Errorf("busybox at %s is dynamically linked; install a static one (Debian: apt-get install busybox-static)", dynamic[0])
	}
	return "", errors.New("no busybox found on PATH or at /bin/busybox; install a static one (Debian: apt-get install busybox-static)")
}

// isStatic reports whether the ELF executable at path has no program
// interpreter (dynamic loader).
func isStatic(path string) (bool, error) {
	f, err := elf.Open(path)
	if err != nil {
		return false, err
	}
	defer f.Close()
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			return false, nil
		}
	}
	return true, nil
}
