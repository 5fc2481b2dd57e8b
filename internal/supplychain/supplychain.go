// Package supplychain makes, stores and finds the artifacts that say what
// is in an image and who built it: its SBOMs and provenance (the
// documents, made by package attest from what Nix reported) and, with a
// signing key, cosign's signatures of the image and of each document.
//
// The artifacts of an image manifest (the subject) are made once: by the
// build, before the image is announced, or at the first pull of an image
// built before (builder.Artifacts). One call per subject runs in this
// process; across replicas the first set stored wins (metadata.
// CreateReferrers), so every replica serves the same bytes. They are
// stored as blobs, named by the subject's referrers set, and kept by the
// garbage collection exactly as long as the subject.
package supplychain

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/opencontainers/go-digest"
	v1 "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/nixery/nixery/internal/artifact"
	"github.com/nixery/nixery/internal/attest"
	"github.com/nixery/nixery/internal/flight"
	"github.com/nixery/nixery/internal/manifest"
	"github.com/nixery/nixery/internal/metadata"
	"github.com/nixery/nixery/internal/sign"
	"github.com/nixery/nixery/internal/storage"
)

// Document is one document about an image, served as an artifact whose
// type (and single layer's media type) is ArtifactType, its layer titled
// Title (the file name `oras pull` writes).
type Document struct {
	ArtifactType string
	Title        string
	Data         []byte
	// PredicateType is the in-toto predicate type the document is
	// attested as when the image is signed, Predicate the predicate
	// (the document itself, or an in-toto statement's predicate); ""
	// and nil for none.
	PredicateType string
	Predicate     []byte
}

// Signer signs an image and attests its documents (*sign.Signer).
type Signer interface {
	// Fingerprint names the signing key (lower-case hex): the artifacts
	// of each key are a set of their own (metadata.Referrers).
	Fingerprint() string
	// PublicKeyPEM is the public key that verifies the signatures.
	PublicKeyPEM() []byte
	// SignImage returns the artifacts that sign subject, the manifest
	// of the image ref names (a repository without a tag or digest).
	SignImage(ref string, subject v1.Descriptor) ([]artifact.Artifact, error)
	// Attest returns the artifacts that attest predicates of subject.
	Attest(ref string, subject v1.Descriptor, predicates []sign.Predicate) ([]artifact.Artifact, error)
}

// Maker makes the artifacts of images. Metadata is required.
type Maker struct {
	Metadata *metadata.Store
	// Instance is the Nixery instance that provenance names as the
	// builder.
	Instance attest.Builder
	// Describe, if set, makes the documents of the image d describes,
	// for one of its manifests, instead of package attest (tests).
	Describe func(d *metadata.Details, subject v1.Descriptor) ([]Document, error)
	// Signer, if set, signs every image and attests its documents.
	Signer Signer
	// Repository is the repository that signatures name for the image
	// d describes; nil: its name.
	Repository func(d *metadata.Details) string

	flights flight.Group[digest.Digest, struct{}]
}

// makeTimeout bounds the making of one subject's artifacts, detached from
// the pull that asked (another may be waiting for it).
const makeTimeout = 2 * time.Minute

// Ensure makes the artifacts of each manifest of the image d describes,
// unless they exist. They are the manifests', which images of other names
// may share.
func (m *Maker) Ensure(ctx context.Context, d *metadata.Details) error {
	types := make([]string, 0, len(d.Manifests))
	for mt := range d.Manifests {
		types = append(types, mt)
	}
	slices.Sort(types)
	for _, mt := range types {
		subject := d.Manifests[mt]
		_, err := m.flights.Do(ctx, subject, makeTimeout, func(ctx context.Context) (struct{}, error) {
			return struct{}{}, m.ensure(ctx, d, subject)
		}, nil)
		if err != nil {
			return err
		}
	}
	return nil
}

// Referrers finds the artifacts of subject made by this Maker's signer
// (registry.ReferrerFinder).
func (m *Maker) Referrers(ctx context.Context, subject digest.Digest) (metadata.Referrers, error) {
	return m.Metadata.Referrers(ctx, subject, m.signer())
}

// signer names the signer of the artifacts this Maker makes.
func (m *Maker) signer() string {
	if f := m.Fingerprint(); f != "" {
		return f
	}
	return metadata.Unsigned
}

// Fingerprint names the key that signs this Maker's artifacts, "" when
// they are not signed.
func (m *Maker) Fingerprint() string {
	if m.Signer == nil {
		return ""
	}
	return m.Signer.Fingerprint()
}

func (m *Maker) ensure(ctx context.Context, d *metadata.Details, subject digest.Digest) error {
	_, err := m.Referrers(ctx, subject)
	if err == nil || !errors.Is(err, storage.ErrNotFound) {
		return err
	}
	data, err := m.Metadata.ReadManifest(ctx, subject)
	if err != nil {
		return fmt.Errorf("artifacts of %s: %w", subject, err)
	}
	desc := v1.Descriptor{MediaType: manifest.MediaType(data), Digest: subject, Size: int64(len(data))}
	describe := m.Describe
	if describe == nil {
		describe = supplyDescribe(m.Instance)
	}
	docs, err := describe(d, desc)
	if err != nil {
		return fmt.Errorf("artifacts of %s: %w", subject, err)
	}
	var artifacts []artifact.Artifact
	var predicates []sign.Predicate
	for _, doc := range docs {
		a, err := artifact.Document(desc, doc.ArtifactType, doc.Title, doc.Data)
		if err != nil {
			return err
		}
		artifacts = append(artifacts, a)
		if doc.PredicateType != "" {
			predicates = append(predicates, sign.Predicate{Type: doc.PredicateType, Data: doc.Predicate})
		}
	}
	if m.Signer != nil {
		ref := d.Name
		if m.Repository != nil {
			ref = m.Repository(d)
		}
		signed, err := m.Signer.SignImage(ref, desc)
		if err != nil {
			return fmt.Errorf("signing %s: %w", subject, err)
		}
		artifacts = append(artifacts, signed...)
		if len(predicates) > 0 {
			attested, err := m.Signer.Attest(ref, desc, predicates)
			if err != nil {
				return fmt.Errorf("attesting %s: %w", subject, err)
			}
			artifacts = append(artifacts, attested...)
		}
	}
	set, err := m.store(ctx, artifacts)
	if err != nil {
		return fmt.Errorf("artifacts of %s: %w", subject, err)
	}
	_, err = m.Metadata.CreateReferrers(ctx, subject, m.signer(), set)
	return err
}

// store writes the blobs and manifests of artifacts and returns the set
// that lists them.
func (m *Maker) store(ctx context.Context, artifacts []artifact.Artifact) (metadata.Referrers, error) {
	var set metadata.Referrers
	for _, a := range artifacts {
		for _, b := range append(a.Blobs, a.Manifest) {
			if _, err := storage.Put(ctx, m.Metadata.Backend, b.Data); err != nil {
				return set, err
			}
		}
		if a.Subject != "" {
			set.Manifests = append(set.Manifests, a.Manifest.Descriptor)
		}
		if a.Tag != "" {
			if set.Tags == nil {
				set.Tags = map[string]digest.Digest{}
			}
			set.Tags[a.Tag] = a.Manifest.Descriptor.Digest
		}
	}
	return set, nil
}
