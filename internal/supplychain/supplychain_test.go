package supplychain_test

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/opencontainers/go-digest"
	v1 "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/nixery/nixery/internal/artifact"
	"github.com/nixery/nixery/internal/manifest"
	"github.com/nixery/nixery/internal/metadata"
	"github.com/nixery/nixery/internal/sign"
	"github.com/nixery/nixery/internal/storage"
	"github.com/nixery/nixery/internal/supplychain"
)

// storedImage stores both manifests of an image in a new storage and
// returns the storage and the image's details.
func storedImage(t *testing.T) (storage.Backend, *metadata.Details) {
	t.Helper()
	store, err := storage.NewFilesystem(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	d := &metadata.Details{Name: "shell/hello", Tag: "latest", Manifests: map[string]digest.Digest{}}
	for _, mt := range manifest.MediaTypes {
		data, err := manifest.Manifest(mt, manifest.Blob{Digest: digest.FromString("config"), Size: 6}, nil)
		if err != nil {
			t.Fatal(err)
		}
		md, err := storage.Put(context.Background(), store, data)
		if err != nil {
			t.Fatal(err)
		}
		d.Manifests[mt] = md
	}
	return store, d
}

// describe makes one SBOM per subject that names it, and counts calls.
func describe(calls *atomic.Int32) func(d *metadata.Details, subject v1.Descriptor) ([]supplychain.Document, error) {
	return func(d *metadata.Details, subject v1.Descriptor) ([]supplychain.Document, error) {
		calls.Add(1)
		return []supplychain.Document{{
			ArtifactType: "application/spdx+json", PredicateType: "https://spdx.dev/Document",
			Data: []byte(fmt.Sprintf(`{"name":%q,"subject":%q}`, d.Name, subject.Digest)),
		}}, nil
	}
}

// signer makes one signature per subject, found by cosign v2's tag, and
// one referrer per attested predicate; each call signs differently, as a
// new key would.
type signer struct{ n atomic.Int32 }

func (s *signer) Fingerprint() string { return "0123abcd" }

func (s *signer) PublicKeyPEM() []byte {
	return []byte("-----BEGIN PUBLIC KEY-----\n-----END PUBLIC KEY-----\n")
}

func (s *signer) SignImage(ref string, subject v1.Descriptor) ([]artifact.Artifact, error) {
	n := s.n.Add(1)
	payload := artifact.NewBlob("application/vnd.dev.cosign.simplesigning.v1+json", []byte(fmt.Sprintf(`{"ref":%q,"n":%d}`, ref, n)))
	sig, err := artifact.New(artifact.Spec{ArtifactType: "application/example-signature", Layers: []artifact.Blob{payload}, Tag: "sha256-" + subject.Digest.Encoded() + ".sig"})
	return []artifact.Artifact{sig}, err
}

func (s *signer) Attest(ref string, subject v1.Descriptor, predicates []sign.Predicate) ([]artifact.Artifact, error) {
	var out []artifact.Artifact
	for _, p := range predicates {
		a, err := artifact.Document(subject, "application/vnd.dev.sigstore.bundle.v0.3+json", "bundle", []byte(fmt.Sprintf("bundle %d of %s", s.n.Load(), p.Type)))
		if err != nil {
			return nil, err
		}
		out = append(out, a)
	}
	return out, nil
}

// Every manifest of an image gets its artifacts once: its SBOM (an OCI
// artifact whose subject is the manifest), a signature under cosign's tag
// and a signed attestation; the referrers set lists them and every blob
// they name is stored.
func TestEnsure(t *testing.T) {
	ctx := context.Background()
	fs, d := storedImage(t)
	var described atomic.Int32
	m := &supplychain.Maker{Metadata: metadata.New(fs, nil), Describe: describe(&described), Signer: &signer{},
		Repository: func(d *metadata.Details) string { return "registry.example/" + d.Name }}
	for range 2 {
		if err := m.Ensure(ctx, d); err != nil {
			t.Fatal(err)
		}
	}
	if described.Load() != 2 {
		t.Errorf("described %d times, want once per manifest (2)", described.Load())
	}
	for mt, subject := range d.Manifests {
		set, err := m.Referrers(ctx, subject)
		if err != nil {
			t.Fatalf("%s: %v", mt, err)
		}
		var types []string
		for _, desc := range set.Manifests {
			types = append(types, desc.ArtifactType)
			data, err := m.Metadata.ReadManifest(ctx, desc.Digest)
			if err != nil {
				t.Fatalf("%s: artifact %s: %v", mt, desc.Digest, err)
			}
			var a v1.Manifest
			if err := json.Unmarshal(data, &a); err != nil || a.Subject == nil || a.Subject.Digest != subject || a.Subject.MediaType != mt || a.ArtifactType != desc.ArtifactType {
				t.Errorf("%s: artifact %s is %s (%v)", mt, desc.Digest, data, err)
				continue
			}
			for _, b := range append([]v1.Descriptor{a.Config}, a.Layers...) {
				if _, err := fs.Stat(ctx, b.Digest); err != nil {
					t.Errorf("%s: blob %s of artifact %s: %v", mt, b.Digest, desc.Digest, err)
				}
			}
			if manifest.IsImage(data) {
				t.Errorf("%s: artifact %s counts as an image", mt, desc.Digest)
			}
		}
		if strings.Join(types, ",") != "application/spdx+json,application/vnd.dev.sigstore.bundle.v0.3+json" &&
			strings.Join(types, ",") != "application/vnd.dev.sigstore.bundle.v0.3+json,application/spdx+json" {
			t.Errorf("%s: referrers %v", mt, types)
		}
		sig, ok := set.Tags["sha256-"+subject.Encoded()+".sig"]
		if !ok {
			t.Fatalf("%s: no .sig tag in %+v", mt, set)
		}
		// The signature names the repository Maker.Repository gave.
		var sm v1.Manifest
		data, err := storage.Get(ctx, fs, sig)
		if err != nil || json.Unmarshal(data, &sm) != nil || len(sm.Layers) != 1 {
			t.Fatalf("%s: signature manifest %s: %v", mt, data, err)
		}
		if payload, err := storage.Get(ctx, fs, sm.Layers[0].Digest); err != nil || !strings.Contains(string(payload), `"ref":"registry.example/shell/hello"`) {
			t.Errorf("%s: signature payload %s: %v", mt, payload, err)
		}
	}
}

// Two replicas that make the same image's artifacts at once (each signs
// differently) end up serving one set: the first stored.
func TestReplicasServeOneSet(t *testing.T) {
	ctx := context.Background()
	fs, d := storedImage(t)
	var described atomic.Int32
	replicas := []*supplychain.Maker{
		{Metadata: metadata.New(fs, nil), Describe: describe(&described), Signer: &signer{}},
		{Metadata: metadata.New(fs, nil), Describe: describe(&described), Signer: &signer{}},
	}
	var wg sync.WaitGroup
	for _, m := range replicas {
		wg.Go(func() {
			if err := m.Ensure(ctx, d); err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	for _, subject := range d.Manifests {
		a, err := replicas[0].Referrers(ctx, subject)
		if err != nil {
			t.Fatal(err)
		}
		b, err := replicas[1].Referrers(ctx, subject)
		if err != nil {
			t.Fatal(err)
		}
		if fmt.Sprint(a) != fmt.Sprint(b) {
			t.Errorf("replicas serve different sets:\n%+v\n%+v", a, b)
		}
	}
}

// A failing description stores nothing: the next Ensure tries again.
func TestEnsureFailureStoresNoSet(t *testing.T) {
	ctx := context.Background()
	fs, d := storedImage(t)
	fail := true
	m := &supplychain.Maker{Metadata: metadata.New(fs, nil), Describe: func(d *metadata.Details, subject v1.Descriptor) ([]supplychain.Document, error) {
		if fail {
			return nil, fmt.Errorf("no closure recorded")
		}
		return nil, nil
	}}
	if err := m.Ensure(ctx, d); err == nil {
		t.Fatal("Ensure succeeded with a failing description")
	}
	if _, err := m.Referrers(ctx, d.Manifests[manifest.OCIManifest]); err == nil {
		t.Error("a set was stored after a failure")
	}
	fail = false
	if err := m.Ensure(ctx, d); err != nil {
		t.Fatal(err)
	}
	if _, err := m.Referrers(ctx, d.Manifests[manifest.OCIManifest]); err != nil {
		t.Errorf("after the retry: %v", err)
	}
}

// An instance that had made an image's artifacts unsigned and is then
// given a key makes and serves the signed set; the unsigned one stays
// for an instance without the key.
func TestANewKeyMakesASignedSet(t *testing.T) {
	ctx := context.Background()
	fs, d := storedImage(t)
	var described atomic.Int32
	unsigned := &supplychain.Maker{Metadata: metadata.New(fs, nil), Describe: describe(&described)}
	signed := &supplychain.Maker{Metadata: metadata.New(fs, nil), Describe: describe(&described), Signer: &signer{}}
	for _, m := range []*supplychain.Maker{unsigned, signed} {
		if err := m.Ensure(ctx, d); err != nil {
			t.Fatal(err)
		}
	}
	subject := d.Manifests[manifest.OCIManifest]
	u, err := unsigned.Referrers(ctx, subject)
	if err != nil {
		t.Fatal(err)
	}
	s, err := signed.Referrers(ctx, subject)
	if err != nil {
		t.Fatal(err)
	}
	if len(u.Tags) != 0 || len(u.Manifests) != 1 {
		t.Errorf("unsigned set %+v, want the SBOM alone", u)
	}
	if len(s.Tags) != 1 || len(s.Manifests) != 2 {
		t.Errorf("signed set %+v, want the SBOM, its attestation and the signature", s)
	}
}
