// Package sign signs images and their attestations with a cosign key, in
// the formats cosign verifies offline against the public key (no
// transparency log, no certificate authority):
//
//   - cosign v2 finds an image's signatures under the tag
//     sha256-<hex>.sig of its manifest digest: an OCI image manifest
//     whose layers are simple-signing payloads
//     (application/vnd.dev.cosign.simplesigning.v1+json) each with its
//     signature in the annotation dev.cosignproject.cosign/signature; and
//     its attestations under sha256-<hex>.att: layers that are DSSE
//     envelopes (application/vnd.dsse.envelope.v1+json) of in-toto
//     statements, each annotated with its predicateType.
//   - cosign v3 finds Sigstore bundles (v0.3) through the referrers API:
//     artifacts of type application/vnd.dev.sigstore.bundle.v0.3+json whose
//     subject is the image manifest, each one bundle holding a DSSE
//     envelope: for the signature an in-toto statement of predicate type
//     https://sigstore.dev/cosign/sign/v1 (what `cosign sign` writes),
//     for an attestation the statement itself; the manifest's annotation
//     dev.sigstore.bundle.predicateType names it. With no bundle among the
//     referrers, v3 falls back to the .sig tag.
//
// docs/supply-chain.md has the client commands that verify them.
//
// Load reads the private key as `cosign generate-key-pair` writes it
// (ECDSA P-256, encrypted with scrypt and NaCl secretbox); nothing of the
// key or its password appears in an error.
//
// Everything is deterministic: ECDSA signatures follow RFC 6979 (the
// nonce derived from the key and the message, no randomness), and no
// manifest holds a time, so the same key and image give the same bytes on
// any replica, and a second signing of an image changes nothing.
package sign

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/pem"
	"fmt"
)

// Signer signs with one private key.
type Signer struct {
	key  *ecdsa.PrivateKey
	spki []byte // the public key, DER SubjectPublicKeyInfo
}

// Load reads a cosign private key file (PEM "ENCRYPTED SIGSTORE PRIVATE
// KEY", or the older "ENCRYPTED COSIGN PRIVATE KEY") and decrypts it with
// the password in passwordFile: the file's content less one trailing line
// ending. passwordFile "" is the empty password (cosign's
// COSIGN_PASSWORD=""). Errors name the files, never their content.
func Load(keyFile, passwordFile string) (*Signer, error) {
	pass, err := password(passwordFile)
	if err != nil {
		return nil, fmt.Errorf("signing key password file: %w", err)
	}
	defer clear(pass)
	data, err := readFile(keyFile)
	if err != nil {
		return nil, fmt.Errorf("signing key: %w", err)
	}
	key, err := decrypt(data, pass)
	if err != nil {
		return nil, fmt.Errorf("signing key %s: %w", keyFile, err)
	}
	return newSigner(key)
}

func newSigner(key *ecdsa.PrivateKey) (*Signer, error) {
	spki, err := x509.MarshalPKIXPublicKey(key.Public())
	if err != nil {
		return nil, fmt.Errorf("signing key: public key: %w", err)
	}
	return &Signer{key: key, spki: spki}, nil
}

// PublicKeyPEM is the public key as `cosign generate-key-pair` writes
// cosign.pub: PEM "PUBLIC KEY", a DER SubjectPublicKeyInfo.
func (s *Signer) PublicKeyPEM() []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: s.spki})
}

// Fingerprint names the key: the SHA-256 of its DER SubjectPublicKeyInfo,
// in lower-case hex, as
//
//	openssl pkey -pubin -in cosign.pub -outform DER | sha256sum
//
// prints it. A Sigstore bundle's publicKey hint (what `cosign sign`
// writes there, and hint returns) is the same hash in base64.
func (s *Signer) Fingerprint() string {
	sum := sha256.Sum256(s.spki)
	return hex.EncodeToString(sum[:])
}

// String names the signer by its public key's fingerprint, so that a
// Signer printed or logged (%v, %+v, slog) never shows the private key.
func (s Signer) String() string { return "sign.Signer(" + s.Fingerprint() + ")" }

// GoString is String for %#v.
func (s Signer) GoString() string { return s.String() }

// hint is the bundle's verificationMaterial.publicKey.hint.
func (s *Signer) hint() string {
	sum := sha256.Sum256(s.spki)
	return base64.StdEncoding.EncodeToString(sum[:])
}

// sign signs the SHA-256 of message: an ASN.1 DER ECDSA signature, as
// cosign makes and verifies them, deterministic (RFC 6979: a nil random
// source).
func (s *Signer) sign(message []byte) ([]byte, error) {
	sum := sha256.Sum256(message)
	sig, err := s.key.Sign(nil, sum[:], crypto.SHA256)
	if err != nil {
		return nil, fmt.Errorf("sign: %w", err)
	}
	return sig, nil
}
