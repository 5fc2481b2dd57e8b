package registry_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http/httptest"
	"testing"

	"github.com/opencontainers/go-digest"
	v1 "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/nixery/nixery/internal/manifest"
	"github.com/nixery/nixery/internal/metadata"
	"github.com/nixery/nixery/internal/registry"
	"github.com/nixery/nixery/internal/storage"
)

// referrersWorld stores an image manifest with two artifacts (an SBOM
// listed by the referrers API, a cosign v2 signature found by its tag).
func referrersWorld(t *testing.T) (srv *httptest.Server, subject, sbom, sig digest.Digest) {
	t.Helper()
	fs, err := storage.NewFilesystem(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	img, err := manifest.Manifest(manifest.OCIManifest, manifest.Blob{Digest: digest.FromString("config"), Size: 6}, nil)
	if err != nil {
		t.Fatal(err)
	}
	put := func(data []byte) digest.Digest {
		d, err := storage.Put(ctx, fs, data)
		if err != nil {
			t.Fatal(err)
		}
		return d
	}
	subject = put(img)
	artifact := func(artifactType string) []byte {
		return []byte(fmt.Sprintf(`{"schemaVersion":2,"mediaType":%q,"artifactType":%q,"config":{"mediaType":"application/vnd.oci.empty.v1+json","digest":%q,"size":2},"layers":[],"subject":{"mediaType":%q,"digest":%q,"size":%d}}`,
			manifest.OCIManifest, artifactType, digest.FromString("{}"), manifest.OCIManifest, subject, len(img)))
	}
	sbomData := artifact("application/spdx+json")
	sbom = put(sbomData)
	sig = put(artifact("application/vnd.dev.cosign.simplesigning.v1+json"))
	c := metadata.New(fs, nil)
	if _, err := c.CreateReferrers(ctx, subject, metadata.Unsigned, metadata.Referrers{
		Manifests: []v1.Descriptor{{MediaType: manifest.OCIManifest, Digest: sbom, Size: int64(len(sbomData)), ArtifactType: "application/spdx+json"}},
		Tags:      map[string]digest.Digest{"sha256-" + subject.Encoded() + ".sig": sig},
	}); err != nil {
		t.Fatal(err)
	}
	srv = httptest.NewServer(&registry.Registry{Storage: fs, Referrers: unsigned{c}})
	t.Cleanup(srv.Close)
	return srv, subject, sbom, sig
}

// The referrers API lists an image's artifacts, filtered by artifactType
// on request; the referrers tag schema serves the same index and cosign's
// tagged manifests; other reserved tags name nothing.
func TestReferrers(t *testing.T) {
	srv, subject, sbom, sig := referrersWorld(t)
	tag := "sha256-" + subject.Encoded()
	index := func(body []byte) []v1.Descriptor {
		var idx v1.Index
		if err := json.Unmarshal(body, &idx); err != nil || idx.MediaType != v1.MediaTypeImageIndex || idx.SchemaVersion != 2 {
			t.Fatalf("not an image index: %s (%v)", body, err)
		}
		return idx.Manifests
	}
	for _, tt := range []struct {
		path     string
		want     []digest.Digest
		filtered bool
	}{
		{"/v2/hello/referrers/" + subject.String(), []digest.Digest{sbom}, false},
		{"/v2/hello/referrers/" + subject.String() + "?artifactType=application/spdx%2Bjson", []digest.Digest{sbom}, true},
		{"/v2/hello/referrers/" + subject.String() + "?artifactType=application/vnd.cyclonedx%2Bjson", nil, true},
		{"/v2/hello/referrers/" + digest.FromString("other").String(), nil, false},
		{"/v2/hello/manifests/" + tag, []digest.Digest{sbom}, false},
	} {
		resp, body := do(t, srv, call{"GET", tt.path, nil})
		if resp.StatusCode != 200 {
			t.Errorf("%s: %d %s", tt.path, resp.StatusCode, body)
			continue
		}
		var got []digest.Digest
		for _, m := range index(body) {
			got = append(got, m.Digest)
			if m.ArtifactType == "" || m.Size == 0 {
				t.Errorf("%s: descriptor %+v lacks its artifact type or size", tt.path, m)
			}
		}
		if fmt.Sprint(got) != fmt.Sprint(tt.want) {
			t.Errorf("%s lists %v, want %v", tt.path, got, tt.want)
		}
		if f := resp.Header.Get("OCI-Filters-Applied"); (f == "artifactType") != tt.filtered {
			t.Errorf("%s: OCI-Filters-Applied %q", tt.path, f)
		}
	}
	// The index of the tag schema is a manifest: it has a digest.
	resp, body := do(t, srv, call{"GET", "/v2/hello/manifests/" + tag, nil})
	if d := resp.Header.Get("Docker-Content-Digest"); d != digest.FromBytes(body).String() {
		t.Errorf("tag schema index: Docker-Content-Digest %q, want the body's", d)
	}
	resp, body = do(t, srv, call{"GET", "/v2/hello/manifests/" + tag + ".sig", nil})
	if resp.StatusCode != 200 || resp.Header.Get("Docker-Content-Digest") != sig.String() || digest.FromBytes(body) != sig {
		t.Errorf(".sig tag: %d %s, want the signature manifest %s", resp.StatusCode, resp.Header.Get("Docker-Content-Digest"), sig)
	}
	for _, path := range []string{
		"/v2/hello/manifests/" + tag + ".att",                                // not made
		"/v2/hello/manifests/" + tag + ".sbom",                               // reserved
		"/v2/hello/manifests/sha256-" + digest.FromString("x").Encoded(),     // no artifacts
		"/v2/hello/manifests/sha256-" + digest.FromString("x").Encoded()[:9], // not the schema, still reserved
	} {
		resp, body := do(t, srv, call{"GET", path, nil})
		var e struct{ Errors []struct{ Code string } }
		json.Unmarshal(body, &e)
		if resp.StatusCode != 404 || len(e.Errors) != 1 || e.Errors[0].Code != "MANIFEST_UNKNOWN" {
			t.Errorf("%s: %d %s, want 404 MANIFEST_UNKNOWN", path, resp.StatusCode, body)
		}
	}
}

// unsigned finds the unsigned artifact sets in a metadata store.
type unsigned struct{ c *metadata.Store }

func (u unsigned) Referrers(ctx context.Context, subject digest.Digest) (metadata.Referrers, error) {
	return u.c.Referrers(ctx, subject, metadata.Unsigned)
}

// failingFinder fails as storage does in an outage.
type failingFinder struct{}

func (failingFinder) Referrers(context.Context, digest.Digest) (metadata.Referrers, error) {
	return metadata.Referrers{}, fmt.Errorf("referrers: %w", storage.ErrUnavailable)
}

// When the artifacts cannot be read, the answer says so (503) rather than
// an empty list that a policy would read as "unsigned".
func TestReferrersOutage(t *testing.T) {
	srv := httptest.NewServer(&registry.Registry{Referrers: failingFinder{}})
	defer srv.Close()
	d := digest.FromString("image")
	for _, path := range []string{"/v2/hello/referrers/" + d.String(), "/v2/hello/manifests/sha256-" + d.Encoded()} {
		resp, body := do(t, srv, call{"GET", path, nil})
		if resp.StatusCode != 503 {
			t.Errorf("%s: %d %s, want 503", path, resp.StatusCode, body)
		}
	}
}
