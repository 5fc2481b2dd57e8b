package manifest

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"testing"

	"github.com/opencontainers/go-digest"
	v1 "github.com/opencontainers/image-spec/specs-go/v1"
)

func testImage() Image {
	return Image{
		Arch: "amd64",
		Env:  []string{"PATH=/bin"},
		Cmd:  []string{"bash"},
		Layers: []Layer{
			{Blob: Blob{Digest: digest.FromString("a"), Size: 10}, DiffID: digest.FromString("ta"), CreatedBy: "a"},
			{Blob: Blob{Digest: digest.FromString("b"), Size: 20}, DiffID: digest.FromString("tb"), CreatedBy: "b"},
		},
	}
}

func TestConfig(t *testing.T) {
	img := testImage()
	data, err := Config(img)
	if err != nil {
		t.Fatal(err)
	}
	again, _ := Config(img)
	if !bytes.Equal(data, again) {
		t.Fatal("config encoding is not deterministic")
	}
	var cfg v1.Image
	if err := json.Unmarshal(data, &cfg); err != nil {
		t.Fatal(err)
	}
	if cfg.Architecture != "amd64" || cfg.OS != "linux" {
		t.Errorf("platform = %s/%s", cfg.OS, cfg.Architecture)
	}
	if cfg.Created == nil || !cfg.Created.Equal(Created) {
		t.Errorf("created = %v", cfg.Created)
	}
	if len(cfg.RootFS.DiffIDs) != 2 || cfg.RootFS.DiffIDs[1] != digest.FromString("tb") || cfg.RootFS.Type != "layers" {
		t.Errorf("rootfs = %+v", cfg.RootFS)
	}
	if len(cfg.History) != 2 || cfg.History[0].CreatedBy != "a" {
		t.Errorf("history = %+v", cfg.History)
	}
	if cfg.Config.Cmd[0] != "bash" || cfg.Config.Env[0] != "PATH=/bin" {
		t.Errorf("config = %+v", cfg.Config)
	}
}

func TestManifest(t *testing.T) {
	img := testImage()
	cfg := Blob{Digest: digest.FromString("cfg"), Size: 5}
	for _, tt := range []struct{ mediaType, config, layer string }{
		{OCIManifest, OCIConfig, OCILayer},
		{DockerManifest, DockerConfig, DockerLayer},
	} {
		data, err := Manifest(tt.mediaType, cfg, img.Layers)
		if err != nil {
			t.Fatal(err)
		}
		if MediaType(data) != tt.mediaType {
			t.Errorf("MediaType = %q, want %q", MediaType(data), tt.mediaType)
		}
		var m v1.Manifest
		if err := json.Unmarshal(data, &m); err != nil {
			t.Fatal(err)
		}
		if m.SchemaVersion != 2 || m.Config.MediaType != tt.config || m.Config.Digest != cfg.Digest || m.Config.Size != 5 {
			t.Errorf("%s config = %+v", tt.mediaType, m.Config)
		}
		if len(m.Layers) != 2 || m.Layers[0].MediaType != tt.layer || m.Layers[1].Size != 20 || m.Layers[0].Digest != digest.FromString("a") {
			t.Errorf("%s layers = %+v", tt.mediaType, m.Layers)
		}
	}
	// zstd layers keep their type in both formats.
	zl := []Layer{{Blob: Blob{Digest: digest.FromString("z"), Size: 1}, DiffID: digest.FromString("tz"), MediaType: OCILayerZstd}}
	for _, mt := range MediaTypes {
		data, _ := Manifest(mt, cfg, zl)
		var m v1.Manifest
		json.Unmarshal(data, &m)
		if m.Layers[0].MediaType != OCILayerZstd {
			t.Errorf("%s: zstd layer type %q", mt, m.Layers[0].MediaType)
		}
	}
	if _, err := Manifest("application/json", cfg, nil); err == nil {
		t.Error("unknown media type accepted")
	}
	if MediaType([]byte(`{"schemaVersion":2,"mediaType":"text/plain"}`)) != "" || MediaType([]byte("blob")) != "" {
		t.Error("MediaType accepted a non-manifest")
	}
}

func TestNegotiate(t *testing.T) {
	tests := []struct {
		accept []string
		want   string
	}{
		{nil, OCIManifest},
		{[]string{"*/*"}, OCIManifest},
		{[]string{DockerManifest}, DockerManifest},
		{[]string{DockerManifest + ", " + OCIManifest}, DockerManifest},
		{[]string{OCIManifest + ";q=0.9", DockerManifest}, OCIManifest},
		{[]string{"application/vnd.docker.distribution.manifest.list.v2+json", " " + DockerManifest + " ; q=0.5"}, DockerManifest},
		{[]string{"application/vnd.docker.distribution.manifest.v1+prettyjws"}, OCIManifest},
	}
	for _, tt := range tests {
		if got := Negotiate(tt.accept); got != tt.want {
			t.Errorf("Negotiate(%q) = %s, want %s", tt.accept, got, tt.want)
		}
	}
}

func TestLayerMediaType(t *testing.T) {
	if LayerMediaType("gzip") != "application/vnd.oci.image.layer.v1.tar+gzip" || LayerMediaType("zstd") != "application/vnd.oci.image.layer.v1.tar+zstd" {
		t.Errorf("LayerMediaType: gzip %q, zstd %q", LayerMediaType("gzip"), LayerMediaType("zstd"))
	}
}

// The guarantees of every image's config, one case each.
func TestRuntimeApply(t *testing.T) {
	const hello = "/nix/store/aaa-hello/bin/hello"
	tests := []struct {
		name    string
		r       Runtime
		env     []string
		cmd     []string
		user    string
		workdir string
	}{
		{name: "PATH always", r: Runtime{Path: "/bin"}, env: []string{"PATH=/bin"}},
		{name: "a shell runs bash", r: Runtime{Path: "/bin:/usr/bin", Shell: "/bin/bash"},
			env: []string{"PATH=/bin:/usr/bin"}, cmd: []string{"bash"}},
		{name: "the main program without a shell", r: Runtime{Path: "/bin", Program: hello},
			env: []string{"PATH=/bin"}, cmd: []string{hello}},
		{name: "the shell wins over the main program", r: Runtime{Path: "/bin", Shell: "/bin/bash", Program: hello},
			env: []string{"PATH=/bin"}, cmd: []string{"bash"}},
		{name: "certificates", r: Runtime{Path: "/bin", CertFile: "/etc/ssl/certs/ca-bundle.crt"},
			env: []string{"PATH=/bin", "SSL_CERT_FILE=/etc/ssl/certs/ca-bundle.crt", "NIX_SSL_CERT_FILE=/etc/ssl/certs/ca-bundle.crt"}},
		{name: "nonroot", r: Runtime{Path: "/bin", User: "65532:65532", Home: "/home/nonroot"},
			env: []string{"PATH=/bin", "HOME=/home/nonroot"}, user: "65532:65532", workdir: "/home/nonroot"},
		{name: "nonroot with everything", r: Runtime{Path: "/bin", Shell: "/bin/bash", CertFile: "/c", User: "65532:65532", Home: "/home/nonroot"},
			env: []string{"PATH=/bin", "HOME=/home/nonroot", "SSL_CERT_FILE=/c", "NIX_SSL_CERT_FILE=/c"}, cmd: []string{"bash"}, user: "65532:65532", workdir: "/home/nonroot"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			img := Image{Arch: "amd64", Cmd: []string{"stale"}, Env: []string{"STALE=1"}}
			tt.r.Apply(&img)
			if !slices.Equal(img.Env, tt.env) || !slices.Equal(img.Cmd, tt.cmd) || img.User != tt.user || img.WorkingDir != tt.workdir {
				t.Errorf("Apply(%+v) = Env %q Cmd %q User %q WorkingDir %q; want %q %q %q %q",
					tt.r, img.Env, img.Cmd, img.User, img.WorkingDir, tt.env, tt.cmd, tt.user, tt.workdir)
			}
			// And so the encoded config says.
			data, err := Config(img)
			if err != nil {
				t.Fatal(err)
			}
			var cfg v1.Image
			if err := json.Unmarshal(data, &cfg); err != nil {
				t.Fatal(err)
			}
			c := cfg.Config
			if !slices.Equal(c.Env, tt.env) || !slices.Equal(c.Cmd, tt.cmd) || c.User != tt.user || c.WorkingDir != tt.workdir {
				t.Errorf("config %s, want Env %q Cmd %q User %q WorkingDir %q", data, tt.env, tt.cmd, tt.user, tt.workdir)
			}
			// A root image's config has neither key, as before they existed.
			if tt.user == "" && (bytes.Contains(data, []byte(`"User"`)) || bytes.Contains(data, []byte(`"WorkingDir"`))) {
				t.Errorf("root image config names a user or working directory: %s", data)
			}
		})
	}
}

// countReader counts the bytes read through it.
type countReader struct {
	r io.Reader
	n int
}

func (c *countReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += n
	return n, err
}

func TestRead(t *testing.T) {
	big := strings.Repeat("x", MaxSize+1)
	for _, tt := range []struct {
		name    string
		data    string
		size    int64
		ok      bool
		maxRead int
	}{
		{"a manifest", `{"schemaVersion":2}`, 19, true, 19},
		{"declared over the cap: not read", "{" + big, int64(len(big) + 1), false, 0},
		{"a layer: refused after its first byte", "\x1f\x8b\x08rest", 7, false, 1},
		{"empty", "", 0, false, 0},
		{"longer than it said, past the cap", "{" + big, 10, false, MaxSize + 1},
	} {
		c := &countReader{r: strings.NewReader(tt.data)}
		data, err := Read(c, tt.size)
		if (err == nil) != tt.ok || (!tt.ok && !errors.Is(err, ErrNotManifest)) {
			t.Errorf("%s: %v", tt.name, err)
		}
		if tt.ok && string(data) != tt.data {
			t.Errorf("%s: read %q", tt.name, data)
		}
		if c.n > tt.maxRead {
			t.Errorf("%s: read %d bytes, want at most %d", tt.name, c.n, tt.maxRead)
		}
	}
}

// failingReader gives head, then fails as a bucket's cut connection does.
type failingReader struct {
	head string
	err  error
}

func (f *failingReader) Read(p []byte) (int, error) {
	if f.head == "" {
		return 0, f.err
	}
	n := copy(p, f.head)
	f.head = f.head[n:]
	return n, nil
}

// A reader that fails is not a blob that is no manifest: a short read
// caused by the storage (io.ErrUnexpectedEOF, wrapped) says nothing about
// the blob, whether it fails at the first byte or later.
func TestReadFailureIsNoVerdict(t *testing.T) {
	cut := fmt.Errorf("storage unavailable: connection reset: %w", io.ErrUnexpectedEOF)
	for _, head := range []string{"", "{", `{"schemaVersion":`} {
		_, err := Read(&failingReader{head: head, err: cut}, 100)
		if !errors.Is(err, cut) || errors.Is(err, ErrNotManifest) {
			t.Errorf("after %q the reader failed: Read = %v, want the reader's error and not ErrNotManifest", head, err)
		}
	}
	// A blob shorter than its size, read whole, is the blob's fault.
	if _, err := Read(strings.NewReader(""), 100); !errors.Is(err, ErrNotManifest) {
		t.Errorf("an empty blob that said 100 bytes: %v, want ErrNotManifest", err)
	}
}

// An image manifest is an image; an artifact (with a subject, an artifact
// type, or layers that are no file system) is not, nor is anything that
// is no manifest.
func TestIsImage(t *testing.T) {
	img, err := Manifest(OCIManifest, Blob{Digest: digest.FromString("c"), Size: 1}, []Layer{{Blob: Blob{Digest: digest.FromString("l"), Size: 1}, MediaType: OCILayer}})
	if err != nil {
		t.Fatal(err)
	}
	docker, err := Manifest(DockerManifest, Blob{Digest: digest.FromString("c"), Size: 1}, []Layer{{Blob: Blob{Digest: digest.FromString("l"), Size: 1}, MediaType: DockerLayer}})
	if err != nil {
		t.Fatal(err)
	}
	empty := `{"mediaType":"application/vnd.oci.empty.v1+json","digest":"` + digest.FromString("{}").String() + `","size":2}`
	layer := func(mt string) string {
		return `{"mediaType":"` + mt + `","digest":"` + digest.FromString("x").String() + `","size":1}`
	}
	for _, tt := range []struct {
		name string
		data string
		want bool
	}{
		{"OCI image", string(img), true},
		{"Docker image", string(docker), true},
		{"SBOM artifact", `{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","artifactType":"application/spdx+json","config":` + empty + `,"layers":[` + layer("application/spdx+json") + `],"subject":` + layer(OCIManifest) + `}`, false},
		{"subject only", `{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":` + layer(OCIConfig) + `,"layers":[` + layer(OCILayer) + `],"subject":` + layer(OCIManifest) + `}`, false},
		{"cosign signature", `{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":` + layer(OCIConfig) + `,"layers":[` + layer("application/vnd.dev.cosign.simplesigning.v1+json") + `]}`, false},
		{"index", `{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[]}`, false},
		{"not JSON", `{`, false},
	} {
		if got := IsImage([]byte(tt.data)); got != tt.want {
			t.Errorf("%s: IsImage = %v, want %v", tt.name, got, tt.want)
		}
	}
}
