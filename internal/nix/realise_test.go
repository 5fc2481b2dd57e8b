package nix

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

// An evaluation says what each name resolved to; realising those paths
// again, without evaluating, gives the same roots and closure and leaves
// garbage-collector roots; an unknown path fails.
func TestRealiseKnown(t *testing.T) {
	req := demoSource(t, "jq", "hello", "jq")
	r := &Runner{Timeout: time.Minute}
	ctx := context.Background()
	built, err := r.Build(ctx, req)
	if err != nil {
		t.Fatal(err)
	}
	if len(built.Packages) != 3 {
		t.Fatalf("packages %+v, want one per requested name", built.Packages)
	}
	var paths []string
	for i, name := range []string{"jq", "hello", "jq"} {
		p := built.Packages[i]
		if p.Name != name || len(p.Outputs) == 0 {
			t.Errorf("package %d = %+v, want %s with outputs", i, p, name)
		}
		paths = append(paths, p.Outputs...)
	}
	if !slices.Equal(built.Packages[1].Programs, built.Programs) || len(built.Programs) != 1 {
		t.Errorf("programs %v of packages %+v", built.Programs, built.Packages)
	}

	roots := t.TempDir()
	var phases []string
	known, err := r.Realise(ctx, KnownRequest{Paths: paths, RootDir: roots, Phase: func(p string) { phases = append(phases, p) }})
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(known.Roots, built.Roots) {
		t.Errorf("roots %v, want %v", known.Roots, built.Roots)
	}
	if len(known.Closure) != len(built.Closure) {
		t.Errorf("closure of %d paths, want %d", len(known.Closure), len(built.Closure))
	}
	if !slices.Equal(phases, []string{"realise", "graph"}) {
		t.Errorf("phases %v", phases)
	}
	links, _ := filepath.Glob(filepath.Join(roots, "result*"))
	if len(links) != len(known.Roots) {
		t.Errorf("gc roots %v for %d paths", links, len(known.Roots))
	}
	for _, l := range links {
		if target, err := os.Readlink(l); err != nil || !slices.Contains(known.Roots, target) {
			t.Errorf("root %s → %s, %v", l, target, err)
		}
	}

	_, err = r.Realise(ctx, KnownRequest{Paths: []string{"/nix/store/00000000000000000000000000000000-gone-1.0"}})
	var be *BuildError
	if !errors.As(err, &be) {
		t.Errorf("realising a path nobody has: %v, want a BuildError", err)
	}
	if _, err := r.Realise(ctx, KnownRequest{Paths: []string{"/etc/passwd"}}); !errors.As(err, &be) {
		t.Errorf("realising a non-store path: %v", err)
	}
}

// One evaluation resolves many names without building anything; the
// derivations it leaves rooted realise into exactly the outputs it named.
func TestResolveThenRealise(t *testing.T) {
	// A derivation no earlier run built: "slow" is evaluated with the
	// time and this test's marker in it, and sleeps 0 s.
	t.Setenv("NIXERY_SLOW_SECONDS", "0")
	t.Setenv("NIXERY_SLOW_MARKER", fmt.Sprintf("nixery-resolve-%d", time.Now().UnixNano()))
	req := demoSource(t)
	r := &Runner{Timeout: time.Minute}
	ctx := context.Background()
	roots := t.TempDir()
	names := []string{"slow", "hello", "nosuchpackage", "xorg", "python3.withpackages.numpy", "hello"}
	got, err := r.Resolve(ctx, ResolveRequest{SrcType: req.SrcType, SrcArgs: req.SrcArgs, System: req.System, Names: names, RootDir: roots})
	if err != nil {
		t.Fatal(err)
	}
	byName := map[string]Resolution{}
	for _, res := range got {
		byName[res.Name] = res
	}
	if len(got) != 3 || len(byName) != 3 {
		t.Fatalf("resolved %+v, want slow, hello and the python3 environment once each", got)
	}
	slow := byName["slow"]
	if len(slow.Outputs) != 1 || !strings.HasSuffix(slow.Realise, ".drv!out") {
		t.Fatalf("slow resolved to %+v", slow)
	}
	if _, err := os.Stat(slow.Outputs[0]); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("resolving built %s (%v)", slow.Outputs[0], err)
	}
	if len(byName["hello"].Programs) != 1 {
		t.Errorf("hello's programs %v", byName["hello"].Programs)
	}
	links, _ := filepath.Glob(filepath.Join(roots, "drv*"))
	if len(links) != 3 {
		t.Errorf("derivation roots %v, want 3", links)
	}
	for _, l := range links {
		if target, err := os.Readlink(l); err != nil || !strings.HasSuffix(target, ".drv") {
			t.Errorf("root %s → %s, %v", l, target, err)
		}
	}

	// The derivations survive a garbage collection while rooted.
	if out, err := exec.Command("nix-store", "--delete", strings.TrimSuffix(slow.Realise, "!out")).CombinedOutput(); err == nil {
		t.Fatalf("a rooted derivation was deleted: %s", out)
	}
	var paths, realise []string
	for _, name := range []string{"slow", "hello"} {
		paths = append(paths, byName[name].Outputs...)
		realise = append(realise, byName[name].Realise)
	}
	built, err := r.Realise(ctx, KnownRequest{Paths: paths, Realise: realise, RootDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(built.Roots, paths) {
		t.Errorf("roots %v, want %v", built.Roots, paths)
	}
	if _, err := os.Stat(filepath.Join(slow.Outputs[0])); err != nil {
		t.Errorf("slow not built: %v", err)
	}
}

// A name whose evaluation throws is left out of a batch; the others
// resolve. A package set that does not parse fails the whole batch.
func TestResolveLeavesOutFailures(t *testing.T) {
	needNix(t)
	dir := writeSet(t, `{ system ? builtins.currentSystem, ... }:
let mk = name: derivation { inherit name system; builder = "/bin/sh"; args = [ "-c" "echo > $out" ]; }; in {
  good = mk "nixery-resolve-good";
  broken = throw "this package is broken";
  badOutputs = (mk "nixery-resolve-bad") // { meta.outputsToInstall = throw "no outputs"; };
  Ambiguous = mk "a"; ambiguous = mk "b";
}`)
	r := &Runner{Timeout: time.Minute}
	got, err := r.Resolve(context.Background(), ResolveRequest{SrcType: "path", SrcArgs: dir, Names: []string{"broken", "good", "badOutputs", "AMBIGUOUS"}})
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 1 || got[0].Name != "good" || len(got[0].Outputs) != 1 {
		t.Errorf("resolved %+v, want good alone", got)
	}
	broken := writeSet(t, `{ ... }: { good = ; }`)
	if _, err := r.Resolve(context.Background(), ResolveRequest{SrcType: "path", SrcArgs: broken, Names: []string{"good"}}); err == nil {
		t.Error("a package set that does not load resolved")
	}
}

// Build says when its evaluation is over, before anything is built.
func TestBuildSaysWhenEvaluated(t *testing.T) {
	t.Setenv("NIXERY_SLOW_SECONDS", "0")
	t.Setenv("NIXERY_SLOW_MARKER", fmt.Sprintf("nixery-evaluated-%d", time.Now().UnixNano()))
	req := demoSource(t, "slow")
	var evaluated, beforeBuilding int
	req.Evaluated = func() { evaluated++ }
	req.Log = func(l string) {
		if strings.Contains(l, "nixery-demo-slow: sleeping") {
			beforeBuilding = evaluated
		}
	}
	if _, err := (&Runner{Timeout: time.Minute}).Build(context.Background(), req); err != nil {
		t.Fatal(err)
	}
	if beforeBuilding != 1 || evaluated != 1 {
		t.Errorf("evaluated %d times before the builder ran, %d in all; want 1 and 1", beforeBuilding, evaluated)
	}
	// Also when the evaluation fails.
	req = demoSource(t, "nosuchpackage")
	evaluated = 0
	req.Evaluated = func() { evaluated++ }
	if _, err := (&Runner{Timeout: time.Minute}).Build(context.Background(), req); err == nil || evaluated != 1 {
		t.Errorf("a failed evaluation: %v, Evaluated called %d times", err, evaluated)
	}
}
