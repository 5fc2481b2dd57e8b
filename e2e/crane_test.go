package e2e

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/nixery/nixery/internal/need"
	"github.com/nixery/nixery/internal/storage/storagetest"
)

// crane returns go-containerregistry's crane, which scripts/storage-servers
// builds beside the test servers.
func crane(t *testing.T) string {
	t.Helper()
	p := filepath.Join(storagetest.BinDir(), "crane")
	if _, err := os.Stat(p); err != nil {
		need.Skipf(t, "crane not found in %s: run scripts/storage-servers", storagetest.BinDir())
	}
	return p
}

// TestCraneValidates has a second, independent client check images:
// `crane validate --remote` downloads every blob and checks its digest,
// size and diff_id against the manifest and config, for gzip and zstd
// layers, and `crane digest` agrees with Docker-Content-Digest.
func TestCraneValidates(t *testing.T) {
	needServer(t)
	bin := crane(t)
	tmp := t.TempDir()
	zstd, err := start(tmp, filepath.Join(tmp, "storage"), "NIXERY_LAYER_FORMAT=zstd")
	if err != nil {
		t.Fatal(err)
	}
	defer zstd.stop()
	for _, s := range []*nixery{&server, zstd} {
		for _, name := range []string{"shell/hello", "xorg.xev/curl"} {
			ref := s.addr + "/" + name
			out, err := exec.Command(bin, "validate", "--insecure", "--remote", ref).CombinedOutput()
			if err != nil || !strings.HasPrefix(string(out), "PASS") {
				t.Errorf("crane validate %s: %v\n%s", ref, err, out)
			}
			// crane prefers Docker's schema 2; either manifest is right.
			out, err = exec.Command(bin, "digest", "--insecure", ref).CombinedOutput()
			oci, _ := s.get(t, "HEAD", "/v2/"+name+"/manifests/latest", "application/vnd.oci.image.manifest.v1+json")
			docker, _ := s.get(t, "HEAD", "/v2/"+name+"/manifests/latest", "application/vnd.docker.distribution.manifest.v2+json")
			got := strings.TrimSpace(string(out))
			if err != nil || (got != oci.Header.Get("Docker-Content-Digest") && got != docker.Header.Get("Docker-Content-Digest")) {
				t.Errorf("crane digest %s = %q (%v), HEAD says %s or %s", ref, got, err, oci.Header.Get("Docker-Content-Digest"), docker.Header.Get("Docker-Content-Digest"))
			}
			// By digest, each manifest is validated as it is, except the
			// zstd one: crane's validate reads every layer as gzip
			// (TestZstdLayers has skopeo verify zstd layers).
			digests := []string{docker.Header.Get("Docker-Content-Digest")}
			if s == &server {
				digests = append(digests, oci.Header.Get("Docker-Content-Digest"))
			}
			for _, d := range digests {
				out, err := exec.Command(bin, "validate", "--insecure", "--remote", s.addr+"/"+name+"@"+d).CombinedOutput()
				if err != nil || !strings.HasPrefix(string(out), "PASS") {
					t.Errorf("crane validate %s@%s: %v\n%s", ref, d, err, out)
				}
			}
		}
	}
}

// TestListTags has clients list an image's tags.
func TestListTags(t *testing.T) {
	needServer(t)
	out, err := exec.Command("skopeo", "list-tags", "--tls-verify=false", "docker://"+server.addr+"/shell/hello").CombinedOutput()
	if err != nil || !strings.Contains(string(out), `"latest"`) {
		t.Errorf("skopeo list-tags: %v\n%s", err, out)
	}
	out, err = exec.Command(crane(t), "ls", "--insecure", server.addr+"/shell/hello").CombinedOutput()
	if err != nil || strings.TrimSpace(string(out)) != "latest" {
		t.Errorf("crane ls: %v\n%s", err, out)
	}
}
