package e2e

import (
	"encoding/json"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestZstdLayers serves zstd layers (NIXERY_LAYER_FORMAT=zstd) to clients
// that read OCI manifests, and gzip layers of the same tars to clients
// that only read Docker's schema 2. umoci 0.4 cannot unpack zstd, so
// skopeo recompresses while copying, which makes it decompress and verify
// every zstd layer against its diff_id.
func TestZstdLayers(t *testing.T) {
	needServer(t)
	tmp := t.TempDir()
	s, err := start(tmp, filepath.Join(tmp, "storage"), "NIXERY_LAYER_FORMAT=zstd")
	if err != nil {
		t.Fatal(err)
	}
	defer s.stop()
	diffIDs := map[string]string{}
	for accept, layerType := range map[string]string{
		"application/vnd.oci.image.manifest.v1+json":           "application/vnd.oci.image.layer.v1.tar+zstd",
		"application/vnd.docker.distribution.manifest.v2+json": "application/vnd.docker.image.rootfs.diff.tar.gzip",
	} {
		resp, body := s.get(t, "GET", "/v2/shell/hello/manifests/latest", accept)
		var m struct {
			Config struct{ Digest string }
			Layers []struct{ MediaType string }
		}
		if err := json.Unmarshal(body, &m); err != nil || resp.StatusCode != 200 || len(m.Layers) == 0 {
			t.Fatalf("manifest: %d %s", resp.StatusCode, body)
		}
		for _, l := range m.Layers {
			if l.MediaType != layerType {
				t.Errorf("%s: layer media type %s, want %s", accept, l.MediaType, layerType)
			}
		}
		diffIDs[accept] = m.Config.Digest
	}
	// Both manifests describe the same tars: one config, one set of diff_ids.
	if len(diffIDs) != 2 || diffIDs["application/vnd.oci.image.manifest.v1+json"] != diffIDs["application/vnd.docker.distribution.manifest.v2+json"] {
		t.Errorf("configs differ between the manifests: %v", diffIDs)
	}
	layout := filepath.Join(tmp, "oci")
	run(t, "skopeo", "--insecure-policy", "copy", "--src-tls-verify=false", "--dest-compress", "--dest-compress-format", "gzip",
		"docker://"+s.addr+"/shell/hello", "oci:"+layout+":latest")
	bundle := filepath.Join(tmp, "bundle")
	run(t, "umoci", "unpack", "--image", layout+":latest", bundle)
	out, err := exec.Command("chroot", filepath.Join(bundle, "rootfs"), "bash", "-c", "hello").CombinedOutput()
	if err != nil || !strings.Contains(string(out), "Hello, world!") {
		t.Errorf("hello from the zstd image: %v %s", err, out)
	}
}
