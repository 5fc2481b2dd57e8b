package web

import (
	"context"
	"encoding/json"
	"net/http"
	"strings"
	"testing"

	v1 "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/nixery/nixery/internal/artifact"
	"github.com/nixery/nixery/internal/attest"
	"github.com/nixery/nixery/internal/image"
	"github.com/nixery/nixery/internal/manifest"
	"github.com/nixery/nixery/internal/sign"
	"github.com/nixery/nixery/internal/supplychain"
)

// fakeSigner stands for the real one (package sign, proven with real
// cosign elsewhere): what the pages show depends only on its key.
type fakeSigner struct{}

func (fakeSigner) Fingerprint() string { return "0123456789abcdef" }
func (fakeSigner) PublicKeyPEM() []byte {
	return []byte("-----BEGIN PUBLIC KEY-----\nMFk=\n-----END PUBLIC KEY-----\n")
}
func (fakeSigner) SignImage(string, v1.Descriptor) ([]artifact.Artifact, error) { return nil, nil }
func (fakeSigner) Attest(string, v1.Descriptor, []sign.Predicate) ([]artifact.Artifact, error) {
	return nil, nil
}

// The image page lists the packages with their licences, links the SBOMs
// and the provenance (the registry's blob URLs), and says whether the
// image is signed and by which key, with the command that verifies it;
// /cosign.pub serves the key, or 404 without one.
func TestSupplyChainOnThePages(t *testing.T) {
	for _, signed := range []bool{false, true} {
		s := newSite(t)
		m := &supplychain.Maker{Metadata: s.Builder.Metadata(), Instance: attest.Builder{ID: "https://registry.example:5000", Version: "test"}}
		if signed {
			m.Signer = fakeSigner{}
		}
		s.Builder.Artifacts, s.Artifacts = m, m
		req, err := image.Parse("shell/hello", "latest")
		if err != nil {
			t.Fatal(err)
		}
		if _, _, err := s.Builder.Manifest(context.Background(), req, manifest.OCIManifest); err != nil {
			t.Fatal(err)
		}
		page := get(t, s, "GET", "/image/shell/hello").Body.String()
		for _, want := range []string{
			`<code>hello</code>`, `GPL-3.0-or-later`, `https://www.gnu.org/software/hello/manual/`,
			`href="/v2/shell/hello/blobs/sha256:`, `SBOM (SPDX 2.3)`, `SBOM (CycloneDX 1.6)`, `provenance (SLSA v1, in-toto)`,
		} {
			if !strings.Contains(page, want) {
				t.Errorf("signed=%v: the image page lacks %q", signed, want)
			}
		}
		key := get(t, s, "GET", "/cosign.pub")
		index := get(t, s, "GET", "/").Body.String()
		var api ImageView
		if err := json.Unmarshal(get(t, s, "GET", "/api/image/shell/hello").Body.Bytes(), &api); err != nil || api.SupplyChain == nil || len(api.SupplyChain.Documents) != 3 {
			t.Fatalf("signed=%v: /api/image supply chain %+v (%v)", signed, api.SupplyChain, err)
		}
		if !signed {
			if !strings.Contains(page, "Not signed") || key.Code != http.StatusNotFound || strings.Contains(index, "/cosign.pub") {
				t.Errorf("unsigned: page says signed, or /cosign.pub answers %d, or the index links it", key.Code)
			}
			continue
		}
		verify := "cosign verify --key http://registry.example:5000/cosign.pub --insecure-ignore-tlog=true --allow-http-registry registry.example:5000/shell/hello"
		if !strings.Contains(page, "0123456789abcdef") || !strings.Contains(page, verify) || api.SupplyChain.Verify != verify {
			t.Errorf("signed: the page lacks the key's fingerprint or %q", verify)
		}
		if key.Code != http.StatusOK || key.Body.String() != string(fakeSigner{}.PublicKeyPEM()) || !strings.Contains(index, `href="/cosign.pub"`) {
			t.Errorf("signed: /cosign.pub answers %d %q; index links it: %v", key.Code, key.Body, strings.Contains(index, "/cosign.pub"))
		}
	}
}
