package metadata_test

import (
	"context"
	"errors"
	"testing"

	"github.com/opencontainers/go-digest"
	v1 "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/nixery/nixery/internal/metadata"
	"github.com/nixery/nixery/internal/storage"
)

// The first set of artifacts stored for a subject is the one every
// replica serves: a second CreateReferrers (another replica that made its
// own, with other signatures) gets the first back and changes nothing.
func TestReferrersFirstWins(t *testing.T) {
	fs, err := storage.NewFilesystem(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	c := metadata.New(fs, nil)
	subject := digest.FromString("image manifest")
	if _, err := c.Referrers(ctx, subject); !errors.Is(err, storage.ErrNotFound) {
		t.Fatalf("before any: %v, want not found", err)
	}
	set := func(what string) metadata.Referrers {
		return metadata.Referrers{
			Manifests: []v1.Descriptor{{MediaType: v1.MediaTypeImageManifest, Digest: digest.FromString(what), Size: 1, ArtifactType: "application/spdx+json"}},
			Tags:      map[string]digest.Digest{"sha256-" + subject.Encoded() + ".sig": digest.FromString(what + " signature")},
		}
	}
	first, err := c.CreateReferrers(ctx, subject, set("first"))
	if err != nil {
		t.Fatal(err)
	}
	second, err := c.CreateReferrers(ctx, subject, set("second"))
	if err != nil {
		t.Fatal(err)
	}
	got, err := c.Referrers(ctx, subject)
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range []metadata.Referrers{first, second, got} {
		if r.Manifests[0].Digest != digest.FromString("first") || r.Manifests[0].ArtifactType != "application/spdx+json" {
			t.Errorf("served %+v, want the first set", r)
		}
	}
	if ds := got.Digests(); len(ds) != 2 {
		t.Errorf("Digests = %v, want the manifest and the tagged signature", ds)
	}
	// A key that is no digest names no object.
	if _, err := c.Referrers(ctx, "sha256:../../etc"); err == nil || errors.Is(err, storage.ErrNotFound) {
		t.Errorf("invalid subject: %v", err)
	}
}
