package main

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nixery/nixery/bench/pkgset"
	"github.com/nixery/nixery/internal/demo"
	"github.com/nixery/nixery/internal/need"
)

// TestNixSetIsTheGeneratedSet writes the closure of two images of the
// workload at a tiny scale as a Nix package set, builds it with real Nix
// and checks that what Nix recorded is the generated set: every store
// path's references (Nix's reference scanning of the output) are the
// generated references, and its NAR size is the one computed, within a
// few percent of the size asked for. So the benchmark cannot drift from
// the set it claims to measure without failing here.
func TestNixSetIsTheGeneratedSet(t *testing.T) {
	need.Tool(t, "nix-build")
	need.Tool(t, "nix-store")
	busybox, err := demo.FindBusybox()
	if err != nil {
		need.Skip(t, err)
	}
	set := pkgset.Generate(1)
	closure, attrs, err := workloadClosure(set, []string{"shell/git", "python3Packages.requests"})
	if err != nil {
		t.Fatal(err)
	}
	tmp := t.TempDir()
	const scale = 0.002 // 31 MiB of glibc becomes 64 KiB; most paths get minSize
	ns, err := writeNixSet(filepath.Join(tmp, "pkgs"), set, closure, scale, busybox)
	if err != nil {
		t.Fatal(err)
	}
	if len(ns.Paths) != len(closure) {
		t.Fatalf("%d store paths written, want %d", len(ns.Paths), len(closure))
	}
	for _, a := range attrs {
		if !slices.Contains(ns.Attrs, a) {
			t.Errorf("attribute %s missing from the set (has %q)", a, ns.Attrs)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	outs, err := realise(ctx, ns.Dir, attrs, filepath.Join(tmp, "result"))
	if err != nil {
		t.Fatal(err)
	}

	// Every store path of the closure, by name, from Nix's closure of
	// the outputs.
	nixPaths := map[string]string{}
	for _, p := range lines(t, "nix-store", append([]string{"--query", "--requisites"}, outs...)...) {
		nixPaths[nameOf(p)] = p
	}
	byPath := set.ByPath()
	for _, p := range ns.Paths {
		out, ok := nixPaths[p.Gen.Name]
		if !ok {
			t.Errorf("%s: not in Nix's closure of the workload's packages", p.Gen.Name)
			continue
		}
		var want, got []string
		for _, ref := range p.Gen.Refs {
			if ref != p.Gen.Path {
				want = append(want, byPath[ref].Name)
			}
		}
		for _, ref := range lines(t, "nix-store", "--query", "--references", out) {
			if ref != out {
				got = append(got, nameOf(ref))
			}
		}
		slices.Sort(want)
		slices.Sort(got)
		if !slices.Equal(got, want) {
			t.Errorf("%s: Nix recorded references %q, generated %q", p.Gen.Name, got, want)
		}
		sizes := lines(t, "nix-store", "--query", "--size", out)
		narSize, err := strconv.ParseInt(sizes[0], 10, 64)
		if err != nil {
			t.Fatalf("nix-store --query --size %s: %q", out, sizes)
		}
		if narSize != p.NARSize {
			t.Errorf("%s: NAR size %d, computed %d", p.Gen.Name, narSize, p.NARSize)
		}
		if d := float64(narSize-p.Want) / float64(p.Want); d < -0.01 || d > 0.01 {
			t.Errorf("%s: NAR size %d, asked for %d (%+.1f %%)", p.Gen.Name, narSize, p.Want, 100*d)
		}
	}
	if len(nixPaths) != len(ns.Paths) {
		t.Errorf("Nix's closure has %d store paths, the generated one %d", len(nixPaths), len(ns.Paths))
	}
}

// TestNARIsNixs checks writeNAR against nix-store --dump on a tree of
// the shapes the generated sources have (nested directories, empty and
// padded files, an executable).
func TestNARIsNixs(t *testing.T) {
	need.Tool(t, "nix-store")
	dir := filepath.Join(t.TempDir(), "tree")
	for name, size := range map[string]int{"lib/libx.so": 4097, "share/doc/a.txt": 0, "share/doc/b": 8, "z": 13} {
		full := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(full, bytes.Repeat([]byte{'x'}, size), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Chmod(filepath.Join(dir, "z"), 0o755); err != nil {
		t.Fatal(err)
	}
	want, err := exec.Command("nix-store", "--dump", dir).Output()
	if err != nil {
		t.Fatalf("nix-store --dump: %v", err)
	}
	var got bytes.Buffer
	n, err := writeNAR(&got, os.DirFS(dir), ".")
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got.Bytes(), want) || n != int64(len(want)) {
		t.Errorf("writeNAR wrote %d bytes (counted %d), nix-store --dump %d; equal: %v", got.Len(), n, len(want), bytes.Equal(got.Bytes(), want))
	}
	counted, err := writeNAR(nil, os.DirFS(dir), ".")
	if err != nil || counted != int64(len(want)) {
		t.Errorf("counting only: %d, %v; want %d", counted, err, len(want))
	}
}

// lines runs a command and returns its output's lines.
func lines(t *testing.T, name string, args ...string) []string {
	t.Helper()
	out, err := exec.Command(name, args...).Output()
	if err != nil {
		t.Fatalf("%s %s: %v", name, strings.Join(args, " "), err)
	}
	return strings.Fields(string(out))
}

// nameOf is a store path's name: what follows its hash.
func nameOf(storePath string) string {
	_, name, _ := strings.Cut(filepath.Base(storePath), "-")
	return name
}
