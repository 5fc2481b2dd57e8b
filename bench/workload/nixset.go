package main

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"hash/fnv"
	"io/fs"
	"maps"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing/fstest"

	"github.com/nixery/nixery/bench/pkgset"
	"github.com/nixery/nixery/bench/storegen"
)

// This file writes a generated package set (bench/pkgset) as a real Nix
// package set, shaped like nixpkgs and like demo/pkgs: a default.nix that
// is a function of { system ? …, ... } returning attributes (nested ones
// such as python3Packages.numpy included), which NIXERY_PKGS_PATH can
// point at.
//
// Every store path of the set becomes a derivation whose output is
//
//   - a copy of a source directory that Go generated (bench/storegen's
//     mix of text, binary-like and incompressible files), imported with
//     builtins.path; the sha256 of the source's NAR is given, so that an
//     evaluation does not read the files again once they are in the store
//     (nixpkgs' sources are fixed-output too), and
//   - nix-support/runtime-dependencies, the output paths of the store
//     paths it refers to, one a line, so that Nix's reference scanning
//     records exactly the generated references.
//
// The builder is the machine's static busybox, imported as demo/pkgs does
// (bootstrap/busybox), so the set builds offline with nothing else.

// minSize is the smallest NAR size a store path is given: enough for a
// file of content besides the NAR's own structure at a small -scale.
const minSize = 4096

// nixSet is a package set written by writeNixSet.
type nixSet struct {
	Dir   string     // holds default.nix and what it imports
	Paths []*nixPath // sorted by store path name
	Attrs []string   // the attribute paths the set has, sorted
}

// nixPath is one store path of a nixSet.
type nixPath struct {
	Gen *pkgset.Path // the generated path: name, size, references
	// Want is the NAR size asked for: the generated size × scale, at
	// least minSize. NARSize is the NAR size the built output has (Nix's
	// narSize): Want to within a few bytes of padding.
	Want, NARSize int64
	SrcHash       string // sha256 of the source directory's NAR, hex
}

// storeNameRE is what the set's names are limited to: characters of Nix
// store path names that need no quoting in a Nix path or a shell word.
var storeNameRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9+._-]*$`)

// writeNixSet writes the store paths of paths (every reference among
// them) and the attributes of set that name one of them as a Nix package
// set under dir, with NAR sizes scaled by scale. busybox is a statically
// linked busybox (demo.FindBusybox).
func writeNixSet(dir string, set *pkgset.Set, paths []*pkgset.Path, scale float64, busybox string) (*nixSet, error) {
	if !(scale > 0) || math.IsInf(scale, 0) {
		return nil, fmt.Errorf("scale %v: want a number above 0", scale)
	}
	byPath := map[string]*pkgset.Path{}
	for _, p := range paths {
		if !storeNameRE.MatchString(p.Name) {
			return nil, fmt.Errorf("store path name %q: not a plain store path name", p.Name)
		}
		byPath[p.Path] = p
	}
	ns := &nixSet{Dir: dir}
	for _, p := range paths {
		for _, ref := range p.Refs {
			if byPath[ref] == nil {
				return nil, fmt.Errorf("%s refers to %s, which is not among the paths to write", p.Name, ref)
			}
		}
		want := max(minSize, int64(math.Round(float64(p.Size)*scale)))
		ns.Paths = append(ns.Paths, &nixPath{Gen: p, Want: want})
	}
	slices.SortFunc(ns.Paths, func(a, b *nixPath) int { return strings.Compare(a.Gen.Name, b.Gen.Name) })

	if err := copyFile(busybox, filepath.Join(dir, "bootstrap", "busybox"), 0o555); err != nil {
		return nil, fmt.Errorf("bootstrap busybox: %w", err)
	}
	// Fill the sources, one store path per core at a time.
	var wg sync.WaitGroup
	work := make(chan *nixPath)
	errs := make([]error, len(ns.Paths))
	index := map[*nixPath]int{}
	for i, p := range ns.Paths {
		index[p] = i
	}
	for range runtime.NumCPU() {
		wg.Go(func() {
			for p := range work {
				errs[index[p]] = p.fill(filepath.Join(dir, "src", p.Gen.Name), refsLen(p.Gen, byPath))
			}
		})
	}
	for _, p := range ns.Paths {
		work <- p
	}
	close(work)
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			return nil, fmt.Errorf("%s: %w", ns.Paths[i].Gen.Name, err)
		}
	}

	for attr, name := range set.Attrs {
		if p := set.Paths[name]; p != nil && byPath[p.Path] != nil {
			ns.Attrs = append(ns.Attrs, attr)
		}
	}
	slices.Sort(ns.Attrs)
	expr, err := ns.expression(set, byPath)
	if err != nil {
		return nil, err
	}
	if err := os.WriteFile(filepath.Join(dir, "default.nix"), []byte(expr), 0o644); err != nil {
		return nil, err
	}
	return ns, nil
}

// refsLen is the length of p's nix-support/runtime-dependencies: one
// store path a line. Nix's store paths of the set have the length of the
// generated ones (/nix/store/, 32 characters of hash, -name).
func refsLen(p *pkgset.Path, byPath map[string]*pkgset.Path) int64 {
	var n int64
	for _, ref := range p.Refs {
		if ref != p.Path {
			n += int64(len(byPath[ref].Path)) + 1
		}
	}
	return n
}

// fill writes p's source directory at dir, so that the output (the
// source plus a runtime-dependencies file of refsLen bytes) has a NAR of
// p.Want bytes, and records the source's NAR hash and the output's NAR
// size. The content depends only on p's name and Want.
func (p *nixPath) fill(dir string, refsLen int64) error {
	// The NAR bytes the output has beyond the source's: its nix-support
	// directory, measured on a tree of the same shape.
	support := fstest.MapFS{"nix-support/runtime-dependencies": {Data: make([]byte, refsLen)}}
	withSupport, err := writeNAR(nil, support, ".")
	if err != nil {
		return err
	}
	empty, err := writeNAR(nil, fstest.MapFS{}, ".")
	if err != nil {
		return err
	}
	extra := withSupport - empty
	target := p.Want - extra // the source's NAR size

	h := fnv.New64a()
	h.Write([]byte(p.Gen.Name))
	seed := h.Sum64()
	// file writes file number f with its content drawn from its own
	// stream, so that it can be rewritten with another size and the same
	// kind and name.
	file := func(f int, size int64) error {
		r := rand.New(rand.NewPCG(seed, uint64(f)))
		storegen.FileSize(r) // as drawn by the loop below
		data, name := storegen.Content(r, int(size), f)
		full := filepath.Join(dir, filepath.FromSlash(name))
		if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
			return err
		}
		return os.WriteFile(full, data, 0o444)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	// Files until the content is about the size asked for, then the last
	// file is grown to hit the size exactly (to NAR's 8-byte padding).
	// perFile is more than a file's NAR entry costs beyond its content
	// (about 200 bytes, plus about 150 for each new directory above it),
	// so that the files undershoot and the last one grows.
	const perFile = 600
	left := target - empty
	var last int
	var lastSize int64
	for f := 0; left > perFile || f == 0; f++ {
		r := rand.New(rand.NewPCG(seed, uint64(f)))
		size := max(1, min(storegen.FileSize(r), left-perFile))
		if err := file(f, size); err != nil {
			return err
		}
		last, lastSize = f, size
		left -= size + perFile
	}
	for range 3 {
		got, err := writeNAR(nil, os.DirFS(dir), ".")
		if err != nil {
			return err
		}
		if d := target - got; d != 0 && lastSize+d > 0 {
			lastSize += d
			if err := file(last, lastSize); err != nil {
				return err
			}
			continue
		}
		break
	}
	sum := sha256.New()
	n, err := writeNAR(sum, os.DirFS(dir), ".")
	if err != nil {
		return err
	}
	p.SrcHash = hex.EncodeToString(sum.Sum(nil))
	p.NARSize = n + extra
	return nil
}

// expression is the default.nix of the set.
func (ns *nixSet) expression(set *pkgset.Set, byPath map[string]*pkgset.Path) (string, error) {
	var b strings.Builder
	b.WriteString(`# A generated nixpkgs-shaped package set (bench/pkgset), written by
# bench/workload: every store path is a copy of a generated source
# directory plus nix-support/runtime-dependencies naming the store paths
# it refers to. Built offline from the static busybox in bootstrap/.
{ system ? builtins.currentSystem, ... }:

let
  bb = builtins.path { path = ./bootstrap; name = "bootstrap-busybox"; };

  build = ''
    set -eu
    b=${bb}/busybox
    $b cp -r "$src" "$out"
    $b chmod -R u+w "$out"
    $b mkdir "$out/nix-support"
    for d in $deps; do echo "$d"; done > "$out/nix-support/runtime-dependencies"
  '';

  # mk name sha256 deps: the store path called name, a copy of src/name
  # (whose NAR has that sha256) referring to deps.
  mk = name: sha256: deps: derivation {
    inherit name system deps;
    src = builtins.path { path = ./src + "/${name}"; name = "${name}-src"; inherit sha256; };
    builder = "${bb}/busybox";
    args = [ "sh" "-c" build ];
  };

  p = {
`)
	for _, np := range ns.Paths {
		var deps []string
		for _, ref := range np.Gen.Refs {
			if ref != np.Gen.Path {
				deps = append(deps, fmt.Sprintf("p.%q", byPath[ref].Name))
			}
		}
		fmt.Fprintf(&b, "    %q = mk %q %q [ %s ];\n", np.Gen.Name, np.Gen.Name, np.SrcHash, strings.Join(deps, " "))
	}
	b.WriteString("  };\nin\n")
	// Nested attribute sets: "python3Packages.numpy" is
	// { python3Packages = { numpy = …; }; }.
	type node struct {
		value    string
		children map[string]*node
	}
	root := &node{children: map[string]*node{}}
	for _, attr := range ns.Attrs {
		n := root
		for _, part := range strings.Split(attr, ".") {
			if n.value != "" {
				return "", fmt.Errorf("attribute %s: %s is a package, not a set", attr, part)
			}
			c := n.children[part]
			if c == nil {
				c = &node{children: map[string]*node{}}
				n.children[part] = c
			}
			n = c
		}
		if len(n.children) > 0 {
			return "", fmt.Errorf("attribute %s is a set and a package", attr)
		}
		n.value = fmt.Sprintf("p.%q", set.Attrs[attr])
	}
	var write func(n *node, indent string)
	write = func(n *node, indent string) {
		b.WriteString("{\n")
		for _, k := range slices.Sorted(maps.Keys(n.children)) {
			c := n.children[k]
			fmt.Fprintf(&b, "%s  %q = ", indent, k)
			if c.value != "" {
				b.WriteString(c.value + ";\n")
			} else {
				write(c, indent+"  ")
				b.WriteString(";\n")
			}
		}
		b.WriteString(indent + "}")
	}
	write(root, "")
	b.WriteString("\n")
	return b.String(), nil
}

// copyFile copies src to dst (directories made) with mode.
func copyFile(src, dst string, mode fs.FileMode) error {
	data, err := os.ReadFile(src)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
		return err
	}
	return os.WriteFile(dst, data, mode)
}
