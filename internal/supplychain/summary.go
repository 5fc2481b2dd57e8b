package supplychain

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"

	"github.com/opencontainers/go-digest"
	v1 "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/nixery/nixery/internal/attest"
)

// Summary is what the pages say of an image manifest's artifacts.
type Summary struct {
	Documents []DocumentRef `json:"documents"` // SBOMs and provenance, in that order
	// Fingerprint names the key that signed them (Signer.Fingerprint);
	// "" when they are not signed.
	Fingerprint string `json:"fingerprint,omitempty"`
}

// DocumentRef is one document and the blob that holds it.
type DocumentRef struct {
	Name         string        `json:"name"`         // for people: "SBOM (SPDX 2.3)"
	ArtifactType string        `json:"artifactType"` // its media type
	Blob         digest.Digest `json:"blob"`         // GET /v2/<name>/blobs/<blob>
	Size         int64         `json:"size"`
}

// documentNames are the documents the pages show, in their order.
var documentNames = []struct{ artifactType, name string }{
	{attest.MediaTypeSPDX, "SBOM (SPDX 2.3)"},
	{attest.MediaTypeCycloneDX, "SBOM (CycloneDX 1.6)"},
	{attest.MediaTypeInToto, "provenance (SLSA v1, in-toto)"},
}

// Summarize says which documents subject has and whether they are
// signed; an error wrapping storage.ErrNotFound when it has no artifacts
// (yet).
func (m *Maker) Summarize(ctx context.Context, subject digest.Digest) (Summary, error) {
	set, err := m.Referrers(ctx, subject)
	if err != nil {
		return Summary{}, err
	}
	s := Summary{Fingerprint: m.Fingerprint()}
	for _, want := range documentNames {
		for _, d := range set.Manifests {
			if d.ArtifactType != want.artifactType {
				continue
			}
			data, err := m.Metadata.ReadManifest(ctx, d.Digest)
			if err != nil {
				return Summary{}, fmt.Errorf("artifact %s: %w", d.Digest, err)
			}
			var a v1.Manifest
			if err := json.Unmarshal(data, &a); err != nil || len(a.Layers) != 1 {
				return Summary{}, fmt.Errorf("artifact %s holds no document", d.Digest)
			}
			s.Documents = append(s.Documents, DocumentRef{Name: want.name, ArtifactType: want.artifactType, Blob: a.Layers[0].Digest, Size: a.Layers[0].Size})
			break
		}
	}
	return s, nil
}

// PublicKey is the signing key's public half in PEM (cosign.pub), nil
// when images are not signed.
func (m *Maker) PublicKey() []byte {
	if m.Signer == nil {
		return nil
	}
	return m.Signer.PublicKeyPEM()
}

// VerifyCommand is the cosign command that verifies image (host/name, as
// pulled) against the key at key (a file or an http(s) URL), offline:
// no transparency log (docs/supply-chain.md). plainHTTP adds what cosign
// needs for a registry without TLS.
func VerifyCommand(image, key string, plainHTTP bool) string {
	var b strings.Builder
	b.WriteString("cosign verify --key " + key + " --insecure-ignore-tlog=true")
	if plainHTTP {
		b.WriteString(" --allow-http-registry")
	}
	b.WriteString(" " + image)
	return b.String()
}
