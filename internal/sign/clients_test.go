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

// signed is an image pushed to a registry with its signatures and
// attestations, made by a key that the real cosign generated.
type signed struct {
	c                 *signtest.Clients
	host, repo, image string // image: host/repo:latest
	subject           ocispec.Descriptor
	pub, otherPub     string // cosign.pub, and another key's
	sigs, atts        []artifact.Artifact
	spdxArt, cdxArt   artifact.Artifact
}

// setup pushes an image (with docker, its manifest Docker's) to a new
// registry and signs it with a key pair from `cosign generate-key-pair`,
// loaded with its password file.
func setup(t *testing.T, docker bool) *signed {
	c := signtest.New(t, storagetest.BinDir())
	reg := storagetest.StartRegistry(t)
	s := &signed{c: c, host: reg.Addr(), repo: "test/img"}
	s.image = s.host + "/" + s.repo + ":latest"
	s.subject = c.PushImage(t, s.image, docker)

	keyFile, pub := c.KeyPair(t, "key", "a password")
	otherKey, otherPub := c.KeyPair(t, "other", "")
	s.pub, s.otherPub = pub, otherPub
	// The empty password: no password file.
	if other, err := sign.Load(otherKey, ""); err != nil {
		t.Error(err)
	} else if pem, _ := os.ReadFile(otherPub); string(other.PublicKeyPEM()) != string(pem) {
		t.Errorf("PublicKeyPEM\n%s\ncosign.pub\n%s", other.PublicKeyPEM(), pem)
	}
	passwordFile := filepath.Join(c.Dir, "password")
	if err := os.WriteFile(passwordFile, []byte("a password\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	signer, err := sign.Load(keyFile, passwordFile)
	if err != nil {
		t.Fatal(err)
	}
	if pem, _ := os.ReadFile(pub); string(signer.PublicKeyPEM()) != string(pem) {
		t.Errorf("PublicKeyPEM\n%s\ncosign.pub\n%s", signer.PublicKeyPEM(), pem)
	}
	if s.sigs, err = signer.SignImage(s.host+"/"+s.repo, s.subject); err != nil {
		t.Fatal(err)
	}
	s.atts, err = signer.Attest(s.host+"/"+s.repo, s.subject, []sign.Predicate{
		{Type: slsa, Data: []byte(slsaDoc)},
		{Type: spdx, Data: []byte(spdxDoc)},
		{Type: cyclonedx, Data: []byte(cyclonedxDoc)},
	})
	if err != nil {
		t.Fatal(err)
	}
	if s.spdxArt, err = artifact.Document(s.subject, "application/spdx+json", "sbom.spdx.json", []byte(spdxDoc)); err != nil {
		t.Fatal(err)
	}
	if s.cdxArt, err = artifact.Document(s.subject, "application/vnd.cyclonedx+json", "sbom.cdx.json", []byte(cyclonedxDoc)); err != nil {
		t.Fatal(err)
	}
	return s
}

// push pushes artifacts and the referrers index of those that have a
// subject (crane's registry has no referrers API; the clients read the
// referrers tag instead).
func (s *signed) push(t *testing.T, arts ...artifact.Artifact) {
	for _, a := range arts {
		signtest.Push(t, s.host, s.repo, a)
	}
	signtest.PushReferrersTag(t, s.host, s.repo, s.subject, arts...)
}

// attestations are the cosign names of the test's predicate types.
var attestations = []struct{ cosign, predicateType string }{
	{"slsaprovenance1", slsa}, {"spdxjson", spdx}, {"cyclonedx", cyclonedx},
}

// has checks that claims hold want and are all about the subject.
func has(t *testing.T, what string, claims []signtest.Claim, err error, subject digest.Digest, want string) {
	t.Helper()
	if err != nil {
		t.Error(err)
		return
	}
	found := false
	for _, c := range claims {
		found = found || c.Type == want
		if c.Digest != subject {
			t.Errorf("%s: a claim about %s, not the image %s", what, c.Digest, subject)
		}
	}
	if !found {
		t.Errorf("%s: claims %v, want one of type %s", what, claims, want)
	}
}

// TestClients has the real clients check everything the package makes
// for an image: cosign v3 and v2 verify the signature and each
// attestation with the key, offline, and refuse another key; cosign tree
// lists them; oras and regctl find the SBOMs, and pull one.
func TestClients(t *testing.T) {
	s := setup(t, false)
	c := s.c
	s.push(t, append(append(append([]artifact.Artifact{}, s.sigs...), s.atts...), s.spdxArt, s.cdxArt)...)
	byDigest := s.host + "/" + s.repo + "@" + s.subject.Digest.String()

	for _, img := range []string{s.image, byDigest} {
		claims, err := c.Verify(t, "cosign", s.pub, img)
		has(t, "cosign verify "+img, claims, err, s.subject.Digest, sign.PredicateSign)
	}
	// cosign v2.6 also reads the bundles, when it finds any.
	claims, err := c.Verify(t, "cosign2", s.pub, s.image)
	has(t, "cosign2 verify", claims, err, s.subject.Digest, sign.PredicateSign)
	for _, cosign := range []string{"cosign", "cosign2"} {
		for _, a := range attestations {
			claims, err := c.VerifyAttestation(t, cosign, s.pub, a.cosign, s.image)
			has(t, cosign+" verify-attestation --type "+a.cosign, claims, err, s.subject.Digest, a.predicateType)
			for _, cl := range claims {
				if cl.Type != a.predicateType {
					t.Errorf("%s verify-attestation --type %s returned a %s", cosign, a.cosign, cl.Type)
				}
			}
		}
		if _, err := c.Verify(t, cosign, s.otherPub, s.image); err == nil {
			t.Errorf("%s verify passed with another key", cosign)
		}
		if _, err := c.VerifyAttestation(t, cosign, s.otherPub, "slsaprovenance1", s.image); err == nil {
			t.Errorf("%s verify-attestation passed with another key", cosign)
		}
	}

	tree := c.Must(t, nil, "cosign", "tree", "--allow-http-registry", s.image)
	for _, want := range []string{sign.SignatureTag(s.subject.Digest), sign.AttestationTag(s.subject.Digest), sign.PredicateSign, slsa, spdx, cyclonedx, "application/spdx+json"} {
		if !strings.Contains(tree, want) {
			t.Errorf("cosign tree does not show %s:\n%s", want, tree)
		}
	}

	discover := c.Must(t, nil, "oras", "discover", "--plain-http", s.image)
	c.Must(t, nil, "regctl", "registry", "set", "--tls", "disabled", s.host)
	regTree := c.Must(t, nil, "regctl", "artifact", "tree", s.image)
	for _, a := range append(append([]artifact.Artifact{}, s.sigs[1]), s.atts[1:]...) {
		for what, out := range map[string]string{"oras discover": discover, "regctl artifact tree": regTree} {
			if !strings.Contains(out, a.Manifest.Descriptor.Digest.String()) || !strings.Contains(out, sign.MediaTypeBundle) {
				t.Errorf("%s does not show the bundle %s:\n%s", what, a.Manifest.Descriptor.Digest, out)
			}
		}
	}
	for _, doc := range []struct {
		a             artifact.Artifact
		file, content string
	}{{s.spdxArt, "sbom.spdx.json", spdxDoc}, {s.cdxArt, "sbom.cdx.json", cyclonedxDoc}} {
		typ, d := doc.a.ArtifactType(), doc.a.Manifest.Descriptor.Digest.String()
		var found struct {
			Referrers []struct {
				Digest       string `json:"digest"`
				ArtifactType string `json:"artifactType"`
			} `json:"referrers"`
		}
		out := c.Must(t, nil, "oras", "discover", "--plain-http", "--format", "json", "--artifact-type", typ, s.image)
		if err := json.Unmarshal([]byte(out), &found); err != nil || len(found.Referrers) != 1 || found.Referrers[0].Digest != d || found.Referrers[0].ArtifactType != typ {
			t.Errorf("oras discover --artifact-type %s: %v\n%s", typ, err, out)
		}
		dir := filepath.Join(c.Dir, "pull-"+doc.file)
		c.Must(t, nil, "oras", "pull", "--plain-http", "-o", dir, s.host+"/"+s.repo+"@"+d)
		if got, err := os.ReadFile(filepath.Join(dir, doc.file)); err != nil || string(got) != doc.content {
			t.Errorf("oras pull of %s: %q (%v)", typ, got, err)
		}
		list := c.Must(t, nil, "regctl", "artifact", "list", "--filter-artifact-type", typ, "--format", "{{range .Descriptors}}{{.Digest}} {{end}}", s.image)
		if strings.TrimSpace(list) != d {
			t.Errorf("regctl artifact list --filter-artifact-type %s: %q, want %s", typ, list, d)
		}
		if got := c.Must(t, nil, "regctl", "artifact", "get", "--subject", s.image, "--filter-artifact-type", typ); got != doc.content {
			t.Errorf("regctl artifact get --filter-artifact-type %s: %q", typ, got)
		}
	}
}

// TestClientsLegacy: the .sig and .att tags alone (no bundle among the
// referrers), which cosign v2 reads, and v3 as its fallback.
func TestClientsLegacy(t *testing.T) {
	s := setup(t, false)
	c := s.c
	s.push(t, s.sigs[0], s.atts[0])
	for _, cosign := range []string{"cosign2", "cosign"} {
		claims, err := c.Verify(t, cosign, s.pub, s.image)
		has(t, cosign+" verify", claims, err, s.subject.Digest, "cosign container image signature")
		for _, a := range attestations {
			claims, err := c.VerifyAttestation(t, cosign, s.pub, a.cosign, s.image)
			has(t, cosign+" verify-attestation --type "+a.cosign, claims, err, s.subject.Digest, a.predicateType)
		}
		if _, err := c.Verify(t, cosign, s.otherPub, s.image); err == nil {
			t.Errorf("%s verify passed with another key", cosign)
		}
	}
}

// TestClientsDocker: the same for an image whose manifest is Docker's
// schema 2 (the artifacts' subject says so).
func TestClientsDocker(t *testing.T) {
	s := setup(t, true)
	c := s.c
	s.push(t, append(append([]artifact.Artifact{}, s.sigs...), s.atts...)...)
	for _, cosign := range []string{"cosign", "cosign2"} {
		claims, err := c.Verify(t, cosign, s.pub, s.image)
		has(t, cosign+" verify", claims, err, s.subject.Digest, sign.PredicateSign)
		claims, err = c.VerifyAttestation(t, cosign, s.pub, "spdxjson", s.image)
		has(t, cosign+" verify-attestation --type spdxjson", claims, err, s.subject.Digest, spdx)
		if _, err := c.Verify(t, cosign, s.otherPub, s.image); err == nil {
			t.Errorf("%s verify passed with another key", cosign)
		}
	}
}
