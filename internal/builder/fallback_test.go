package builder

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/nixery/nixery/internal/image"
	"github.com/nixery/nixery/internal/manifest"
	"github.com/nixery/nixery/internal/metadata"
	"github.com/nixery/nixery/internal/nix"
	"github.com/nixery/nixery/internal/source"
)

// passthruSet is the demo set with "curl", a package whose
// meta.outputsToInstall names "bin", which is no output of its
// derivation but a passthru attribute (another package, as some package
// sets have it): `nix-build` builds what the attribute is, while
// realising the derivation's output "bin" fails ("does not have wanted
// outputs 'bin'").
func passthruSet(t *testing.T) string {
	t.Helper()
	demo := demoSet(t)
	dir := filepath.Join(t.TempDir(), "pkgs")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	expr := `{ system ? builtins.currentSystem, ... }:
let demo = import ` + demo + ` { inherit system; };
in demo // {
  curl = demo.hello // { bin = demo.jq; meta = demo.hello.meta // { outputsToInstall = [ "bin" ]; }; };
}
`
	if err := os.WriteFile(filepath.Join(dir, "default.nix"), []byte(expr), 0o644); err != nil {
		t.Fatal(err)
	}
	return dir
}

// A build whose packages a shared evaluation resolved, but whose
// derivation outputs cannot be realised, is evaluated again on its own
// and succeeds: the fast path never fails where the slow path succeeds.
func TestSharedRealiseFailureEvaluatesAgain(t *testing.T) {
	pkgs := passthruSet(t)
	b := newBuilder(t, source.PathSource{Path: pkgs}, t.TempDir())
	b.MaxBuilds = 1
	b.init()
	// The first build holds its slot (and its lead) until told, so that
	// curl joins a batch.
	inSlot, hold := make(chan string, 4), make(chan struct{})
	b.inSlot = func(req *image.Request) {
		inSlot <- req.Name
		if req.Name == "hello" {
			<-hold
		}
	}
	joined := make(chan struct{}, 4)
	b.evals.joined = func() { joined <- struct{}{} }
	ctx := context.Background()
	errs := make(chan error, 2)
	pull := func(name string) {
		_, _, err := b.Manifest(ctx, request(t, name, "latest"), manifest.OCIManifest)
		errs <- err
	}
	go pull("hello")
	<-inSlot
	go pull("curl")
	<-joined
	close(hold)
	for range 2 {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	s := b.Stats()
	if sh, re := s.Shared.Load(), s.Reevaluated.Load(); sh != 1 || re != 1 {
		t.Errorf("%d builds from a shared evaluation, %d evaluated again; want 1 and 1", sh, re)
	}
}

// A package resolved before whose recorded outputs cannot be realised
// (collected, in no cache, or never an output) is evaluated again, and
// the pull succeeds; the new resolution replaces the stale one.
func TestStaleResolutionEvaluatesAgain(t *testing.T) {
	pkgs := demoSet(t)
	ctx := context.Background()
	b := newBuilder(t, source.PathSource{Path: pkgs}, t.TempDir())
	req := request(t, "hello/jq", "latest")
	src, _, err := b.resolve(ctx, req)
	if err != nil {
		t.Fatal(err)
	}
	gone := "/nix/store/00000000000000000000000000000000-gone-1.0"
	for _, name := range []string{"hello", "jq"} {
		r := metadata.Package{Outputs: []string{gone + "-" + name}, At: time.Now(), Meta: &nix.Meta{}}
		if err := b.Metadata().PutPackage(ctx, src.Identity, req.Arch.System, name, r); err != nil {
			t.Fatal(err)
		}
	}
	if _, _, err := b.Manifest(ctx, req, manifest.OCIManifest); err != nil {
		t.Fatalf("the pull failed where an evaluation succeeds: %v", err)
	}
	s := b.Stats()
	if re, e, r := s.Reevaluated.Load(), s.Evaluations.Load(), s.Resolved.Load(); re != 1 || e != 1 || r != 0 {
		t.Errorf("%d evaluated again, %d evaluations, %d from resolutions; want 1, 1, 0", re, e, r)
	}
	got, ok, err := b.Metadata().Package(ctx, src.Identity, req.Arch.System, "hello")
	if err != nil || !ok || got.Outputs[0] == gone+"-hello" {
		t.Errorf("the stale resolution stayed: %+v %v %v", got, ok, err)
	}
}
