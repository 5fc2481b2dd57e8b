package e2e

import (
	"encoding/json"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestZstdLayers serves zstd layers (NIXERY_LAYER_FORMAT=zstd). umoci
// 0.4 cannot unpack zstd, so skopeo recompresses while copying, which
// makes it decompress and verify every zstd layer against its diff_id.
func TestZstdLayers(t *testing.T) {
	needServer(t)
	tmp := t.TempDir()
	s, err := start(tmp, filepath.Join(tmp, "storage"), "NIXERY_LAYER_FORMAT=zstd")
	if err != nil {
		t.Fatal(err)
	}
	defer s.stop()
	for _, accept := range []string{"application/vnd.oci.image.manifest.v1+json", "application/vnd.docker.distribution.manifest.v2+json"} {
		resp, body := s.get(t, "GET", "/v2/shell/hello/manifests/latest", accept)
		var m struct{ Layers []struct{ MediaType string } }
		if err := json.Unmarshal(body, &m); err != nil || resp.StatusCode != 200 || len(m.Layers) == 0 {
			t.Fatalf("manifest: %d %s", resp.StatusCode, body)
		}
		for _, l := range m.Layers {
			if l.MediaType != "application/vnd.oci.image.layer.v1.tar+zstd" {
				t.Errorf("%s: layer media type %s", accept, l.MediaType)
			}
		}
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
