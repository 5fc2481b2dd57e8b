package supplychain

import (
	"encoding/json"
	"fmt"

	"github.com/opencontainers/go-digest"
	v1 "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/nixery/nixery/internal/attest"
	"github.com/nixery/nixery/internal/metadata"
)

// Image is the image that d describes, as package attest makes its SBOMs
// and provenance of it: the manifest of mediaType is the subject, built
// by instance. Details stored before SBOMs existed give an image without
// NAR hashes, references or meta (the documents then say less).
func Image(d *metadata.Details, mediaType string, instance attest.Builder) (attest.Image, error) {
	m, ok := d.Manifests[mediaType]
	if !ok {
		return attest.Image{}, fmt.Errorf("image %s has no manifest of type %s", d.Name, mediaType)
	}
	img := attest.Image{
		Name: d.Name, Tag: d.Tag, Arch: d.Arch, Manifest: m, ManifestMediaType: mediaType,
		Source: attest.Source{
			Type: d.SourceType, URI: d.SourceURI, Description: d.SourceName,
			Identity: d.Source, Revision: d.Revision,
		},
		Builder: instance,
		Closure: make([]attest.Path, 0, len(d.Closure)),
	}
	for _, p := range d.Closure {
		img.Closure = append(img.Closure, attest.Path{Path: p.Path, NarHash: digest.Digest(p.NarHash), NarSize: p.Size, References: p.References})
	}
	for _, p := range d.PackageMeta {
		pkg := attest.Package{Attribute: p.Name, PName: p.PName, Version: p.Version, Homepage: p.Homepage, DrvPath: p.DrvPath, Outputs: p.Outputs}
		for _, l := range p.Licenses {
			pkg.Licenses = append(pkg.Licenses, attest.License{SPDX: l.SPDXID, ShortName: l.ShortName, FullName: l.FullName})
		}
		img.Packages = append(img.Packages, pkg)
	}
	if d.PackageMeta == nil {
		// Details from before meta: the packages by name, their outputs
		// unknown.
		for _, name := range d.Packages {
			img.Packages = append(img.Packages, attest.Package{Attribute: name})
		}
	}
	return img, nil
}

// Documents are the documents of img: its SBOM in SPDX and in CycloneDX,
// and its SLSA provenance (an in-toto statement, attested by its
// predicate).
func Documents(img attest.Image) ([]Document, error) {
	spdx, err := attest.SPDX(img)
	if err != nil {
		return nil, err
	}
	cdx, err := attest.CycloneDX(img)
	if err != nil {
		return nil, err
	}
	prov, err := attest.Provenance(img)
	if err != nil {
		return nil, err
	}
	var st struct {
		Predicate json.RawMessage `json:"predicate"`
	}
	if err := json.Unmarshal(prov, &st); err != nil || len(st.Predicate) == 0 {
		return nil, fmt.Errorf("provenance statement without a predicate: %v", err)
	}
	return []Document{
		{ArtifactType: attest.MediaTypeSPDX, Title: "sbom.spdx.json", Data: spdx, PredicateType: attest.PredicateSPDX, Predicate: spdx},
		{ArtifactType: attest.MediaTypeCycloneDX, Title: "sbom.cdx.json", Data: cdx, PredicateType: attest.PredicateCycloneDX, Predicate: cdx},
		{ArtifactType: attest.MediaTypeInToto, Title: "provenance.json", Data: prov, PredicateType: attest.PredicateProvenance, Predicate: st.Predicate},
	}, nil
}

// supplyDescribe is the default Describe: the documents attest makes of the
// image d describes, built by instance.
func supplyDescribe(instance attest.Builder) func(d *metadata.Details, subject v1.Descriptor) ([]Document, error) {
	return func(d *metadata.Details, subject v1.Descriptor) ([]Document, error) {
		img, err := Image(d, subject.MediaType, instance)
		if err != nil {
			return nil, err
		}
		return Documents(img)
	}
}
