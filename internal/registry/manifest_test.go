package registry_test

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/opencontainers/go-digest"

	"github.com/nixery/nixery/internal/manifest"
	"github.com/nixery/nixery/internal/registry"
	"github.com/nixery/nixery/internal/storage"
)

// countingBackend is a real filesystem storage that counts the bytes
// read from the blobs it opens.
type countingBackend struct {
	storage.Backend
	read atomic.Int64
}

func (c *countingBackend) Open(ctx context.Context, d digest.Digest) (storage.Reader, error) {
	r, err := c.Backend.Open(ctx, d)
	if err != nil {
		return nil, err
	}
	return &countingReader{Reader: r, n: &c.read}, nil
}

type countingReader struct {
	storage.Reader
	n *atomic.Int64
}

func (r *countingReader) Read(p []byte) (int, error) {
	n, err := r.Reader.Read(p)
	r.n.Add(int64(n))
	return n, err
}

// TestManifestByDigestSizeFirst asks for blobs that are no manifest as
// manifests: a blob over the cap is refused without reading a byte, a
// small layer after its first byte; a real manifest is still served.
func TestManifestByDigestSizeFirst(t *testing.T) {
	fs, err := storage.NewFilesystem(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	store := &countingBackend{Backend: fs}
	ctx := context.Background()
	put := func(data []byte) digest.Digest {
		t.Helper()
		d, err := storage.Put(ctx, fs, data)
		if err != nil {
			t.Fatal(err)
		}
		return d
	}
	big := make([]byte, registry.MaxManifestSize+1)
	rand.Read(big)
	big[0] = '{' // even JSON-looking, its size alone rules it out
	small := make([]byte, 64<<10)
	rand.Read(small)
	small[0] = 0x1f // gzip's magic
	m, err := json.Marshal(map[string]any{"schemaVersion": 2, "mediaType": manifest.OCIManifest, "layers": []any{}})
	if err != nil {
		t.Fatal(err)
	}
	bigD, smallD, manifestD := put(big), put(small), put(m)

	srv := httptest.NewServer(&registry.Registry{Storage: store})
	defer srv.Close()
	tests := []struct {
		method  string
		d       digest.Digest
		status  int
		body    string
		maxRead int64
	}{
		{"GET", bigD, 404, "is not a manifest", 0},
		{"HEAD", bigD, 404, "", 0},
		{"GET", smallD, 404, "is not a manifest", 1},
		{"HEAD", smallD, 404, "", 1},
		{"GET", manifestD, 200, `"schemaVersion":2`, int64(len(m))},
	}
	for _, tt := range tests {
		t.Run(tt.method+" "+tt.d.String(), func(t *testing.T) {
			store.read.Store(0)
			resp, body := do(t, srv, call{tt.method, "/v2/hello/manifests/" + tt.d.String(), nil})
			if resp.StatusCode != tt.status || !strings.Contains(string(body), tt.body) {
				t.Fatalf("status %d %s, want %d %q", resp.StatusCode, body, tt.status, tt.body)
			}
			if tt.status == 404 && tt.method == "GET" && !strings.Contains(string(body), `"code":"MANIFEST_UNKNOWN"`) {
				t.Errorf("body %s, want MANIFEST_UNKNOWN", body)
			}
			if n := store.read.Load(); n > tt.maxRead {
				t.Errorf("read %d bytes of the blob, want at most %d", n, tt.maxRead)
			}
			if tt.status == 200 && resp.Header.Get("Content-Type") != manifest.OCIManifest {
				t.Errorf("Content-Type = %q", resp.Header.Get("Content-Type"))
			}
		})
	}
}

// pulls is a UseRecorder that remembers what it was told.
type pulls struct{ got []digest.Digest }

func (p *pulls) RecordDigestPull(_ context.Context, d digest.Digest) { p.got = append(p.got, d) }

// An image manifest pulled by digest is recorded (garbage collection
// keeps it); a blob that is no manifest is not, nor is an artifact.
func TestDigestPullsRecorded(t *testing.T) {
	fs, err := storage.NewFilesystem(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	m, err := manifest.Manifest(manifest.OCIManifest, manifest.Blob{Digest: digest.FromString("config"), Size: 6}, nil)
	if err != nil {
		t.Fatal(err)
	}
	md, err := storage.Put(ctx, fs, m)
	if err != nil {
		t.Fatal(err)
	}
	// An artifact that refers to it (an SBOM) lives as long as the
	// image, not as long as it is pulled.
	a, _ := json.Marshal(map[string]any{"schemaVersion": 2, "mediaType": manifest.OCIManifest, "artifactType": "application/spdx+json",
		"config": map[string]any{"mediaType": "application/vnd.oci.empty.v1+json", "digest": digest.FromString("{}"), "size": 2}, "layers": []any{},
		"subject": map[string]any{"mediaType": manifest.OCIManifest, "digest": md, "size": len(m)}})
	ad, err := storage.Put(ctx, fs, a)
	if err != nil {
		t.Fatal(err)
	}
	layer, err := storage.Put(ctx, fs, []byte{0x1f, 0x8b, 0})
	if err != nil {
		t.Fatal(err)
	}
	rec := &pulls{}
	srv := httptest.NewServer(&registry.Registry{Storage: fs, Uses: rec})
	defer srv.Close()
	for _, c := range []call{
		{"GET", "/v2/hello/manifests/" + md.String(), nil},
		{"HEAD", "/v2/hello/manifests/" + md.String(), nil},
		{"GET", "/v2/hello/manifests/" + layer.String(), nil},
		{"GET", "/v2/hello/manifests/" + ad.String(), nil},
	} {
		do(t, srv, c)
	}
	if len(rec.got) != 2 || rec.got[0] != md || rec.got[1] != md {
		t.Errorf("recorded %v, want the manifest twice (GET and HEAD)", rec.got)
	}
}
