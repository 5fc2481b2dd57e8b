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
	if _, err := c.Referrers(ctx, subject, metadata.Unsigned); !errors.Is(err, storage.ErrNotFound) {
		t.Fatalf("before any: %v, want not found", err)
	}
	set := func(what string) metadata.Referrers {
		return metadata.Referrers{
			Manifests: []v1.Descriptor{{MediaType: v1.MediaTypeImageManifest, Digest: digest.FromString(what), Size: 1, ArtifactType: "application/spdx+json"}},
			Tags:      map[string]digest.Digest{"sha256-" + subject.Encoded() + ".sig": digest.FromString(what + " signature")},
		}
	}
	first, err := c.CreateReferrers(ctx, subject, metadata.Unsigned, set("first"))
	if err != nil {
		t.Fatal(err)
	}
	second, err := c.CreateReferrers(ctx, subject, metadata.Unsigned, set("second"))
	if err != nil {
		t.Fatal(err)
	}
	got, err := c.Referrers(ctx, subject, metadata.Unsigned)
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
	// Another signer's set is another object: an instance given a key
	// makes the signed set of an image it had made unsigned.
	if _, err := c.Referrers(ctx, subject, "0123abcd"); !errors.Is(err, storage.ErrNotFound) {
		t.Errorf("another signer's set: %v, want not found", err)
	}
	keys, err := c.List(ctx, metadata.KindReferrers)
	if err != nil || len(keys) != 1 {
		t.Fatalf("listed %v, %v; want one set", keys, err)
	}
	for key := range keys {
		if metadata.ReferrersSubject(key) != subject {
			t.Errorf("the set listed as %q has subject %q, want %s", key, metadata.ReferrersSubject(key), subject)
		}
		if r, err := c.ReferrersOf(ctx, key); err != nil || r.Manifests[0].Digest != digest.FromString("first") {
			t.Errorf("ReferrersOf(%q) = %+v, %v", key, r, err)
		}
	}
	// Names no object: a subject that is no digest, a signer outside the
	// grammar.
	for _, tt := range []struct {
		subject digest.Digest
		signer  string
	}{{"sha256:../../etc", metadata.Unsigned}, {subject, "../x"}, {subject, ""}} {
		if _, err := c.Referrers(ctx, tt.subject, tt.signer); err == nil || errors.Is(err, storage.ErrNotFound) {
			t.Errorf("Referrers(%q, %q): %v, want invalid", tt.subject, tt.signer, err)
		}
	}
}
