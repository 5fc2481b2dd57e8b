// Package artifact makes OCI 1.1 artifacts: an image manifest that says
// what it holds (artifactType) and which manifest it is about (subject),
// with the blobs it references, as a registry stores and serves them. An
// image's SBOMs, provenance and signatures are artifacts whose subject is
// the image manifest; the referrers API lists them by that subject.
//
// The encoding is deterministic: the same inputs give the same bytes and
// so the same digest, on any server.
//
// Specs: https://github.com/opencontainers/image-spec/blob/v1.1.1/manifest.md
// (artifactType, subject, and the empty config "Guidelines for Artifact
// Usage") and https://github.com/opencontainers/distribution-spec/blob/v1.1.1/spec.md#listing-referrers
// (the descriptors a referrers index lists).
package artifact

import (
	"encoding/json"
	"errors"
	"fmt"
	"strings"

	"github.com/opencontainers/go-digest"
	specs "github.com/opencontainers/image-spec/specs-go"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// Blob is content with its descriptor, as a manifest references it: the
// descriptor's digest and size are those of Data, and its media type and
// annotations are what the referencing manifest says of it.
type Blob struct {
	Descriptor ocispec.Descriptor
	Data       []byte
}

// NewBlob is the blob of data with the media type (and no annotations).
func NewBlob(mediaType string, data []byte) Blob {
	return Blob{
		Descriptor: ocispec.Descriptor{
			MediaType: mediaType,
			Digest:    digest.FromBytes(data),
			Size:      int64(len(data)),
		},
		Data: data,
	}
}

// Empty is the empty JSON blob `{}` (application/vnd.oci.empty.v1+json),
// the config of an artifact that has none.
func Empty() Blob { return NewBlob(ocispec.MediaTypeEmptyJSON, []byte("{}")) }

// Artifact is what a registry stores for one artifact: the manifest and
// the blobs it references.
type Artifact struct {
	// Manifest is the OCI image manifest. Its descriptor is the one a
	// referrers index lists: media type, digest and size, with the
	// manifest's artifactType and annotations copied in (as the
	// distribution spec asks of an index's entries).
	Manifest Blob
	// Blobs are the config and the layers, in that order.
	Blobs []Blob
	// Subject is the digest of the manifest the artifact is about, ""
	// for none: the referrers API lists the artifact under it.
	Subject digest.Digest
	// Tag, if not "", is a tag the manifest is also found under (a
	// cosign v2 ".sig" or ".att" tag, whose manifest has no subject).
	Tag string
}

// ArtifactType is the artifact's type, as the referrers API filters on.
func (a Artifact) ArtifactType() string { return a.Manifest.Descriptor.ArtifactType }

// Spec says what an artifact holds.
type Spec struct {
	// ArtifactType is the manifest's artifactType; required unless
	// Config is set (the spec then takes the config's media type as
	// the artifact type, as cosign v2's signatures do).
	ArtifactType string
	// Config is the config blob; the zero Blob is Empty().
	Config Blob
	// Layers are the artifact's contents, at least one.
	Layers []Blob
	// Subject, if its digest is set, is the manifest the artifact is
	// about: the referrers API lists the artifact under it.
	Subject ocispec.Descriptor
	// Annotations are the manifest's annotations (nil: none).
	Annotations map[string]string
	// Tag: see Artifact.Tag.
	Tag string
}

// New encodes the artifact's manifest.
func New(s Spec) (Artifact, error) {
	if len(s.Layers) == 0 {
		return Artifact{}, errors.New("artifact: no layers")
	}
	config := s.Config
	if config.Descriptor.MediaType == "" {
		config = Empty()
	}
	if s.ArtifactType == "" && config.Descriptor.MediaType == ocispec.MediaTypeEmptyJSON {
		return Artifact{}, errors.New("artifact: an empty config needs an artifact type")
	}
	blobs := []Blob{config}
	m := ocispec.Manifest{
		Versioned:    specs.Versioned{SchemaVersion: 2},
		MediaType:    ocispec.MediaTypeImageManifest,
		ArtifactType: s.ArtifactType,
		Config:       config.Descriptor,
		Layers:       make([]ocispec.Descriptor, 0, len(s.Layers)),
		Annotations:  s.Annotations,
	}
	for _, l := range s.Layers {
		if err := check(l); err != nil {
			return Artifact{}, err
		}
		m.Layers = append(m.Layers, l.Descriptor)
		blobs = append(blobs, l)
	}
	if err := check(config); err != nil {
		return Artifact{}, err
	}
	if s.Subject.Digest != "" {
		if err := s.Subject.Digest.Validate(); err != nil {
			return Artifact{}, fmt.Errorf("artifact: subject: %w", err)
		}
		m.Subject = &ocispec.Descriptor{MediaType: s.Subject.MediaType, Digest: s.Subject.Digest, Size: s.Subject.Size}
	}
	data, err := json.Marshal(m)
	if err != nil {
		return Artifact{}, fmt.Errorf("artifact: %w", err)
	}
	manifest := NewBlob(ocispec.MediaTypeImageManifest, data)
	manifest.Descriptor.ArtifactType = s.ArtifactType
	if manifest.Descriptor.ArtifactType == "" {
		// "If the artifactType is empty or missing in the image manifest,
		// the value of artifactType MUST be set to the config descriptor
		// mediaType value" (distribution spec, listing referrers).
		manifest.Descriptor.ArtifactType = config.Descriptor.MediaType
	}
	manifest.Descriptor.Annotations = s.Annotations
	return Artifact{Manifest: manifest, Blobs: blobs, Subject: s.Subject.Digest, Tag: s.Tag}, nil
}

// check refuses a blob whose descriptor does not describe its data.
func check(b Blob) error {
	d := b.Descriptor
	switch {
	case d.MediaType == "" || strings.ContainsAny(d.MediaType, " \t\r\n"):
		return fmt.Errorf("artifact: blob %s: invalid media type %q", d.Digest, d.MediaType)
	case d.Size != int64(len(b.Data)):
		return fmt.Errorf("artifact: blob %s: size %d, data %d bytes", d.Digest, d.Size, len(b.Data))
	case d.Digest != digest.FromBytes(b.Data):
		return fmt.Errorf("artifact: blob %s: digest does not match its data", d.Digest)
	}
	return nil
}

// Document is an artifact of one document about subject, as `oras
// attach` makes one: its artifact type is the document's media type, its
// one layer the document, titled name (org.opencontainers.image.title,
// the file name `oras pull` writes it to; it pulls no untitled layer).
func Document(subject ocispec.Descriptor, mediaType, name string, data []byte) (Artifact, error) {
	doc := NewBlob(mediaType, data)
	doc.Descriptor.Annotations = map[string]string{ocispec.AnnotationTitle: name}
	return New(Spec{ArtifactType: mediaType, Layers: []Blob{doc}, Subject: subject})
}

// Index is the referrers index of artifacts about one subject: the image
// index the referrers API answers with, which a registry without it
// keeps under the subject's referrers tag ("sha256-<hex>", the
// distribution spec's referrers tag schema). It lists each artifact's
// Manifest.Descriptor, in the order given.
func Index(artifacts ...Artifact) ([]byte, error) {
	manifests := make([]ocispec.Descriptor, 0, len(artifacts))
	for _, a := range artifacts {
		manifests = append(manifests, a.Manifest.Descriptor)
	}
	return IndexOf(manifests)
}

// IndexOf is the referrers index that lists manifests, in the order
// given (none: an empty list, never null).
func IndexOf(manifests []ocispec.Descriptor) ([]byte, error) {
	if manifests == nil {
		manifests = []ocispec.Descriptor{}
	}
	return json.Marshal(ocispec.Index{
		Versioned: specs.Versioned{SchemaVersion: 2},
		MediaType: ocispec.MediaTypeImageIndex,
		Manifests: manifests,
	})
}

// ReferrersTag is the tag of the referrers tag schema for a subject's
// digest: "<algorithm>-<hex>".
func ReferrersTag(subject digest.Digest) string {
	return subject.Algorithm().String() + "-" + subject.Encoded()
}
