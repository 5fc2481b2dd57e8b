package registry

import (
	"testing"

	"github.com/nixery/nixery/internal/route"
)

// TestParsePath is the grammar of the API's paths, read from the end of
// the escaped path, and the route each is counted as.
func TestParsePath(t *testing.T) {
	for _, tt := range []struct {
		path  string // escaped, as on the wire
		want  apiPath
		label route.Label
	}{
		{"/v2/", apiPath{endpoint: base}, route.V2Base},
		{"/v2", apiPath{endpoint: base}, route.V2Base},
		{"/v2/shell/git/manifests/latest", apiPath{manifests, "shell/git", "latest"}, route.V2Manifest},
		{"/v2/a/b/c/blobs/sha256:0123", apiPath{blobs, "a/b/c", "sha256:0123"}, route.V2Blob},
		{"/v2/hello/referrers/sha256:0123", apiPath{referrers, "hello", "sha256:0123"}, route.V2Other},
		{"/v2/shell/hello/tags/list", apiPath{endpoint: tags, name: "shell/hello"}, route.V2Other},
		{"/v2/hello/blobs/uploads", apiPath{endpoint: uploads}, route.V2Blob},
		{"/v2/hello/blobs/uploads/", apiPath{endpoint: uploads}, route.V2Blob},
		{"/v2/hello/blobs/uploads/1", apiPath{endpoint: uploads}, route.V2Blob},
		{"/v2/_catalog", apiPath{}, route.V2Other},
		{"/v2/hello/elsewhere/latest", apiPath{}, route.V2Other},
		{"/v2/manifests/latest", apiPath{}, route.V2Other},
		// From the end: the segment before the last decides, so a
		// manifest of packages called blobs and uploads is a manifest,
		// and a blob under a name with a manifests segment a blob.
		{"/v2/blobs/uploads/manifests/latest", apiPath{manifests, "blobs/uploads", "latest"}, route.V2Manifest},
		{"/v2/a/manifests/x/blobs/sha256:00", apiPath{blobs, "a/manifests/x", "sha256:00"}, route.V2Blob},
		{"/v2/a/manifests/x/tags/list", apiPath{endpoint: tags, name: "a/manifests/x"}, route.V2Other},
		// Escaped slashes stay in their segment: in a reference, it stays
		// one; in a name, the name is the same.
		{"/v2/hello/manifests/refs%2Fheads%2Fmain", apiPath{manifests, "hello", "refs/heads/main"}, route.V2Manifest},
		{"/v2/shell%2Fhello/manifests/latest", apiPath{manifests, "shell/hello", "latest"}, route.V2Manifest},
		{"/v2/hello/blobs/sha256%3A00", apiPath{blobs, "hello", "sha256:00"}, route.V2Blob},
		// Raw slashes after the last manifests segment: a reference that
		// names no manifest, which the manifest handler says.
		{"/v2/hello/manifests/refs/../x", apiPath{manifests, "hello", "refs/../x"}, route.V2Manifest},
		{"/v2/hello/manifests/refs/heads/main", apiPath{manifests, "hello", "refs/heads/main"}, route.V2Manifest},
		{"/v2/hello/manifests/latest/", apiPath{manifests, "hello", "latest/"}, route.V2Manifest},
		{"/v2/a/../hello/manifests/latest", apiPath{manifests, "a/../hello", "latest"}, route.V2Manifest},
	} {
		got := parsePath(tt.path)
		if got != tt.want || got.label() != tt.label {
			t.Errorf("parsePath(%q) = %+v %v, want %+v %v", tt.path, got, got.label(), tt.want, tt.label)
		}
	}
}
