package e2e

import (
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nixery/nixery/internal/storage/storagetest"
)

// bucketEnv is the environment that points Nixery at a test bucket.
func bucketEnv(backend string, srv *storagetest.Server) []string {
	switch backend {
	case "s3":
		return []string{
			"NIXERY_STORAGE_BACKEND=s3", "NIXERY_S3_BUCKET=" + srv.Bucket, "NIXERY_S3_ENDPOINT=" + srv.Endpoint,
			"NIXERY_S3_PATH_STYLE=true", "NIXERY_S3_REGION=" + srv.Region,
			"AWS_ACCESS_KEY_ID=" + srv.AccessKey, "AWS_SECRET_ACCESS_KEY=" + srv.SecretKey,
			"NIXERY_STORAGE_TIMEOUT=3",
		}
	case "gcs":
		return []string{"NIXERY_STORAGE_BACKEND=gcs", "GCS_BUCKET=" + srv.Bucket, "NIXERY_GCS_ENDPOINT=" + srv.Endpoint, "NIXERY_STORAGE_TIMEOUT=3"}
	}
	panic(backend)
}

// startBucket starts the test server of a bucket backend, "s3" or "gcs".
func startBucket(t *testing.T, backend string) *storagetest.Server {
	if backend == "s3" {
		return storagetest.StartS3(t)
	}
	return storagetest.StartGCS(t)
}

// TestReplicasShareABucket runs two Nixery processes on one bucket: an
// image built through the first is pulled through the second without a
// Nix build there. The first redirects blob downloads to the bucket, the
// second serves them itself; both pulls run in the image.
func TestReplicasShareABucket(t *testing.T) {
	needServer(t)
	for _, backend := range []string{"s3", "gcs"} {
		t.Run(backend, func(t *testing.T) {
			srv := startBucket(t, backend)
			tmp := t.TempDir()
			env := bucketEnv(backend, srv)
			redirecting, err := start(tmp, filepath.Join(tmp, "unused-a"), env...)
			if err != nil {
				t.Fatal(err)
			}
			defer redirecting.stop()
			proxying, err := start(tmp, filepath.Join(tmp, "unused-b"), append(env, "NIXERY_BLOB_REDIRECT=false")...)
			if err != nil {
				t.Fatal(err)
			}
			defer proxying.stop()

			accept := "application/vnd.oci.image.manifest.v1+json"
			resp, body := redirecting.get(t, "GET", "/v2/shell/hello/manifests/latest", accept)
			if resp.StatusCode != 200 {
				t.Fatalf("build through the first replica: %d %s\n%s", resp.StatusCode, body, tail(redirecting.log.String(), 20))
			}
			digest := resp.Header.Get("Docker-Content-Digest")

			// The second replica answers from the bucket, without Nix.
			resp, _ = proxying.get(t, "GET", "/v2/shell/hello/manifests/latest", accept)
			if resp.StatusCode != 200 || resp.Header.Get("Docker-Content-Digest") != digest {
				t.Errorf("second replica: %d %s, want %s", resp.StatusCode, resp.Header.Get("Docker-Content-Digest"), digest)
			}
			if n := proxying.metric(t, "nixery_nix_builds_total"); n != 0 {
				t.Errorf("the second replica ran Nix %d times", n)
			}

			// Blobs: a redirect to the bucket from the first, the bytes from
			// the second.
			cfg := imageConfigFrom(t, redirecting, "shell/hello", accept)
			noFollow := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
			r, err := noFollow.Get("http://" + redirecting.addr + "/v2/shell/hello/blobs/" + cfg)
			if err != nil {
				t.Fatal(err)
			}
			r.Body.Close()
			if r.StatusCode != http.StatusTemporaryRedirect || !strings.HasPrefix(r.Header.Get("Location"), srv.Endpoint) {
				t.Errorf("redirecting replica: %d Location %q", r.StatusCode, r.Header.Get("Location"))
			}
			r, err = noFollow.Get("http://" + proxying.addr + "/v2/shell/hello/blobs/" + cfg)
			if err != nil {
				t.Fatal(err)
			}
			r.Body.Close()
			if r.StatusCode != http.StatusOK || r.Header.Get("Docker-Content-Digest") != cfg {
				t.Errorf("proxying replica: %d", r.StatusCode)
			}

			for _, s := range []*nixery{redirecting, proxying} {
				rootfs := pullFrom(t, s, "shell/hello")
				if out := inImage(t, rootfs, "hello"); !strings.Contains(out, "Hello, world!") {
					t.Errorf("hello through %s printed %q", s.addr, out)
				}
			}
			if n := proxying.metric(t, "nixery_nix_builds_total"); n != 0 {
				t.Errorf("the second replica ran Nix %d times", n)
			}

			// nixery gc lists the bucket: the image is in use, nothing goes.
			gc := exec.Command(bin, "gc", "--dry-run")
			gc.Env = append(os.Environ(), env...)
			out, err := gc.CombinedOutput()
			if err != nil || !strings.Contains(string(out), "images: 1 kept, 0 deleted; blobs: ") || !strings.Contains(string(out), " 0 deleted (0 bytes)") {
				t.Errorf("nixery gc --dry-run on the bucket: %v\n%s", err, out)
			}
		})
	}
}

// TestStorageOutage stops the bucket's server under a running Nixery:
// requests fail fast with a retryable 503, and succeed again once the
// server is back, without restarting Nixery.
func TestStorageOutage(t *testing.T) {
	needServer(t)
	srv := storagetest.StartS3(t)
	tmp := t.TempDir()
	s, err := start(tmp, filepath.Join(tmp, "unused"), append(bucketEnv("s3", srv), "NIXERY_BLOB_REDIRECT=false")...)
	if err != nil {
		t.Fatal(err)
	}
	defer s.stop()
	accept := "application/vnd.oci.image.manifest.v1+json"
	if resp, body := s.get(t, "GET", "/v2/hello/manifests/latest", accept); resp.StatusCode != 200 {
		t.Fatalf("before the outage: %d %s", resp.StatusCode, body)
	}
	cfg := imageConfigFrom(t, s, "hello", accept)

	srv.Stop()
	for _, path := range []string{"/v2/jq/manifests/latest", "/v2/hello/blobs/" + cfg} {
		start := time.Now()
		resp, body := s.get(t, "GET", path, accept)
		if resp.StatusCode != http.StatusServiceUnavailable || !strings.Contains(string(body), "UNAVAILABLE") || resp.Header.Get("Retry-After") == "" {
			t.Errorf("GET %s during the outage: %d %s", path, resp.StatusCode, body)
		}
		if took := time.Since(start); took > 20*time.Second {
			t.Errorf("GET %s during the outage took %s", path, took)
		}
	}

	srv.Start()
	resp, body := s.get(t, "GET", "/v2/jq/manifests/latest", accept)
	if resp.StatusCode != 200 {
		t.Errorf("after the outage: %d %s", resp.StatusCode, body)
	}
	rootfs := pullFrom(t, s, "jq")
	if m, _ := filepath.Glob(filepath.Join(rootfs, "nix", "store", "*-jq-*")); len(m) == 0 {
		t.Error("the image pulled after the outage has no jq")
	}
}

// pullFrom copies ref from server s into an OCI layout with skopeo and
// unpacks it with umoci; it returns the root file system.
func pullFrom(t *testing.T, s *nixery, ref string) string {
	t.Helper()
	dir := t.TempDir()
	layout := filepath.Join(dir, "oci")
	run(t, "skopeo", "--insecure-policy", "copy", "--src-tls-verify=false",
		"docker://"+s.addr+"/"+ref, "oci:"+layout+":latest")
	bundle := filepath.Join(dir, "bundle")
	run(t, "umoci", "unpack", "--image", layout+":latest", bundle)
	return filepath.Join(bundle, "rootfs")
}

// imageConfigFrom returns the config digest of an image's manifest.
func imageConfigFrom(t *testing.T, s *nixery, name, accept string) string {
	t.Helper()
	_, body := s.get(t, "GET", "/v2/"+name+"/manifests/latest", accept)
	i := strings.Index(string(body), `"config":`)
	j := strings.Index(string(body[i:]), `"digest":"`)
	rest := string(body[i+j+len(`"digest":"`):])
	return rest[:strings.Index(rest, `"`)]
}
