package builder

import (
	"context"
	"strings"
	"testing"

	"github.com/nixery/nixery/internal/manifest"
	"github.com/nixery/nixery/internal/nix"
	"github.com/nixery/nixery/internal/source"
)

// The details of an image carry what its SBOMs need, however Nix got its
// packages: evaluating alone (hello, jq), or realising packages resolved
// before (hello/jq, whose packages both images above resolved). A
// resolution recorded before Nixery read meta counts as none.
func TestDetailsForSBOMs(t *testing.T) {
	pkgs := demoSet(t)
	ctx := context.Background()
	b := newBuilder(t, source.PathSource{Path: pkgs, Label: "the demo set"}, t.TempDir())
	for _, name := range []string{"hello", "jq", "hello/jq"} {
		req := request(t, name, "latest")
		if _, _, err := b.Manifest(ctx, req, manifest.OCIManifest); err != nil {
			t.Fatal(err)
		}
		d, err := b.Details(ctx, req)
		if err != nil {
			t.Fatal(err)
		}
		if d.SourceType != "path" || d.SourceName != "the demo set" {
			t.Errorf("%s: source %q, %q", name, d.SourceType, d.SourceName)
		}
		refs := 0
		for _, p := range d.Closure {
			if len(p.NarHash) != len("sha256:")+64 || !strings.HasPrefix(p.NarHash, "sha256:") {
				t.Errorf("%s: %s: NAR hash %q", name, p.Path, p.NarHash)
			}
			refs += len(p.References)
		}
		if refs == 0 {
			t.Errorf("%s: no references in the closure", name)
		}
		if len(d.PackageMeta) != len(d.Packages) {
			t.Fatalf("%s: meta of %d packages, want %d", name, len(d.PackageMeta), len(d.Packages))
		}
		for _, p := range d.PackageMeta {
			if len(p.Outputs) == 0 || !strings.HasSuffix(p.DrvPath, ".drv") || p.PName == "" || p.Version == "" || len(p.Licenses) == 0 || p.Homepage == "" {
				t.Errorf("%s: package %+v", name, p)
			}
		}
	}
	if r := b.Stats().Resolved.Load(); r != 1 {
		t.Errorf("%d images from packages resolved before, want hello/jq", r)
	}

	// A resolution without meta: evaluated again.
	src, _, err := b.resolve(ctx, request(t, "hello", "latest"))
	if err != nil {
		t.Fatal(err)
	}
	r, ok, err := b.Metadata().Package(ctx, src.Identity, "x86_64-linux", "hello")
	if err != nil || !ok || r.Meta == nil {
		t.Fatalf("hello's resolution %+v, %v, %v", r, ok, err)
	}
	r.Meta = nil
	if err := b.Metadata().PutPackage(ctx, src.Identity, "x86_64-linux", "hello", r); err != nil {
		t.Fatal(err)
	}
	req := request(t, "jq/hello", "latest")
	r.Meta = &nix.Meta{}
	if err := b.Metadata().PutPackage(ctx, src.Identity, req.Arch.System, "jq", r); err != nil {
		t.Fatal(err)
	}
	if known := b.known(ctx, req, src); known != nil {
		t.Errorf("a resolution without meta is known: %+v", known)
	}
	r.Meta = &nix.Meta{}
	if err := b.Metadata().PutPackage(ctx, src.Identity, req.Arch.System, "hello", r); err != nil {
		t.Fatal(err)
	}
	if known := b.known(ctx, req, src); known == nil || len(known.packages) != 2 {
		t.Errorf("resolutions with meta are not known: %+v", known)
	}
}
