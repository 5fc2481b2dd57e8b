// Package manifest encodes image configs and manifests, in both the OCI
// image format and Docker's image manifest v2 schema 2.
//
// Both formats describe the same image: the config JSON is identical and
// only media types differ, so a client gets the same layers whichever it
// asks for. Encoding is deterministic: the same image gives the same bytes
// and so the same digest.
//
// Specs: https://github.com/opencontainers/image-spec/blob/main/manifest.md,
// https://github.com/opencontainers/image-spec/blob/main/config.md and
// https://distribution.github.io/distribution/spec/manifest-v2-2/.
package manifest

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/opencontainers/go-digest"
	specs "github.com/opencontainers/image-spec/specs-go"
	v1 "github.com/opencontainers/image-spec/specs-go/v1"
)

// Media types of the two manifest formats and their parts.
const (
	OCIManifest  = v1.MediaTypeImageManifest
	OCIConfig    = v1.MediaTypeImageConfig
	OCILayer     = v1.MediaTypeImageLayerGzip
	OCILayerZstd = v1.MediaTypeImageLayerZstd

	DockerManifest = "application/vnd.docker.distribution.manifest.v2+json"
	DockerConfig   = "application/vnd.docker.container.image.v1+json"
	DockerLayer    = "application/vnd.docker.image.rootfs.diff.tar.gzip"
)

// LayerMediaType is the OCI layer media type of a layer compression,
// "gzip" or "zstd".
func LayerMediaType(compression string) string {
	if compression == "zstd" {
		return OCILayerZstd
	}
	return OCILayer
}

// MediaTypes lists the manifest media types Nixery serves, preferred first.
var MediaTypes = []string{OCIManifest, DockerManifest}

// Created is the fixed creation time of every image, so that the same
// store paths always give the same config digest (as Nix's own store does
// with file times).
var Created = time.Unix(1, 0).UTC()

// Blob is a content-addressed blob referenced from a manifest.
type Blob struct {
	Digest digest.Digest
	Size   int64
}

// Layer is one layer of an image.
type Layer struct {
	Blob
	DiffID    digest.Digest // digest of the uncompressed tar
	CreatedBy string        // history entry, e.g. the store paths it holds
	// MediaType is the OCI layer media type: OCILayer (gzip, the
	// default when empty) or OCILayerZstd. Docker manifests use Docker's
	// gzip type, and the OCI zstd type for zstd (as Docker itself does).
	MediaType string
}

// Image is what an image config is made from.
type Image struct {
	Arch       string // OCI architecture: "amd64", "arm64"
	Env        []string
	Cmd        []string
	User       string // "uid:gid" to run as; "" is root
	WorkingDir string // "" is the runtime's default, /
	Layers     []Layer
}

// Runtime is what an image's root file system offers its processes, as
// its customisation layer found it (archive.Info): the facts the config's
// Env, Cmd, User and WorkingDir point at.
type Runtime struct {
	Path     string // value of PATH
	CertFile string // the CA bundle, or ""
	Shell    string // the shell in /bin ("/bin/bash"), or ""
	Program  string // the absolute path of the image's one main program, or ""
	User     string // "uid:gid" of the image's user, or "" for root
	Home     string // that user's home, or ""
}

// Apply sets img's Env, Cmd, User and WorkingDir from r. These are the
// guarantees every image's config makes:
//
//   - Env has PATH; HOME when the image has a user of its own, so that
//     it holds wherever the config is read (Docker and Podman would take
//     it from /etc/passwd, a chroot or a plain runc bundle would not;
//     root images keep their configs of before, and those runtimes'
//     /root); SSL_CERT_FILE and NIX_SSL_CERT_FILE (which Nix-built
//     programs read) when there is a CA bundle.
//   - Cmd is ["bash"] when bash is in /bin, as in the original Nixery;
//     else the main program, when the image has one; else none, and the
//     client names the command.
//   - User is numeric ("65532:65532"), so that Kubernetes' runAsNonRoot
//     can check it without reading the image's /etc/passwd, and the
//     working directory is then the user's home, where it can write
//     (distroless nonroot images do the same); root images keep /.
func (r Runtime) Apply(img *Image) {
	img.Env = []string{"PATH=" + r.Path}
	if r.Home != "" {
		img.Env = append(img.Env, "HOME="+r.Home)
	}
	if r.CertFile != "" {
		img.Env = append(img.Env, "SSL_CERT_FILE="+r.CertFile, "NIX_SSL_CERT_FILE="+r.CertFile)
	}
	switch {
	case r.Shell != "":
		img.Cmd = []string{"bash"}
	case r.Program != "":
		img.Cmd = []string{r.Program}
	default:
		img.Cmd = nil
	}
	img.User, img.WorkingDir = r.User, r.Home
}

// Config encodes the image config (identical for both formats).
func Config(img Image) ([]byte, error) {
	cfg := v1.Image{
		Created: &Created,
		Platform: v1.Platform{
			Architecture: img.Arch,
			OS:           "linux",
		},
		Config: v1.ImageConfig{
			Env:        img.Env,
			Cmd:        img.Cmd,
			User:       img.User,
			WorkingDir: img.WorkingDir,
		},
		RootFS: v1.RootFS{Type: "layers", DiffIDs: []digest.Digest{}},
	}
	for _, l := range img.Layers {
		cfg.RootFS.DiffIDs = append(cfg.RootFS.DiffIDs, l.DiffID)
		cfg.History = append(cfg.History, v1.History{Created: &Created, CreatedBy: l.CreatedBy, Comment: "nixery"})
	}
	return json.Marshal(cfg)
}

// Manifest encodes the manifest of the given media type (OCIManifest or
// DockerManifest) for an image with the given config blob and layers.
func Manifest(mediaType string, config Blob, layers []Layer) ([]byte, error) {
	configType, layerType := OCIConfig, OCILayer
	switch mediaType {
	case OCIManifest:
	case DockerManifest:
		configType, layerType = DockerConfig, DockerLayer
	default:
		return nil, fmt.Errorf("unsupported manifest media type %q", mediaType)
	}
	m := v1.Manifest{
		Versioned: specs.Versioned{SchemaVersion: 2},
		MediaType: mediaType,
		Config:    v1.Descriptor{MediaType: configType, Digest: config.Digest, Size: config.Size},
		Layers:    []v1.Descriptor{},
	}
	for _, l := range layers {
		mt := layerType
		if l.MediaType == OCILayerZstd {
			mt = OCILayerZstd
		}
		m.Layers = append(m.Layers, v1.Descriptor{MediaType: mt, Digest: l.Digest, Size: l.Size})
	}
	return json.Marshal(m)
}

// MediaType reads the mediaType field of a stored manifest, or "" if data
// is not a manifest of a kind Nixery writes.
func MediaType(data []byte) string {
	var m struct {
		SchemaVersion int    `json:"schemaVersion"`
		MediaType     string `json:"mediaType"`
	}
	if json.Unmarshal(data, &m) != nil || m.SchemaVersion != 2 {
		return ""
	}
	switch m.MediaType {
	case OCIManifest, DockerManifest:
		return m.MediaType
	}
	return ""
}

// MaxSize is the largest blob read as a manifest, the limit CNCF
// distribution uses (4 MiB). The distribution spec asks registries to
// accept manifests of at least this size, and nothing Nixery writes comes
// near it.
// https://github.com/opencontainers/distribution-spec/blob/main/spec.md#pushing-manifests
const MaxSize = 4 << 20

// ErrNotManifest is returned by Read for a blob that cannot be a manifest.
var ErrNotManifest = errors.New("not a manifest")

// Read reads a stored blob of size bytes that should be a manifest.
// Layer digests are public, so anyone may ask for a layer of hundreds of
// megabytes as a manifest: a blob over MaxSize is refused without reading
// it, one that does not start as a JSON object after its first byte, and
// no more than MaxSize bytes are ever read.
//
// Only the blob's content makes it ErrNotManifest: an error of r itself
// (other than io.EOF) is returned as an error of its own. A bucket's
// connection cut off mid-body reads as a short body
// (io.ErrUnexpectedEOF), which says nothing about the blob: the garbage
// collector must stop rather than take a live manifest for none and
// sweep its blobs, and the registry answers it as the outage it is.
func Read(r io.Reader, size int64) ([]byte, error) {
	rr := &readErr{r: r}
	data, err := read(rr, size)
	if rr.err != nil {
		return nil, rr.err
	}
	return data, err
}

// readErr remembers the first error other than io.EOF its reader gave.
type readErr struct {
	r   io.Reader
	err error
}

func (e *readErr) Read(p []byte) (int, error) {
	n, err := e.r.Read(p)
	if err != nil && err != io.EOF && e.err == nil {
		e.err = err
	}
	return n, err
}

func read(r io.Reader, size int64) ([]byte, error) {
	if size > MaxSize {
		return nil, ErrNotManifest
	}
	head := make([]byte, 1)
	if _, err := io.ReadFull(r, head); err != nil || head[0] != '{' {
		if err != nil && !errors.Is(err, io.EOF) && !errors.Is(err, io.ErrUnexpectedEOF) {
			return nil, err
		}
		return nil, ErrNotManifest
	}
	rest, err := io.ReadAll(io.LimitReader(r, MaxSize))
	if err != nil {
		return nil, err
	}
	data := append(head, rest...)
	if len(data) > MaxSize {
		return nil, ErrNotManifest
	}
	return data, nil
}

// References returns the digests of the config and the layers that a
// stored manifest refers to.
func References(data []byte) ([]digest.Digest, error) {
	var m struct {
		Config v1.Descriptor   `json:"config"`
		Layers []v1.Descriptor `json:"layers"`
	}
	if err := json.Unmarshal(data, &m); err != nil {
		return nil, fmt.Errorf("not a manifest: %w", err)
	}
	refs := make([]digest.Digest, 0, len(m.Layers)+1)
	for _, d := range append([]v1.Descriptor{m.Config}, m.Layers...) {
		if err := d.Digest.Validate(); err != nil {
			return nil, fmt.Errorf("not a manifest: %w", err)
		}
		refs = append(refs, d.Digest)
	}
	return refs, nil
}

// IsImage reports whether a stored manifest is an image's, not an
// artifact's (an SBOM, a provenance statement, a signature): it names no
// subject and no artifact type, and every layer is a file system layer.
// A manifest pulled by digest is kept by the collector only if it is an
// image; an artifact lives exactly as long as its subject.
func IsImage(data []byte) bool {
	var m struct {
		ArtifactType string          `json:"artifactType"`
		Subject      *v1.Descriptor  `json:"subject"`
		Config       v1.Descriptor   `json:"config"`
		Layers       []v1.Descriptor `json:"layers"`
	}
	if MediaType(data) == "" || json.Unmarshal(data, &m) != nil || m.ArtifactType != "" || m.Subject != nil {
		return false
	}
	if m.Config.MediaType != OCIConfig && m.Config.MediaType != DockerConfig {
		return false
	}
	for _, l := range m.Layers {
		switch l.MediaType {
		case OCILayer, OCILayerZstd, DockerLayer, v1.MediaTypeImageLayer, "application/vnd.docker.image.rootfs.diff.tar":
		default:
			return false
		}
	}
	return true
}

// Negotiate picks the manifest media type for a request's Accept header
// values: the first supported type in the client's order wins (clients
// list their preference first; q-values are not used by registry
// clients), and a client that names neither gets the OCI manifest.
func Negotiate(accept []string) string {
	for _, header := range accept {
		for _, part := range splitAccept(header) {
			for _, mt := range MediaTypes {
				if part == mt {
					return mt
				}
			}
		}
	}
	return OCIManifest
}

func splitAccept(header string) []string {
	var out []string
	for _, part := range strings.Split(header, ",") {
		part, _, _ = strings.Cut(part, ";")
		out = append(out, strings.TrimSpace(part))
	}
	return out
}
