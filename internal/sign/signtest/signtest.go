// Package signtest checks signed images with the real clients that
// scripts/storage-servers builds (cosign v3 and v2, oras, regctl, crane)
// against any registry on 127.0.0.1: a test registry (crane's) or Nixery
// itself. Every client runs with a temporary HOME and configuration, and
// a dead proxy (127.0.0.1:9) for anything but 127.0.0.1, so that a call
// to a transparency log, a certificate authority or a TUF repository
// fails the check instead of reaching the internet.
package signtest

import (
	"archive/tar"
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/nixery/nixery/internal/artifact"
	"github.com/nixery/nixery/internal/need"
)

// Clients runs the client programs of one bin directory.
type Clients struct {
	bin    string
	env    []string
	docker string // DOCKER_CONFIG: the clients' credentials
	// Dir is a temporary directory of the test's own (keys, pulls).
	Dir string
}

// Login gives every client the credentials of user for host (a private
// Nixery), as `docker login` writes them: cosign, oras, regctl and crane
// all read Docker's config.json.
func (c *Clients) Login(t testing.TB, host, user, password string) {
	t.Helper()
	auth := base64.StdEncoding.EncodeToString([]byte(user + ":" + password))
	data, err := json.Marshal(map[string]any{"auths": map[string]any{host: map[string]string{"auth": auth}}})
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(c.docker, "config.json"), data, 0o600); err != nil {
		t.Fatal(err)
	}
}

// New finds the clients in bin (storagetest.BinDir()) and makes their
// temporary homes. It skips the test when one is missing (fails it
// under NIXERY_REQUIRE_E2E).
func New(t testing.TB, bin string) *Clients {
	t.Helper()
	for _, name := range []string{"cosign", "cosign2", "oras", "regctl", "crane"} {
		if _, err := os.Stat(filepath.Join(bin, name)); err != nil {
			need.Skipf(t, "%s not found in %s: run scripts/storage-servers", name, bin)
		}
	}
	dir := t.TempDir()
	env := []string{"PATH=" + os.Getenv("PATH")}
	for _, kv := range [][2]string{
		{"HOME", "home"}, {"DOCKER_CONFIG", "docker"}, {"XDG_CONFIG_HOME", "config"},
		{"XDG_CACHE_HOME", "cache"}, {"XDG_DATA_HOME", "data"}, {"TUF_ROOT", "tuf"},
		{"SIGSTORE_CACHE_DIR", "sigstore"}, {"REGCTL_CONFIG", "regctl/config.json"}, {"TMPDIR", "tmp"},
	} {
		p := filepath.Join(dir, kv[1])
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if kv[0] != "REGCTL_CONFIG" {
			if err := os.MkdirAll(p, 0o755); err != nil {
				t.Fatal(err)
			}
		}
		env = append(env, kv[0]+"="+p)
	}
	env = append(env,
		// Go never proxies 127.0.0.1; everything else meets a closed port.
		"HTTPS_PROXY=http://127.0.0.1:9", "HTTP_PROXY=http://127.0.0.1:9",
		"https_proxy=http://127.0.0.1:9", "http_proxy=http://127.0.0.1:9",
		"NO_PROXY=127.0.0.1,localhost", "no_proxy=127.0.0.1,localhost",
	)
	work := filepath.Join(dir, "work")
	if err := os.MkdirAll(work, 0o755); err != nil {
		t.Fatal(err)
	}
	return &Clients{bin: bin, env: env, docker: filepath.Join(dir, "docker"), Dir: work}
}

// Run runs a client (by its name in the bin directory) for at most two
// minutes, with extra environment variables, and returns its standard
// output and error, and whether it exited 0.
func (c *Clients) Run(t testing.TB, env []string, name string, args ...string) (stdout, stderr string, err error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, filepath.Join(c.bin, name), args...)
	cmd.Dir = c.Dir
	cmd.Env = append(append([]string{}, c.env...), env...)
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	err = cmd.Run()
	if strings.Contains(errOut.String(), "127.0.0.1:9") {
		t.Errorf("%s %s called outside 127.0.0.1:\n%s", name, strings.Join(args, " "), errOut.String())
	}
	return out.String(), errOut.String(), err
}

// Must is Run that fails the test unless the client exits 0, and
// returns its standard output.
func (c *Clients) Must(t testing.TB, env []string, name string, args ...string) string {
	t.Helper()
	out, errOut, err := c.Run(t, env, name, args...)
	if err != nil {
		t.Errorf("%s %s: %v\nstdout: %s\nstderr: %s", name, strings.Join(args, " "), err, out, errOut)
	}
	return out
}

// KeyPair has the real `cosign generate-key-pair` write a key pair
// encrypted with password into a directory of its own, and returns the
// paths of cosign.key and cosign.pub.
func (c *Clients) KeyPair(t testing.TB, name, password string) (key, pub string) {
	t.Helper()
	dir := filepath.Join(c.Dir, name)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(filepath.Join(c.bin, "cosign"), "generate-key-pair")
	cmd.Dir = dir
	cmd.Env = append(append([]string{}, c.env...), "COSIGN_PASSWORD="+password)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("cosign generate-key-pair: %v\n%s", err, out)
	}
	return filepath.Join(dir, "cosign.key"), filepath.Join(dir, "cosign.pub")
}

// PushImage has crane push a small image (one layer of one file) to ref
// ("127.0.0.1:port/name:tag") and returns its manifest's descriptor: an
// OCI manifest, or with docker Docker's schema 2 (Nixery serves both).
func (c *Clients) PushImage(t testing.TB, ref string, docker bool) ocispec.Descriptor {
	t.Helper()
	layer := filepath.Join(c.Dir, "layer.tar")
	if err := os.WriteFile(layer, tarOf("hello.txt", "hello from the signing test\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	args := []string{"append", "--insecure", "-f", layer, "-t", ref}
	if !docker {
		args = append(args, "--oci-empty-base")
	}
	c.Must(t, nil, "crane", args...)
	host, repo, tag := split(t, ref)
	d := Head(t, host, repo, tag)
	if want := map[bool]string{true: "application/vnd.docker.distribution.manifest.v2+json", false: ocispec.MediaTypeImageManifest}[docker]; d.MediaType != want {
		t.Fatalf("crane pushed a %s manifest, want %s", d.MediaType, want)
	}
	return d
}

// tarOf is a tar archive of one regular file.
func tarOf(name, content string) []byte {
	var b bytes.Buffer
	w := tar.NewWriter(&b)
	w.WriteHeader(&tar.Header{Name: name, Mode: 0o644, Size: int64(len(content)), Typeflag: tar.TypeReg})
	w.Write([]byte(content))
	w.Close()
	return b.Bytes()
}

// split reads "host/name:tag" (or "@digest").
func split(t testing.TB, ref string) (host, repo, reference string) {
	t.Helper()
	host, rest, ok := strings.Cut(ref, "/")
	if !ok {
		t.Fatalf("reference %q has no host", ref)
	}
	if i := strings.LastIndex(rest, "@"); i >= 0 {
		return host, rest[:i], rest[i+1:]
	}
	if i := strings.LastIndex(rest, ":"); i >= 0 {
		return host, rest[:i], rest[i+1:]
	}
	return host, rest, "latest"
}

// Head asks the registry for a manifest's descriptor, OCI first.
func Head(t testing.TB, host, repo, reference string) ocispec.Descriptor {
	t.Helper()
	req, _ := http.NewRequest(http.MethodHead, "http://"+host+"/v2/"+repo+"/manifests/"+reference, nil)
	req.Header.Set("Accept", ocispec.MediaTypeImageManifest+", application/vnd.docker.distribution.manifest.v2+json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	d := digest.Digest(resp.Header.Get("Docker-Content-Digest"))
	if resp.StatusCode != http.StatusOK || d.Validate() != nil {
		t.Fatalf("HEAD %s/%s:%s: %s, digest %q", host, repo, reference, resp.Status, d)
	}
	return ocispec.Descriptor{MediaType: resp.Header.Get("Content-Type"), Digest: d, Size: resp.ContentLength}
}

// Push uploads an artifact's blobs and manifest to host/repo (plain HTTP,
// the distribution spec's POST-then-PUT upload), by digest and, if it has
// one, under its tag.
func Push(t testing.TB, host, repo string, a artifact.Artifact) {
	t.Helper()
	base := "http://" + host + "/v2/" + repo
	for _, b := range a.Blobs {
		resp, err := http.Post(base+"/blobs/uploads/", "", nil)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		loc := resp.Header.Get("Location")
		if resp.StatusCode != http.StatusAccepted || loc == "" {
			t.Fatalf("POST %s/blobs/uploads/: %s", base, resp.Status)
		}
		if strings.HasPrefix(loc, "/") {
			loc = "http://" + host + loc
		}
		sep := "?"
		if strings.Contains(loc, "?") {
			sep = "&"
		}
		put(t, loc+sep+"digest="+b.Descriptor.Digest.String(), "application/octet-stream", b.Data)
	}
	refs := []string{a.Manifest.Descriptor.Digest.String()}
	if a.Tag != "" {
		refs = append(refs, a.Tag)
	}
	for _, ref := range refs {
		put(t, base+"/manifests/"+ref, a.Manifest.Descriptor.MediaType, a.Manifest.Data)
	}
}

func put(t testing.TB, url, contentType string, data []byte) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodPut, url, bytes.NewReader(data))
	req.Header.Set("Content-Type", contentType)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusCreated {
		t.Fatalf("PUT %s: %s", url, resp.Status)
	}
}

// PushReferrersTag writes the referrers index of those artifacts that
// are about subject under the subject's referrers tag, for a registry without the
// referrers API (clients fall back to the tag).
func PushReferrersTag(t testing.TB, host, repo string, subject ocispec.Descriptor, artifacts ...artifact.Artifact) {
	t.Helper()
	var about []artifact.Artifact
	for _, a := range artifacts {
		if a.Subject == subject.Digest {
			about = append(about, a)
		}
	}
	idx, err := artifact.Index(about...)
	if err != nil {
		t.Fatal(err)
	}
	put(t, "http://"+host+"/v2/"+repo+"/manifests/"+artifact.ReferrersTag(subject.Digest), ocispec.MediaTypeImageIndex, idx)
}

// TrustedRoot is the path of an empty Sigstore trusted root (no
// transparency log, no certificate authority, no timestamp authority):
// with it, cosign v2 verifies a key's bundles offline instead of asking
// Sigstore's TUF repository for the public one, which it otherwise
// requires for any bundle.
func (c *Clients) TrustedRoot(t testing.TB) string {
	t.Helper()
	p := filepath.Join(c.Dir, "trusted_root.json")
	if err := os.WriteFile(p, []byte(`{"mediaType":"application/vnd.dev.sigstore.trustedroot+json;version=0.1"}`+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// Offline are the flags of `cosign verify` and `cosign verify-attestation`
// that verify with the public key alone, offline, from a registry on
// plain HTTP (docs/supply-chain.md): cosign v3 needs no more, cosign v2
// also an empty trusted root.
func (c *Clients) Offline(t testing.TB, cosign, publicKey string) []string {
	t.Helper()
	flags := []string{"--key", publicKey, "--insecure-ignore-tlog=true", "--allow-http-registry"}
	if cosign == "cosign2" {
		flags = append(flags, "--trusted-root", c.TrustedRoot(t))
	}
	return flags
}

// Verify runs `cosign verify` (cosign: "cosign" for v3, "cosign2" for
// v2) offline with the public key and returns the claims it verified,
// each the critical part of a simple-signing payload as cosign prints
// it: the image's digest and the claim's type (cosign v2's signature
// "cosign container image signature", or a bundle's predicate type).
func (c *Clients) Verify(t testing.TB, cosign, publicKey, image string) ([]Claim, error) {
	t.Helper()
	out, errOut, err := c.Run(t, nil, cosign, append(append([]string{"verify"}, c.Offline(t, cosign, publicKey)...), image)...)
	if err != nil {
		return nil, fmt.Errorf("%s verify %s: %w\n%s", cosign, image, err, errOut)
	}
	var payloads []struct {
		Critical struct {
			Image struct {
				Digest digest.Digest `json:"docker-manifest-digest"`
			} `json:"image"`
			Type string `json:"type"`
		} `json:"critical"`
	}
	if err := json.Unmarshal([]byte(out), &payloads); err != nil {
		return nil, fmt.Errorf("%s verify %s: output %q: %w", cosign, image, out, err)
	}
	claims := make([]Claim, 0, len(payloads))
	for _, p := range payloads {
		claims = append(claims, Claim{Digest: p.Critical.Image.Digest, Type: p.Critical.Type})
	}
	return claims, nil
}

// Claim is what one verified signature or attestation says: the image
// it is about and its type.
type Claim struct {
	Digest digest.Digest
	Type   string
}

// VerifyAttestation runs `cosign verify-attestation --type typ` offline
// (typ: cosign's name, "slsaprovenance1", "spdxjson", "cyclonedx", or a
// predicate type) and returns what each verified statement says: the
// image digest of its subject and its predicate type.
func (c *Clients) VerifyAttestation(t testing.TB, cosign, publicKey, typ, image string) ([]Claim, error) {
	t.Helper()
	args := append(append([]string{"verify-attestation", "--type", typ}, c.Offline(t, cosign, publicKey)...), image)
	out, errOut, err := c.Run(t, nil, cosign, args...)
	if err != nil {
		return nil, fmt.Errorf("%s verify-attestation --type %s %s: %w\n%s", cosign, typ, image, err, errOut)
	}
	var claims []Claim
	for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
		var env struct {
			Payload []byte `json:"payload"`
		}
		var st struct {
			Subject []struct {
				Digest map[string]string `json:"digest"`
			} `json:"subject"`
			PredicateType string `json:"predicateType"`
		}
		if err := json.Unmarshal([]byte(line), &env); err != nil {
			return nil, fmt.Errorf("%s verify-attestation: output %q: %w", cosign, line, err)
		}
		if err := json.Unmarshal(env.Payload, &st); err != nil || len(st.Subject) == 0 {
			return nil, fmt.Errorf("%s verify-attestation: payload %q: %v", cosign, env.Payload, err)
		}
		claims = append(claims, Claim{Digest: digest.NewDigestFromEncoded(digest.SHA256, st.Subject[0].Digest["sha256"]), Type: st.PredicateType})
	}
	return claims, nil
}
