package sign

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"log/slog"
	"math/big"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"golang.org/x/crypto/nacl/secretbox"
	"golang.org/x/crypto/scrypt"

	"github.com/nixery/nixery/internal/artifact"
)

// encryptKey writes a private key as cosign does (pkg/cosign/keys.go over
// go-securesystemslib's encrypted): PKCS #8, scrypt + secretbox, PEM.
func encryptKey(t testing.TB, key any, password, pemType string, n int) []byte {
	t.Helper()
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	salt, nonce := make([]byte, 32), [24]byte{}
	rand.Read(salt)
	rand.Read(nonce[:])
	derived, err := scrypt.Key([]byte(password), salt, n, 8, 1, 32)
	if err != nil {
		t.Fatal(err)
	}
	var boxKey [32]byte
	copy(boxKey[:], derived)
	body, err := json.Marshal(map[string]any{
		"kdf":        map[string]any{"name": "scrypt", "params": map[string]int{"N": n, "r": 8, "p": 1}, "salt": salt},
		"cipher":     map[string]any{"name": "nacl/secretbox", "nonce": nonce[:]},
		"ciphertext": secretbox.Seal(nil, der, &nonce, &boxKey),
	})
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: pemType, Bytes: body})
}

// fixture writes a fresh P-256 key encrypted with password (scrypt's
// legacy strength, the fastest cosign accepts) and returns the files
// and the key.
func fixture(t testing.TB, password string) (keyFile, passwordFile string, key *ecdsa.PrivateKey) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	keyFile = filepath.Join(dir, "cosign.key")
	passwordFile = filepath.Join(dir, "password")
	if err := os.WriteFile(keyFile, encryptKey(t, key, password, pemSigstore, 1<<15), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(passwordFile, []byte(password), 0o600); err != nil {
		t.Fatal(err)
	}
	return keyFile, passwordFile, key
}

// writer writes files into dir and returns their paths.
func writer(t *testing.T, dir string) func(name string, data []byte) string {
	return func(name string, data []byte) string {
		t.Helper()
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, data, 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
}

func TestLoad(t *testing.T) {
	keyFile, passwordFile, key := fixture(t, "correct horse")
	s, err := Load(keyFile, passwordFile)
	if err != nil {
		t.Fatal(err)
	}
	if !s.key.Equal(key) {
		t.Error("Load returned another key")
	}
	block, _ := pem.Decode(s.PublicKeyPEM())
	pub, err := x509.ParsePKIXPublicKey(block.Bytes)
	if err != nil || block.Type != "PUBLIC KEY" || !key.PublicKey.Equal(pub) {
		t.Errorf("PublicKeyPEM = %s (%v)", s.PublicKeyPEM(), err)
	}
	sum := sha256.Sum256(block.Bytes)
	if fp := s.Fingerprint(); len(fp) != 64 || fp != digest.NewDigestFromBytes(digest.SHA256, sum[:]).Encoded() {
		t.Errorf("Fingerprint = %q", fp)
	}
	if s.hint() != base64.StdEncoding.EncodeToString(sum[:]) {
		t.Errorf("hint = %q", s.hint())
	}
	raw, err := key.Bytes()
	if err != nil {
		t.Fatal(err)
	}
	secret := new(big.Int).SetBytes(raw).String() // as fmt would print the field
	for _, format := range []string{"%v", "%+v", "%#v", "%s"} {
		for _, v := range []any{s, *s} {
			if out := fmt.Sprintf(format, v); strings.Contains(out, secret) || !strings.Contains(out, s.Fingerprint()) {
				t.Errorf("Sprintf(%q, %T) = %q", format, v, out)
			}
		}
	}
	var log bytes.Buffer
	slog.New(slog.NewTextHandler(&log, nil)).Info("signing", "signer", s)
	if strings.Contains(log.String(), secret) || !strings.Contains(log.String(), s.Fingerprint()) {
		t.Errorf("logged %q", log.String())
	}
}

// TestLoadPasswords: the empty password, a file's line ending, cosign's
// older PEM type and each scrypt strength it writes.
func TestLoadPasswords(t *testing.T) {
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	write := writer(t, t.TempDir())
	empty := encryptKey(t, key, "", pemSigstore, 1<<15)
	block, _ := pem.Decode(empty)
	for _, tt := range []struct {
		name         string
		key          []byte
		passwordFile string // content; "-" for none
	}{
		{"empty password, no file", empty, "-"},
		{"empty password, empty file", empty, ""},
		{"older PEM type", pem.EncodeToMemory(&pem.Block{Type: pemCosign, Bytes: block.Bytes}), "-"},
		{"cosign's default strength", encryptKey(t, key, "pw", pemSigstore, 1<<16), "pw\n"},
	} {
		keyFile := write("key", tt.key)
		pf := ""
		if tt.passwordFile != "-" {
			pf = write("password", []byte(tt.passwordFile))
		}
		s, err := Load(keyFile, pf)
		if err != nil || !s.key.Equal(key) {
			t.Errorf("%s: %v", tt.name, err)
		}
	}
}

// TestPasswordFile: a password file's content less one line ending.
func TestPasswordFile(t *testing.T) {
	write := writer(t, t.TempDir())
	for content, want := range map[string]string{
		"":       "",
		"pw":     "pw",
		"pw\n":   "pw",
		"pw\r\n": "pw",
		"pw\n\n": "pw\n",
		" pw \n": " pw ",
		"p\nw":   "p\nw",
		"\n":     "",
		"pw\r":   "pw\r",
	} {
		got, err := password(write("password", []byte(content)))
		if err != nil || string(got) != want {
			t.Errorf("password file %q: %q (%v), want %q", content, got, err, want)
		}
	}
	if got, err := password(""); got != nil || err != nil {
		t.Errorf("no password file: %q, %v", got, err)
	}
}

// TestLoadRefuses: every refusal names the file, and no error holds the
// password or any of the key's bytes.
func TestLoadRefuses(t *testing.T) {
	const secret = "s3cret-Passw0rd"
	keyFile, passwordFile, key := fixture(t, secret)
	dir := t.TempDir()
	write := writer(t, dir)
	keyPEM, _ := os.ReadFile(keyFile)
	block, _ := pem.Decode(keyPEM)
	_, edKey, _ := ed25519.GenerateKey(rand.Reader)
	p384, _ := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	tampered := bytes.Replace(block.Bytes, []byte(`"N":32768`), []byte(`"N":1073741824`), 1)
	der, _ := x509.MarshalPKCS8PrivateKey(key)
	for _, tt := range []struct {
		name, keyFile, passwordFile, want string
	}{
		{"wrong password", keyFile, write("wrong", []byte("wrong")), "wrong password"},
		{"no password", keyFile, "", "wrong password"},
		{"missing key", filepath.Join(dir, "none"), passwordFile, "none"},
		{"missing password file", keyFile, filepath.Join(dir, "nopw"), "nopw"},
		{"not PEM", write("text", []byte(secret)), passwordFile, "not a PEM file"},
		{"unencrypted key", write("plain", pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})), passwordFile, `PEM type "PRIVATE KEY"`},
		{"tampered scrypt cost", write("tampered", pem.EncodeToMemory(&pem.Block{Type: pemSigstore, Bytes: tampered})), passwordFile, "unsupported scrypt parameters"},
		{"ed25519", write("ed", encryptKey(t, edKey, secret, pemSigstore, 1<<15)), passwordFile, "want ECDSA P-256"},
		{"P-384", write("p384", encryptKey(t, p384, secret, pemSigstore, 1<<15)), passwordFile, "ECDSA P-384 key"},
		{"huge key file", write("huge", bytes.Repeat([]byte("a"), maxFile+1)), passwordFile, "larger than"},
	} {
		_, err := Load(tt.keyFile, tt.passwordFile)
		if err == nil {
			t.Errorf("%s: no error", tt.name)
			continue
		}
		msg := err.Error()
		if !strings.Contains(msg, tt.want) {
			t.Errorf("%s: %q, want %q in it", tt.name, msg, tt.want)
		}
		if strings.Contains(msg, secret) || strings.Contains(msg, string(block.Bytes[:20])) {
			t.Errorf("%s: the error shows a secret: %q", tt.name, msg)
		}
		if !strings.Contains(msg, "signing key") {
			t.Errorf("%s: %q does not say it is about the signing key", tt.name, msg)
		}
	}
}

// image is a subject descriptor: an image manifest of some size.
func image(b byte) ocispec.Descriptor {
	data := bytes.Repeat([]byte{b}, 100)
	return ocispec.Descriptor{MediaType: ocispec.MediaTypeImageManifest, Digest: digest.FromBytes(data), Size: int64(len(data))}
}

// predicate is a predicate of a type.
func predicate(typ string) Predicate {
	return Predicate{Type: typ, Data: []byte(`{"x": "<a & b>", "type": "` + typ + `"}`)}
}

// verify checks an ASN.1 ECDSA signature over message's SHA-256.
func verify(t *testing.T, s *Signer, message, sig []byte) {
	t.Helper()
	sum := sha256.Sum256(message)
	if !ecdsa.VerifyASN1(&s.key.PublicKey, sum[:], sig) {
		t.Errorf("signature does not verify over %.80q", message)
	}
}

var (
	testSigner     *Signer
	testSignerErr  error
	testSignerOnce sync.Once
)

// load is one signer for the tests that sign (a Load runs scrypt, slow
// under the race detector).
func load(t *testing.T) *Signer {
	t.Helper()
	testSignerOnce.Do(func() {
		keyFile, passwordFile, _ := fixture(t, "pw")
		testSigner, testSignerErr = Load(keyFile, passwordFile)
	})
	if testSignerErr != nil {
		t.Fatal(testSignerErr)
	}
	return testSigner
}

// manifestOf decodes an artifact's manifest and checks that every blob it
// names is among the artifact's blobs, as a registry must find them.
func manifestOf(t *testing.T, a artifact.Artifact) ocispec.Manifest {
	t.Helper()
	var m ocispec.Manifest
	if err := json.Unmarshal(a.Manifest.Data, &m); err != nil {
		t.Fatal(err)
	}
	want := append([]ocispec.Descriptor{m.Config}, m.Layers...)
	if len(a.Blobs) != len(want) {
		t.Fatalf("%d blobs for %d descriptors", len(a.Blobs), len(want))
	}
	for i, d := range want {
		if a.Blobs[i].Descriptor.Digest != d.Digest || digest.FromBytes(a.Blobs[i].Data) != d.Digest {
			t.Errorf("blob %d is not %s", i, d.Digest)
		}
	}
	return m
}

func TestSignImage(t *testing.T) {
	s := load(t)
	subject := image(1)
	arts, err := s.SignImage("registry.example/shell/git", subject)
	if err != nil {
		t.Fatal(err)
	}
	if len(arts) != 2 {
		t.Fatalf("%d artifacts, want 2", len(arts))
	}

	// cosign v2: the .sig tag, a simple-signing payload signed.
	v2 := arts[0]
	if want := "sha256-" + subject.Digest.Encoded() + ".sig"; v2.Tag != want {
		t.Errorf("tag %q, want %q", v2.Tag, want)
	}
	m := manifestOf(t, v2)
	if m.Subject != nil || len(m.Layers) != 1 || m.Layers[0].MediaType != MediaTypeSimpleSigning || m.Config.MediaType != ocispec.MediaTypeImageConfig {
		t.Fatalf("v2 manifest %s", v2.Manifest.Data)
	}
	payload := v2.Blobs[1].Data
	want := `{"critical":{"identity":{"docker-reference":"registry.example/shell/git"},"image":{"docker-manifest-digest":"` + subject.Digest.String() + `"},"type":"cosign container image signature"},"optional":null}`
	if string(payload) != want {
		t.Errorf("payload %s\nwant    %s", payload, want)
	}
	sig, err := base64.StdEncoding.DecodeString(m.Layers[0].Annotations[AnnotationSignature])
	if err != nil {
		t.Fatal(err)
	}
	verify(t, s, payload, sig)
	var config ocispec.Image
	if err := json.Unmarshal(v2.Blobs[0].Data, &config); err != nil || len(config.RootFS.DiffIDs) != 1 || config.RootFS.DiffIDs[0] != m.Layers[0].Digest {
		t.Errorf("config %s (%v)", v2.Blobs[0].Data, err)
	}

	// cosign v3: a bundle about the subject, its statement cosign's.
	v3 := arts[1]
	st := checkBundle(t, s, v3, subject, PredicateSign)
	want = `{"_type":"https://in-toto.io/Statement/v1","subject":[{"digest":{"sha256":"` + subject.Digest.Encoded() + `"}}],"predicateType":"https://sigstore.dev/cosign/sign/v1","predicate":{}}`
	if string(st) != want {
		t.Errorf("statement\n%s\nwant\n%s", st, want)
	}
	if v2.Subject != "" || v3.Subject != subject.Digest {
		t.Errorf("subjects %q and %q", v2.Subject, v3.Subject)
	}
}

// checkBundle checks a v3 bundle artifact about subject and returns the
// statement it signs.
func checkBundle(t *testing.T, s *Signer, a artifact.Artifact, subject ocispec.Descriptor, predicateType string) []byte {
	t.Helper()
	m := manifestOf(t, a)
	if a.Tag != "" || a.ArtifactType() != MediaTypeBundle || m.ArtifactType != MediaTypeBundle || m.Config.MediaType != ocispec.MediaTypeEmptyJSON {
		t.Errorf("bundle manifest %s (tag %q)", a.Manifest.Data, a.Tag)
	}
	if m.Subject == nil || m.Subject.Digest != subject.Digest || m.Subject.MediaType != subject.MediaType || m.Subject.Size != subject.Size {
		t.Errorf("subject %+v, want %+v", m.Subject, subject)
	}
	if m.Annotations[AnnotationBundlePredicateType] != predicateType || m.Annotations[AnnotationBundleContent] != "dsse-envelope" {
		t.Errorf("annotations %v", m.Annotations)
	}
	if a.Manifest.Descriptor.Annotations[AnnotationBundlePredicateType] != predicateType {
		t.Errorf("the referrers descriptor lacks the annotations: %+v", a.Manifest.Descriptor)
	}
	if len(m.Layers) != 1 || m.Layers[0].MediaType != MediaTypeBundle {
		t.Fatalf("layers %+v", m.Layers)
	}
	var b sigstoreBundle
	if err := json.Unmarshal(a.Blobs[1].Data, &b); err != nil {
		t.Fatal(err)
	}
	if b.MediaType != MediaTypeBundle || b.VerificationMaterial.PublicKey.Hint != s.hint() || b.DSSEEnvelope.PayloadType != MediaTypeInToto || len(b.DSSEEnvelope.Signatures) != 1 {
		t.Errorf("bundle %s", a.Blobs[1].Data)
	}
	verify(t, s, pae(MediaTypeInToto, b.DSSEEnvelope.Payload), b.DSSEEnvelope.Signatures[0].Sig)
	st := decodeStatement(t, b.DSSEEnvelope.Payload)
	if st.Type != inTotoStatement || st.PredicateType != predicateType || len(st.Subject) != 1 || st.Subject[0].Digest["sha256"] != subject.Digest.Encoded() {
		t.Errorf("statement %s", b.DSSEEnvelope.Payload)
	}
	return b.DSSEEnvelope.Payload
}

// decodeStatement reads an in-toto statement.
func decodeStatement(t *testing.T, data []byte) inToto {
	t.Helper()
	var st inToto
	if err := json.Unmarshal(data, &st); err != nil {
		t.Fatalf("statement %s: %v", data, err)
	}
	return st
}

func TestAttest(t *testing.T) {
	s := load(t)
	subject := image(2)
	types := []string{"https://slsa.dev/provenance/v1", "https://spdx.dev/Document", "https://cyclonedx.org/bom"}
	var predicates []Predicate
	for _, pt := range types {
		predicates = append(predicates, predicate(pt))
	}
	arts, err := s.Attest("registry.example/shell/git", subject, predicates)
	if err != nil {
		t.Fatal(err)
	}
	if len(arts) != 1+len(types) {
		t.Fatalf("%d artifacts, want %d", len(arts), 1+len(types))
	}
	v2 := arts[0]
	if want := "sha256-" + subject.Digest.Encoded() + ".att"; v2.Tag != want || v2.Subject != "" {
		t.Errorf("tag %q, subject %q; want %q and none", v2.Tag, v2.Subject, want)
	}
	m := manifestOf(t, v2)
	if len(m.Layers) != len(types) {
		t.Fatalf("%d layers", len(m.Layers))
	}
	for i, pt := range types {
		l := m.Layers[i]
		if sig, ok := l.Annotations[AnnotationSignature]; l.MediaType != MediaTypeDSSE || l.Annotations[AnnotationPredicateType] != pt || !ok || sig != "" {
			t.Errorf("layer %d: %+v", i, l)
		}
		var env dsseEnvelope
		if err := json.Unmarshal(v2.Blobs[1+i].Data, &env); err != nil {
			t.Fatal(err)
		}
		want := `{"_type":"https://in-toto.io/Statement/v1","subject":[{"name":"registry.example/shell/git","digest":{"sha256":"` +
			subject.Digest.Encoded() + `"}}],"predicateType":"` + pt + `","predicate":{"x":"<a & b>","type":"` + pt + `"}}`
		if string(env.Payload) != want || env.PayloadType != MediaTypeInToto {
			t.Errorf("layer %d: statement\n%s\nwant\n%s", i, env.Payload, want)
		}
		verify(t, s, pae(MediaTypeInToto, env.Payload), env.Signatures[0].Sig)
		if st := checkBundle(t, s, arts[1+i], subject, pt); string(st) != want {
			t.Errorf("bundle %d signs %s", i, st)
		}
	}
}

func TestAttestRefuses(t *testing.T) {
	s := load(t)
	subject := image(3)
	for _, tt := range []struct {
		name       string
		subject    ocispec.Descriptor
		predicates []Predicate
		want       string
	}{
		{"none", subject, nil, "no predicates"},
		{"no type", subject, []Predicate{{Data: []byte("{}")}}, "invalid predicate type"},
		{"not JSON", subject, []Predicate{{Type: "p", Data: []byte("{")}}, "not JSON"},
		{"no subject digest", ocispec.Descriptor{MediaType: "m", Size: 1}, []Predicate{predicate("p")}, "subject"},
		{"no subject size", ocispec.Descriptor{MediaType: "m", Digest: subject.Digest}, []Predicate{predicate("p")}, "size"},
	} {
		if _, err := s.Attest("r/x", tt.subject, tt.predicates); err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%s: %v, want %q", tt.name, err, tt.want)
		}
	}
	if _, err := s.SignImage("r/x", ocispec.Descriptor{}); err == nil {
		t.Error("SignImage signed no subject")
	}
}

// TestDeterministic: the same key and image give the same bytes (RFC
// 6979 signatures), so that replicas agree.
func TestDeterministic(t *testing.T) {
	s := load(t)
	subject := image(5)
	st := []Predicate{predicate("https://slsa.dev/provenance/v1")}
	for _, f := range []func() ([]artifact.Artifact, error){
		func() ([]artifact.Artifact, error) { return s.SignImage("r/x", subject) },
		func() ([]artifact.Artifact, error) { return s.Attest("r/x", subject, st) },
	} {
		a, err := f()
		if err != nil {
			t.Fatal(err)
		}
		b, _ := f()
		for i := range a {
			if a[i].Manifest.Descriptor.Digest != b[i].Manifest.Descriptor.Digest {
				t.Errorf("artifact %d: %s, then %s", i, a[i].Manifest.Descriptor.Digest, b[i].Manifest.Descriptor.Digest)
			}
		}
	}
}

func TestPAE(t *testing.T) {
	// The DSSE spec's own example.
	got := string(pae("http://example.com/HelloWorld", []byte("hello world")))
	if want := "DSSEv1 29 http://example.com/HelloWorld 11 hello world"; got != want {
		t.Errorf("pae = %q, want %q", got, want)
	}
}
