package sign

import (
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

	statement, err := json.Marshal(inToto{
		Type:          inTotoStatement,
		Subject:       []inTotoSubject{{Digest: map[string]string{subject.Digest.Algorithm().String(): subject.Digest.Encoded()}}},
		PredicateType: PredicateSign,
		Predicate:     json.RawMessage("{}"),
	})
	if err != nil {
		return nil, err
	}
	v3, err := s.bundle(subject, statement, PredicateSign)
	if err != nil {
		return nil, err
	}
	return []artifact.Artifact{v2, v3}, nil
}

// Attest signs in-toto statements (v1 JSON, as internal/attest writes
// them) about the image manifest subject; each must name subject's digest
// among its subjects. It returns cosign v2's artifact, tagged
// AttestationTag(subject.Digest), with one layer per statement in their
// order, then one cosign v3 bundle per statement.
func (s *Signer) Attest(subject ocispec.Descriptor, statements [][]byte) ([]artifact.Artifact, error) {
	if err := checkSubject(subject); err != nil {
		return nil, err
	}
	if len(statements) == 0 {
		return nil, errors.New("attest: no statements")
	}
	layers := make([]artifact.Blob, 0, len(statements))
	bundles := make([]artifact.Artifact, 0, len(statements))
	for i, st := range statements {
		predicateType, err := checkStatement(st, subject.Digest)
		if err != nil {
			return nil, fmt.Errorf("attest: statement %d: %w", i, err)
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
		layer.Descriptor.Annotations = map[string]string{AnnotationPredicateType: predicateType, AnnotationSignature: ""}
		layers = append(layers, layer)
		b, err := s.bundle(subject, st, predicateType)
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

// checkStatement reads an in-toto statement's predicate type and checks
// that it is about the image: cosign verifies an attestation only for
// an image its statement names.
func checkStatement(data []byte, image digest.Digest) (string, error) {
	var st struct {
		Type          string          `json:"_type"`
		Subject       []inTotoSubject `json:"subject"`
		PredicateType string          `json:"predicateType"`
	}
	if err := json.Unmarshal(data, &st); err != nil {
		return "", fmt.Errorf("not an in-toto statement: %w", err)
	}
	if !strings.HasPrefix(st.Type, "https://in-toto.io/Statement/") {
		return "", fmt.Errorf("_type %q is not an in-toto statement", st.Type)
	}
	if st.PredicateType == "" {
		return "", errors.New("no predicateType")
	}
	for _, sub := range st.Subject {
		if sub.Digest[image.Algorithm().String()] == image.Encoded() {
			return st.PredicateType, nil
		}
	}
	return "", fmt.Errorf("its subjects do not name %s", image)
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
