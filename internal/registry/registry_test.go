package registry_test

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/nixery/nixery/internal/builder/buildertest"
	"github.com/nixery/nixery/internal/manifest"
	"github.com/nixery/nixery/internal/registry"
	"github.com/nixery/nixery/internal/route"
)

// newServer starts the registry API with the real builder over the demo
// package set and real Nix. lastRoute is the route the registry named for
// the last request it answered.
func newServer(t *testing.T) (srv *httptest.Server, lastRoute func() route.Label) {
	t.Helper()
	b := buildertest.New(t)
	reg := &registry.Registry{Builder: b, Storage: b.Storage}
	var mu sync.Mutex
	var last route.Label
	srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		r, label := route.Track(r)
		reg.ServeHTTP(w, r)
		mu.Lock()
		last = label()
		mu.Unlock()
	}))
	t.Cleanup(srv.Close)
	return srv, func() route.Label {
		mu.Lock()
		defer mu.Unlock()
		return last
	}
}

type call struct {
	method, path string
	header       map[string]string
}

type want struct {
	status      int
	code        string // spec error code, for errors
	contentType string
	body        string            // substring of the body
	digest      bool              // Docker-Content-Digest present
	length      int               // exact Content-Length when > 0
	allow       []string          // the Allow header's values, when not nil
	respHeader  map[string]string // headers of the answer
	route       route.Label       // the route named, when not zero
}

func do(t *testing.T, srv *httptest.Server, c call) (*http.Response, []byte) {
	t.Helper()
	req, err := http.NewRequest(c.method, srv.URL+c.path, nil)
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range c.header {
		req.Header.Set(k, v)
	}
	resp, err := srv.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp, body
}

// TestAPI walks every call of the pull API, and what is not part of it.
func TestAPI(t *testing.T) {
	srv, lastRoute := newServer(t)

	// Build one image first to learn real digests.
	resp, body := do(t, srv, call{"GET", "/v2/hello/manifests/latest", map[string]string{"Accept": manifest.OCIManifest}})
	if resp.StatusCode != 200 {
		t.Fatalf("GET hello manifest: %d %s", resp.StatusCode, body)
	}
	ociDigest := resp.Header.Get("Docker-Content-Digest")
	var m struct {
		Config struct{ Digest string }
		Layers []struct {
			Digest string
			Size   int
		}
	}
	if err := json.Unmarshal(body, &m); err != nil || len(m.Layers) == 0 {
		t.Fatalf("manifest %s: %v", body, err)
	}
	layer, layerSize := m.Layers[0].Digest, m.Layers[0].Size
	resp, _ = do(t, srv, call{"GET", "/v2/hello/manifests/latest", map[string]string{"Accept": manifest.DockerManifest}})
	dockerDigest := resp.Header.Get("Docker-Content-Digest")
	if dockerDigest == ociDigest || dockerDigest == "" {
		t.Fatalf("docker manifest digest %q vs OCI %q", dockerDigest, ociDigest)
	}
	absent := "sha256:" + strings.Repeat("0", 64)

	tests := []struct {
		call
		want
	}{
		// https://github.com/opencontainers/distribution-spec/blob/main/spec.md#determining-support
		{call{"GET", "/v2/", nil}, want{status: 200, contentType: "application/json", body: "{}", route: route.V2Base}},
		{call{"HEAD", "/v2/", nil}, want{status: 200}},
		{call{"GET", "/v2", nil}, want{status: 200}},

		// Manifests by tag, in the format the client accepts.
		{call{"GET", "/v2/hello/manifests/latest", map[string]string{"Accept": manifest.OCIManifest}}, want{status: 200, contentType: manifest.OCIManifest, digest: true, body: `"schemaVersion":2`}},
		{call{"GET", "/v2/hello/manifests/latest", map[string]string{"Accept": manifest.DockerManifest}}, want{status: 200, contentType: manifest.DockerManifest, digest: true, body: manifest.DockerLayer}},
		{call{"GET", "/v2/hello/manifests/latest", nil}, want{status: 200, contentType: manifest.OCIManifest, digest: true, route: route.V2Manifest}},
		{call{"HEAD", "/v2/hello/manifests/latest", map[string]string{"Accept": manifest.DockerManifest}}, want{status: 200, contentType: manifest.DockerManifest, digest: true}},
		{call{"GET", "/v2/xorg.xev/manifests/latest", nil}, want{status: 200, digest: true}},
		{call{"GET", "/v2/bashinteractive/manifests/latest", nil}, want{status: 200, digest: true}},
		// Manifests by digest.
		{call{"GET", "/v2/hello/manifests/" + ociDigest, nil}, want{status: 200, contentType: manifest.OCIManifest, digest: true}},
		{call{"GET", "/v2/hello/manifests/" + dockerDigest, nil}, want{status: 200, contentType: manifest.DockerManifest, digest: true}},
		{call{"HEAD", "/v2/hello/manifests/" + dockerDigest, nil}, want{status: 200, contentType: manifest.DockerManifest, digest: true}},
		{call{"GET", "/v2/hello/manifests/" + absent, nil}, want{status: 404, code: "MANIFEST_UNKNOWN"}},
		{call{"GET", "/v2/hello/manifests/" + layer, nil}, want{status: 404, code: "MANIFEST_UNKNOWN"}},
		{call{"GET", "/v2/hello/manifests/sha256:abc", nil}, want{status: 400, code: "DIGEST_INVALID"}},
		{call{"HEAD", "/v2/hello/manifests/" + absent, nil}, want{status: 404}},

		// Blobs, with Range.
		{call{"GET", "/v2/hello/blobs/" + layer, nil}, want{status: 200, contentType: "application/octet-stream", digest: true, length: layerSize}},
		{call{"HEAD", "/v2/hello/blobs/" + layer, nil}, want{status: 200, digest: true, length: layerSize}},
		{call{"GET", "/v2/hello/blobs/" + layer, map[string]string{"Range": "bytes=0-9"}}, want{status: 206, digest: true, length: 10}},
		{call{"GET", "/v2/hello/blobs/" + m.Config.Digest, nil}, want{status: 200, digest: true, body: `"architecture":"amd64"`}},
		{call{"GET", "/v2/hello/blobs/" + absent, nil}, want{status: 404, code: "BLOB_UNKNOWN", route: route.V2Blob}},
		{call{"HEAD", "/v2/hello/blobs/" + absent, nil}, want{status: 404}},
		{call{"GET", "/v2/hello/blobs/md5:d41d8cd98f00b204e9800998ecf8427e", nil}, want{status: 400, code: "DIGEST_INVALID"}},
		{call{"GET", "/v2/hello/blobs/sha256:xyz", nil}, want{status: 400, code: "DIGEST_INVALID"}},

		// Bad names and tags.
		{call{"GET", "/v2/Hello/manifests/latest", nil}, want{status: 400, code: "NAME_INVALID"}},
		{call{"GET", "/v2/hello-/manifests/latest", nil}, want{status: 400, code: "NAME_INVALID"}},
		// A bad tag is a reference no manifest can have, not a bad name.
		{call{"GET", "/v2/hello/manifests/-latest", nil}, want{status: 404, code: "MANIFEST_UNKNOWN", body: `invalid tag \"-latest\"`}},
		{call{"GET", "/v2/hello/manifests/" + strings.Repeat("t", 129), nil}, want{status: 404, code: "MANIFEST_UNKNOWN", body: strings.Repeat("t", 129)}},
		{call{"GET", "/v2/hello/manifests/v1..2", nil}, want{status: 404, code: "MANIFEST_UNKNOWN", body: `v1..2`}},
		{call{"HEAD", "/v2/hello/manifests/main.lock", nil}, want{status: 404}},
		{call{"GET", "/v2/hello/manifests/", nil}, want{status: 404, code: "MANIFEST_UNKNOWN", body: `invalid tag \"\"`}},
		{call{"GET", "/v2/arm64/manifests/latest", nil}, want{status: 400, code: "NAME_INVALID", body: "no packages"}},

		// Nix's answers.
		{call{"GET", "/v2/nosuchpkg/alsomissing/manifests/latest", nil}, want{status: 404, code: "MANIFEST_UNKNOWN", body: "alsomissing"}},
		{call{"GET", "/v2/foobar/manifests/latest", nil}, want{status: 404, code: "MANIFEST_UNKNOWN", body: "FooBar"}},
		{call{"GET", "/v2/broken/manifests/latest", nil}, want{status: 500, code: "UNKNOWN", body: "broken on purpose"}},

		// Writes are not supported. Upload paths allow no method at all
		// (an empty Allow), GET and HEAD (upload status) included.
		{call{"POST", "/v2/hello/blobs/uploads/", nil}, want{status: 405, code: "UNSUPPORTED", allow: []string{""}, route: route.V2Blob}},
		{call{"POST", "/v2/shell/hello/blobs/uploads/?mount=" + layer + "&from=hello", nil}, want{status: 405, code: "UNSUPPORTED", allow: []string{""}}},
		{call{"POST", "/v2/hello/blobs/uploads", nil}, want{status: 405, code: "UNSUPPORTED", allow: []string{""}}},
		{call{"GET", "/v2/hello/blobs/uploads/", nil}, want{status: 405, code: "UNSUPPORTED", allow: []string{""}}},
		{call{"GET", "/v2/hello/blobs/uploads/1", nil}, want{status: 405, code: "UNSUPPORTED", allow: []string{""}}},
		{call{"HEAD", "/v2/hello/blobs/uploads/1", nil}, want{status: 405, allow: []string{""}}},
		{call{"PATCH", "/v2/hello/blobs/uploads/1", nil}, want{status: 405, code: "UNSUPPORTED", allow: []string{""}}},
		{call{"PUT", "/v2/hello/blobs/uploads/1?digest=" + absent, nil}, want{status: 405, code: "UNSUPPORTED", allow: []string{""}}},
		{call{"DELETE", "/v2/hello/blobs/uploads/1", nil}, want{status: 405, code: "UNSUPPORTED", allow: []string{""}}},
		{call{"GET", "/v2/Not/Valid/blobs/uploads/1", nil}, want{status: 405, code: "UNSUPPORTED", allow: []string{""}}},
		{call{"PUT", "/v2/hello/manifests/latest", nil}, want{status: 405, code: "UNSUPPORTED", allow: []string{"GET, HEAD"}}},
		{call{"DELETE", "/v2/hello/manifests/" + ociDigest, nil}, want{status: 405, code: "UNSUPPORTED", allow: []string{"GET, HEAD"}}},
		{call{"DELETE", "/v2/hello/blobs/" + layer, nil}, want{status: 405, code: "UNSUPPORTED", allow: []string{"GET, HEAD"}}},
		{call{"POST", "/v2/", nil}, want{status: 405, code: "UNSUPPORTED", allow: []string{"GET, HEAD"}}},
		// Routing reads from the end: packages called blobs and uploads
		// are an image like any other (unknown to the demo set).
		{call{"GET", "/v2/blobs/uploads/manifests/latest", nil}, want{status: 404, code: "MANIFEST_UNKNOWN", body: "uploads", route: route.V2Manifest}},
		// ... and the route named is the one served: this is a blob of
		// the image hello/manifests/x.
		{call{"GET", "/v2/hello/manifests/x/blobs/" + absent, nil}, want{status: 404, code: "BLOB_UNKNOWN", route: route.V2Blob}},
		{call{"GET", "/v2/hello/manifests/x/blobs/" + layer, nil}, want{status: 200, digest: true, length: layerSize, route: route.V2Blob}},
		// The path is read escaped: an escaped slash stays inside the
		// reference, and a reference with a slash names no manifest (no
		// tag has one), nor does one with a raw slash after manifests/.
		{call{"GET", "/v2/hello/manifests/refs%2Fheads%2Fmain", nil}, want{status: 404, code: "MANIFEST_UNKNOWN", body: `invalid tag \"refs/heads/main\"`, route: route.V2Manifest}},
		{call{"HEAD", "/v2/hello/manifests/refs%2Fheads%2Fmain", nil}, want{status: 404, route: route.V2Manifest}},
		{call{"GET", "/v2/hello/manifests/refs/../x", nil}, want{status: 404, code: "MANIFEST_UNKNOWN", body: `invalid tag \"refs/../x\"`, route: route.V2Manifest}},
		{call{"GET", "/v2/hello/manifests/refs%2F" + absent, nil}, want{status: 404, code: "MANIFEST_UNKNOWN", body: "refs/" + absent, route: route.V2Manifest}},
		{call{"GET", "/v2/hello/manifests/latest/", nil}, want{status: 404, code: "MANIFEST_UNKNOWN", body: `invalid tag \"latest/\"`, route: route.V2Manifest}},
		{call{"GET", "/v2/shell%2Fhello/manifests/latest", nil}, want{status: 200, digest: true, route: route.V2Manifest}},

		// Tags: every image has "latest".
		{call{"GET", "/v2/shell/hello/tags/list", nil}, want{status: 200, contentType: "application/json", body: `{"name":"shell/hello","tags":["latest"]}`, route: route.V2Other}},
		{call{"GET", "/v2/hello/tags/list?n=0", nil}, want{status: 200, body: `"tags":[]`}},
		{call{"GET", "/v2/hello/tags/list?last=latest", nil}, want{status: 200, body: `"tags":[]`}},
		{call{"GET", "/v2/Hello/tags/list", nil}, want{status: 400, code: "NAME_INVALID"}},

		// Not part of the API: 404, and the message says so (not a
		// repository that is unknown: NAME_UNKNOWN would say that).
		{call{"GET", "/v2/hello/elsewhere/latest", nil}, want{status: 404, code: "UNSUPPORTED", body: "no such endpoint"}},
		{call{"GET", "/v2/_catalog", nil}, want{status: 404, code: "UNSUPPORTED", body: "no such endpoint", route: route.V2Other}},
		{call{"GET", "/v2/hello/tags", nil}, want{status: 404, code: "UNSUPPORTED", body: "no such endpoint"}},
		{call{"HEAD", "/v2/hello/referrers", nil}, want{status: 404}},

		// Referrers: nothing can be pushed, so no manifest has a subject.
		{call{"GET", "/v2/hello/referrers/" + ociDigest, nil}, want{status: 200, contentType: "application/vnd.oci.image.index.v1+json", body: `{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[]}`}},
		{call{"GET", "/v2/hello/referrers/" + absent + "?artifactType=application/example", nil}, want{status: 200, body: `"manifests":[]`, respHeader: map[string]string{"OCI-Filters-Applied": "artifactType"}}},
		{call{"HEAD", "/v2/hello/referrers/" + ociDigest, nil}, want{status: 200, contentType: "application/vnd.oci.image.index.v1+json"}},
		{call{"GET", "/v2/hello/referrers/sha256:abc", nil}, want{status: 400, code: "DIGEST_INVALID"}},
		{call{"GET", "/v2/Hello/referrers/" + ociDigest, nil}, want{status: 400, code: "NAME_INVALID"}},
		{call{"DELETE", "/v2/hello/referrers/" + ociDigest, nil}, want{status: 405, code: "UNSUPPORTED"}},
		{call{"DELETE", "/v2/hello/elsewhere", nil}, want{status: 404, code: "UNSUPPORTED", body: "no such endpoint"}},
	}
	for _, tt := range tests {
		t.Run(tt.method+" "+tt.path, func(t *testing.T) {
			resp, body := do(t, srv, tt.call)
			if resp.StatusCode != tt.status {
				t.Fatalf("status %d, want %d: %s", resp.StatusCode, tt.status, body)
			}
			if got := resp.Header.Get("Docker-Distribution-API-Version"); got != "registry/2.0" {
				t.Errorf("Docker-Distribution-API-Version = %q", got)
			}
			if tt.code != "" && tt.method != "HEAD" {
				var e struct {
					Errors []struct{ Code, Message string }
				}
				if err := json.Unmarshal(body, &e); err != nil || len(e.Errors) != 1 || e.Errors[0].Code != tt.code {
					t.Errorf("error body %s, want code %s", body, tt.code)
				}
				if resp.Header.Get("Content-Type") != "application/json" {
					t.Errorf("error Content-Type = %q", resp.Header.Get("Content-Type"))
				}
			}
			if tt.route != (route.Label{}) && lastRoute() != tt.route {
				t.Errorf("route %v, want %v", lastRoute(), tt.route)
			}
			if tt.allow != nil && !slices.Equal(resp.Header.Values("Allow"), tt.allow) {
				t.Errorf("Allow = %q, want %q", resp.Header.Values("Allow"), tt.allow)
			}
			for k, v := range tt.respHeader {
				if got := resp.Header.Get(k); got != v {
					t.Errorf("%s = %q, want %q", k, got, v)
				}
			}
			if tt.contentType != "" && resp.Header.Get("Content-Type") != tt.contentType {
				t.Errorf("Content-Type = %q, want %q", resp.Header.Get("Content-Type"), tt.contentType)
			}
			if tt.body != "" && !strings.Contains(string(body), tt.body) {
				t.Errorf("body %s does not contain %q", body, tt.body)
			}
			if tt.digest && !strings.HasPrefix(resp.Header.Get("Docker-Content-Digest"), "sha256:") {
				t.Errorf("Docker-Content-Digest = %q", resp.Header.Get("Docker-Content-Digest"))
			}
			// Every answer says how long it is, HEAD included.
			cl, err := strconv.Atoi(resp.Header.Get("Content-Length"))
			if err != nil {
				t.Errorf("Content-Length = %q", resp.Header.Get("Content-Length"))
			}
			if tt.length > 0 && cl != tt.length {
				t.Errorf("Content-Length = %d, want %d", cl, tt.length)
			}
			if tt.method == "HEAD" && len(body) != 0 {
				t.Errorf("HEAD answered with a body")
			}
			if tt.method == "GET" && cl != len(body) {
				t.Errorf("Content-Length %d but body of %d bytes", cl, len(body))
			}
		})
	}
}
