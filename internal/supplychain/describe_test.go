package supplychain_test

import (
	"bytes"
	"context"
	"testing"

	"github.com/nixery/nixery/internal/attest"
	"github.com/nixery/nixery/internal/attest/attesttest"
	"github.com/nixery/nixery/internal/builder/buildertest"
	"github.com/nixery/nixery/internal/image"
	"github.com/nixery/nixery/internal/manifest"
	"github.com/nixery/nixery/internal/metadata"
	"github.com/nixery/nixery/internal/storage"
	"github.com/nixery/nixery/internal/supplychain"
)

// The SBOMs and provenance of real images, made from their details, pass
// each format's own checks; two servers (two storages, two instance ids)
// make the same SBOM bytes of one image.
func TestDocumentsOfRealImages(t *testing.T) {
	ctx := context.Background()
	var sboms [2][]byte
	for i, id := range []string{"https://one.example", "https://two.example"} {
		b := buildertest.New(t)
		req, err := image.Parse("shell/git/jq", "latest")
		if err != nil {
			t.Fatal(err)
		}
		if _, _, err := b.Manifest(ctx, req, manifest.OCIManifest); err != nil {
			t.Fatal(err)
		}
		d, err := b.Details(ctx, req)
		if err != nil {
			t.Fatal(err)
		}
		img, err := supplychain.Image(d, manifest.OCIManifest, attest.Builder{ID: id, Version: "test"})
		if err != nil {
			t.Fatal(err)
		}
		docs, err := supplychain.Documents(img)
		if err != nil {
			t.Fatal(err)
		}
		if len(docs) != 3 {
			t.Fatalf("%d documents, want SPDX, CycloneDX and provenance", len(docs))
		}
		sp, cd, pv := docs[0], docs[1], docs[2]
		doc := attesttest.SPDX(t, sp.Data)
		if len(doc.Packages) != len(d.Closure)+1 {
			t.Errorf("%d SPDX packages for %d paths", len(doc.Packages), len(d.Closure))
		}
		licences := map[string]string{}
		for _, p := range doc.Packages {
			licences[p.PackageName] = p.PackageLicenseDeclared
		}
		if licences["git"] != "GPL-2.0-or-later" || licences["jq"] != "MIT AND CC-BY-3.0" || licences["libcommon"] != "NOASSERTION" {
			t.Errorf("licences %v", licences)
		}
		attesttest.CycloneDX(t, cd.Data)
		_, prov := attesttest.Provenance(t, pv.Data)
		if got := len(prov.GetBuildDefinition().GetResolvedDependencies()); got != len(d.Roots)+1 {
			t.Errorf("%d resolved dependencies, want the source and %d roots", got, len(d.Roots))
		}
		// What is attested: the SBOMs themselves, the provenance's
		// predicate (cosign wraps it in a statement of its own).
		if !bytes.Equal(sp.Predicate, sp.Data) || sp.PredicateType != attest.PredicateSPDX ||
			!bytes.Equal(cd.Predicate, cd.Data) || cd.PredicateType != attest.PredicateCycloneDX ||
			pv.PredicateType != attest.PredicateProvenance || !bytes.Contains(pv.Predicate, []byte(`"buildDefinition"`)) || bytes.Contains(pv.Predicate, []byte(`"_type"`)) {
			t.Errorf("attested predicates: %s %s %.80s", sp.PredicateType, cd.PredicateType, pv.Predicate)
		}
		sboms[i] = append(sp.Data, cd.Data...)
	}
	if !bytes.Equal(sboms[0], sboms[1]) {
		t.Error("two servers made different SBOMs of one image")
	}
	if _, err := supplychain.Image(&metadata.Details{Name: "x"}, manifest.OCIManifest, attest.Builder{}); err == nil {
		t.Error("details without the manifest gave an image")
	}
}

// A build with a Maker makes the documents of both manifests of its
// image; Summarize finds the three, each in a stored blob of its type.
func TestBuildMakesDocuments(t *testing.T) {
	ctx := context.Background()
	b := buildertest.New(t)
	m := &supplychain.Maker{Metadata: b.Metadata(), Instance: attest.Builder{ID: "https://nixery.example", Version: "test"}}
	b.Artifacts = m
	req, err := image.Parse("shell/hello", "latest")
	if err != nil {
		t.Fatal(err)
	}
	for _, mt := range manifest.MediaTypes {
		_, d, err := b.Manifest(ctx, req, mt)
		if err != nil {
			t.Fatal(err)
		}
		s, err := m.Summarize(ctx, d)
		if err != nil {
			t.Fatalf("%s: %v", mt, err)
		}
		if len(s.Documents) != 3 || s.Fingerprint != "" {
			t.Fatalf("%s: summary %+v, want three unsigned documents", mt, s)
		}
		for i, want := range []string{attest.MediaTypeSPDX, attest.MediaTypeCycloneDX, attest.MediaTypeInToto} {
			doc := s.Documents[i]
			data, err := storage.Get(ctx, b.Storage, doc.Blob)
			if doc.ArtifactType != want || err != nil || int64(len(data)) != doc.Size || !bytes.Contains(data, []byte(d.Encoded())) {
				t.Errorf("%s: document %d: %+v (%v): not a %s naming the manifest", mt, i, doc, err, want)
			}
		}
	}
}
