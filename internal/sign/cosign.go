package sign

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/nixery/nixery/internal/artifact"
)

// Media types, annotations and tags of cosign's formats (cosign's
// pkg/types, pkg/oci/static and pkg/oci/remote; Sigstore's bundle spec).
const (
	// MediaTypeSimpleSigning is a cosign v2 signature payload.
	MediaTypeSimpleSigning = "application/vnd.dev.cosign.simplesigning.v1+json"
	// MediaTypeDSSE is a DSSE envelope, one cosign v2 attestation.
	MediaTypeDSSE = "application/vnd.dsse.envelope.v1+json"
	// MediaTypeBundle is a Sigstore bundle v0.3, the artifact type of
	// cosign v3's signatures and attestations.
	MediaTypeBundle = "application/vnd.dev.sigstore.bundle.v0.3+json"
	// MediaTypeInToto is the DSSE payload type of an in-toto statement.
	MediaTypeInToto = "application/vnd.in-toto+json"

	// AnnotationSignature holds a v2 signature (base64) on its layer.
	AnnotationSignature = "dev.cosignproject.cosign/signature"
	// AnnotationPredicateType is a v2 attestation layer's predicate type.
	AnnotationPredicateType = "predicateType"
	// AnnotationBundleContent and AnnotationBundlePredicateType are on a
	// v3 bundle's manifest: "dsse-envelope", and the statement's
	// predicate type (`cosign tree` shows it).
	AnnotationBundleContent       = "dev.sigstore.bundle.content"
	AnnotationBundlePredicateType = "dev.sigstore.bundle.predicateType"

	// PredicateSign is the predicate type of cosign v3's image
	// signature, a statement with an empty predicate.
	PredicateSign = "https://sigstore.dev/cosign/sign/v1"

	inTotoStatement = "https://in-toto.io/Statement/v1"
)

// SignatureTag is the cosign v2 tag of a manifest digest's signatures,
// "sha256-<hex>.sig".
func SignatureTag(d digest.Digest) string { return artifact.ReferrersTag(d) + ".sig" }

// AttestationTag is the cosign v2 tag of a manifest digest's
// attestations, "sha256-<hex>.att".
func AttestationTag(d digest.Digest) string { return artifact.ReferrersTag(d) + ".att" }

// SignImage signs the image manifest subject (its digest, media type
// and size) of the repository ref, as clients name it ("host/name", the
// simple-signing payload's docker-reference; cosign does not check it,
// but a stable public name keeps replicas' bytes alike). It returns two
// artifacts: cosign v2's, tagged SignatureTag(subject.Digest), and cosign
// v3's bundle, found through the referrers API.
func (s *Signer) SignImage(ref string, subject ocispec.Descriptor) ([]artifact.Artifact, error) {
	if err := checkSubject(subject); err != nil {
		return nil, err
	}
	payload, err := json.Marshal(simpleSigning{
		Critical: critical{
			Identity: identity{DockerReference: ref},
			Image:    imageID{DockerManifestDigest: subject.Digest.String()},
			Type:     "cosign container image signature",
		},
	})
	if err != nil {
		return nil, err
	}
	sig, err := s.sign(payload)
	if err != nil {
		return nil, err
	}
	layer := artifact.NewBlob(MediaTypeSimpleSigning, payload)
	layer.Descriptor.Annotations = map[string]string{AnnotationSignature: base64.StdEncoding.EncodeToString(sig)}
	v2, err := legacy(SignatureTag(subject.Digest), []artifact.Blob{layer})
	if err != nil {
		return nil, err
	}

	// What `cosign sign` v3 signs: a statement naming only the digest.
	statement, err := statementOf("", subject.Digest, Predicate{Type: PredicateSign, Data: []byte("{}")})
	if err != nil {
		return nil, err
	}
	v3, err := s.bundle(subject, statement, PredicateSign)
	if err != nil {
		return nil, err
	}
	return []artifact.Artifact{v2, v3}, nil
}

// Predicate is what one attestation says of an image: an in-toto
// predicate of a type, as JSON.
type Predicate struct {
	// Type is the predicate type: "https://slsa.dev/provenance/v1",
	// "https://spdx.dev/Document" (an SPDX JSON document),
	// "https://cyclonedx.org/bom" (a CycloneDX JSON document); cosign's
	// --type names them slsaprovenance1, spdxjson and cyclonedx.
	Type string
	// Data is the predicate: the provenance's predicate, the SBOM.
	Data []byte
}

// Attest attests predicates about the image manifest subject of the
// repository ref ("host/name"): each becomes an in-toto v1 statement
// whose subject is ref with subject's digest, as `cosign attest` writes
// it, signed in a DSSE envelope. It returns cosign v2's artifact, tagged
// AttestationTag(subject.Digest), with one layer per predicate in their
// order, then one cosign v3 bundle per predicate.
func (s *Signer) Attest(ref string, subject ocispec.Descriptor, predicates []Predicate) ([]artifact.Artifact, error) {
	if err := checkSubject(subject); err != nil {
		return nil, err
	}
	if len(predicates) == 0 {
		return nil, errors.New("attest: no predicates")
	}
	layers := make([]artifact.Blob, 0, len(predicates))
	bundles := make([]artifact.Artifact, 0, len(predicates))
	for i, p := range predicates {
		st, err := statementOf(ref, subject.Digest, p)
		if err != nil {
			return nil, fmt.Errorf("attest: predicate %d: %w", i, err)
		}
		envelope, err := s.envelope(st)
		if err != nil {
			return nil, err
		}
		data, err := json.Marshal(envelope)
		if err != nil {
			return nil, err
		}
		layer := artifact.NewBlob(MediaTypeDSSE, data)
		// The signature is the envelope's; cosign still wants the
		// annotation, empty (its static.NewAttestation).
		layer.Descriptor.Annotations = map[string]string{AnnotationPredicateType: p.Type, AnnotationSignature: ""}
		layers = append(layers, layer)
		b, err := s.bundle(subject, st, p.Type)
		if err != nil {
			return nil, err
		}
		bundles = append(bundles, b)
	}
	v2, err := legacy(AttestationTag(subject.Digest), layers)
	if err != nil {
		return nil, err
	}
	return append([]artifact.Artifact{v2}, bundles...), nil
}

// statementOf is the in-toto v1 statement of a predicate about the
// image: its subject the image's digest, named name ("" for none).
// cosign verifies an attestation only for an image its subject names.
func statementOf(name string, image digest.Digest, p Predicate) ([]byte, error) {
	if p.Type == "" || strings.ContainsAny(p.Type, " \t\r\n") {
		return nil, fmt.Errorf("invalid predicate type %q", p.Type)
	}
	if !json.Valid(p.Data) {
		return nil, fmt.Errorf("the %s predicate is not JSON", p.Type)
	}
	// The predicate keeps its text but for white space: no HTML
	// escaping of the <, > and & of a licence name or a description.
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	err := enc.Encode(inToto{
		Type:          inTotoStatement,
		Subject:       []inTotoSubject{{Name: name, Digest: map[string]string{image.Algorithm().String(): image.Encoded()}}},
		PredicateType: p.Type,
		Predicate:     json.RawMessage(p.Data),
	})
	return bytes.TrimSuffix(b.Bytes(), []byte("\n")), err
}

// checkSubject refuses a subject that is not a manifest descriptor.
func checkSubject(d ocispec.Descriptor) error {
	if err := d.Digest.Validate(); err != nil {
		return fmt.Errorf("subject: %w", err)
	}
	if d.MediaType == "" || d.Size <= 0 {
		return fmt.Errorf("subject %s: media type and size are required", d.Digest)
	}
	return nil
}

// legacy is a cosign v2 signature image under its tag: an OCI image
// manifest (no artifactType, no subject: cosign v2 reads it by tag) whose
// config is an image config listing the layers, as cosign writes it.
func legacy(tag string, layers []artifact.Blob) (artifact.Artifact, error) {
	config := ocispec.Image{
		RootFS: ocispec.RootFS{Type: "layers", DiffIDs: make([]digest.Digest, 0, len(layers))},
		Config: ocispec.ImageConfig{},
	}
	for _, l := range layers {
		config.RootFS.DiffIDs = append(config.RootFS.DiffIDs, l.Descriptor.Digest)
	}
	data, err := json.Marshal(config)
	if err != nil {
		return artifact.Artifact{}, err
	}
	return artifact.New(artifact.Spec{
		Config: artifact.NewBlob(ocispec.MediaTypeImageConfig, data),
		Layers: layers,
		Tag:    tag,
	})
}

// bundle is a cosign v3 bundle artifact: a Sigstore bundle v0.3 with the
// DSSE envelope of statement, about subject, as `cosign attest` (and
// `cosign sign`, v3) push it (cosign's pkg/oci/remote WriteReferrer).
func (s *Signer) bundle(subject ocispec.Descriptor, statement []byte, predicateType string) (artifact.Artifact, error) {
	envelope, err := s.envelope(statement)
	if err != nil {
		return artifact.Artifact{}, err
	}
	data, err := json.Marshal(sigstoreBundle{
		MediaType:            MediaTypeBundle,
		VerificationMaterial: verificationMaterial{PublicKey: publicKey{Hint: s.hint()}},
		DSSEEnvelope:         envelope,
	})
	if err != nil {
		return artifact.Artifact{}, err
	}
	return artifact.New(artifact.Spec{
		ArtifactType: MediaTypeBundle,
		Layers:       []artifact.Blob{artifact.NewBlob(MediaTypeBundle, data)},
		Subject:      subject,
		Annotations: map[string]string{
			AnnotationBundleContent:       "dsse-envelope",
			AnnotationBundlePredicateType: predicateType,
		},
	})
}

// envelope signs an in-toto statement into a DSSE envelope.
func (s *Signer) envelope(statement []byte) (dsseEnvelope, error) {
	sig, err := s.sign(pae(MediaTypeInToto, statement))
	if err != nil {
		return dsseEnvelope{}, err
	}
	return dsseEnvelope{
		PayloadType: MediaTypeInToto,
		Payload:     statement,
		Signatures:  []dsseSignature{{Sig: sig}},
	}, nil
}

// pae is DSSE's pre-authentication encoding, what is signed:
// https://github.com/secure-systems-lab/dsse/blob/v1.0.2/protocol.md
func pae(payloadType string, payload []byte) []byte {
	out := []byte("DSSEv1 " + strconv.Itoa(len(payloadType)) + " " + payloadType + " " + strconv.Itoa(len(payload)) + " ")
	return append(out, payload...)
}

// The simple-signing payload of cosign v2 (sigstore's
// pkg/signature/payload); Optional is null, as cosign writes it without
// annotations.
type simpleSigning struct {
	Critical critical          `json:"critical"`
	Optional map[string]string `json:"optional"`
}

type critical struct {
	Identity identity `json:"identity"`
	Image    imageID  `json:"image"`
	Type     string   `json:"type"`
}

type identity struct {
	DockerReference string `json:"docker-reference"`
}

type imageID struct {
	DockerManifestDigest string `json:"docker-manifest-digest"`
}

type inToto struct {
	Type          string          `json:"_type"`
	Subject       []inTotoSubject `json:"subject"`
	PredicateType string          `json:"predicateType"`
	Predicate     json.RawMessage `json:"predicate"`
}

type inTotoSubject struct {
	Name   string            `json:"name,omitempty"`
	Digest map[string]string `json:"digest"`
}

// dsseEnvelope is a DSSE envelope in JSON: []byte fields are standard
// base64, as DSSE and the bundle's protobuf JSON both encode them.
type dsseEnvelope struct {
	PayloadType string          `json:"payloadType"`
	Payload     []byte          `json:"payload"`
	Signatures  []dsseSignature `json:"signatures"`
}

type dsseSignature struct {
	KeyID string `json:"keyid,omitempty"`
	Sig   []byte `json:"sig"`
}

// sigstoreBundle is a Sigstore bundle v0.3 in protobuf JSON
// (sigstore/protobuf-specs, dev.sigstore.bundle.v1.Bundle), keyed: the
// public key named by its hint, no transparency log entries, no
// timestamps.
type sigstoreBundle struct {
	MediaType            string               `json:"mediaType"`
	VerificationMaterial verificationMaterial `json:"verificationMaterial"`
	DSSEEnvelope         dsseEnvelope         `json:"dsseEnvelope"`
}

type verificationMaterial struct {
	PublicKey publicKey `json:"publicKey"`
}

type publicKey struct {
	Hint string `json:"hint"`
}
