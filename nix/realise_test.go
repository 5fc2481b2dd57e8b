package nix

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"slices"
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
