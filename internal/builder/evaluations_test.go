package builder

import (
	"context"
	"errors"
	"path/filepath"
	"slices"
	"testing"

	"github.com/nixery/nixery/internal/image"
	"github.com/nixery/nixery/internal/manifest"
	"github.com/nixery/nixery/internal/nix"
	"github.com/nixery/nixery/internal/source"
)

// New images asked for while an evaluation of their package set runs
// share the next one: the first build (it has a slot) evaluates on its
// own, the four that wait for a slot meanwhile share one evaluation. A
// name that does not resolve in the batch is evaluated alone, which says
// why; the others are the same images, byte for byte, as a builder
// evaluating each alone makes. Nothing of the batch's derivation roots is
// left.
func TestNewImagesShareOneEvaluation(t *testing.T) {
	pkgs := demoSet(t)
	tmp := t.TempDir()
	t.Setenv("TMPDIR", tmp)
	b := newBuilder(t, source.PathSource{Path: pkgs}, t.TempDir())
	b.MaxBuilds = 1
	b.init()
	// The first build holds its slot (and its lead) until told.
	inSlot, hold := make(chan string, 8), make(chan struct{})
	b.inSlot = func(req *image.Request) {
		inSlot <- req.Name
		if req.Name == "jq" {
			<-hold
		}
	}
	evaluating := make(chan []string, 4)
	b.evals.started = func(names []string) { evaluating <- slices.Clone(names) }
	joined := make(chan struct{}, 8)
	b.evals.joined = func() { joined <- struct{}{} }

	ctx := context.Background()
	type result struct {
		name   string
		digest string
		err    error
	}
	results := make(chan result, 8)
	pull := func(name string) {
		_, d, err := b.Manifest(ctx, request(t, name, "latest"), manifest.OCIManifest)
		results <- result{name, d.String(), err}
	}
	go pull("jq")
	if name := <-inSlot; name != "jq" {
		t.Fatalf("%s has the slot, want jq", name)
	}
	later := []string{"hello", "hello/jq", "xorg.xev/jq", "nosuchpackage/jq"}
	for _, name := range later {
		go pull(name)
	}
	for range later {
		<-joined
	}
	select {
	case names := <-evaluating:
		t.Fatalf("a batch (%v) started while the first build's evaluation had not", names)
	default:
	}
	close(hold)
	second := <-evaluating
	slices.Sort(second)
	if want := []string{"hello", "jq", "nosuchpackage", "xorg.xev"}; !slices.Equal(second, want) {
		t.Errorf("shared evaluation of %v, want %v", second, want)
	}

	digests := map[string]string{}
	for range 1 + len(later) {
		r := <-results
		var unknown *nix.UnknownPackagesError
		switch {
		case r.name == "nosuchpackage/jq":
			if !errors.As(r.err, &unknown) || !slices.Equal(unknown.Packages, []string{"nosuchpackage"}) {
				t.Errorf("%s: %v, want nosuchpackage unknown", r.name, r.err)
			}
		case r.err != nil:
			t.Errorf("%s: %v", r.name, r.err)
		default:
			digests[r.name] = r.digest
		}
	}
	// jq's own, the shared one, and nosuchpackage/jq's own.
	if e, s := b.Stats().Evaluations.Load(), b.Stats().Shared.Load(); e != 3 || s != 3 {
		t.Errorf("%d evaluations, %d builds from a shared one; want 3 and 3", e, s)
	}
	// Only this process's directory of temporary roots, empty.
	if left, _ := filepath.Glob(filepath.Join(tmp, "nixery-gcroots-*", "proc-*", "roots-*")); len(left) > 0 {
		t.Errorf("roots left behind: %v", left)
	}
	if left, _ := filepath.Glob(filepath.Join(tmp, "nixery-*")); len(left) != 1 {
		t.Errorf("in TMPDIR: %v, want only nixery-gcroots-<uid>", left)
	}

	for _, name := range []string{"hello/jq", "xorg.xev/jq"} {
		alone := newBuilder(t, source.PathSource{Path: pkgs}, t.TempDir())
		_, d, err := alone.Manifest(ctx, request(t, name, "latest"), manifest.OCIManifest)
		if err != nil {
			t.Fatal(err)
		}
		if d.String() != digests[name] {
			t.Errorf("%s: %s in a batch, %s alone", name, digests[name], d)
		}
		if alone.Stats().Shared.Load() != 0 {
			t.Errorf("%s alone shared an evaluation", name)
		}
	}
}
