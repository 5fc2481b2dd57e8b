package e2e

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/bcrypt"
)

// TestPrivateInstance serves with NIXERY_HTPASSWD: skopeo pulls with the
// right credentials (--creds, --src-creds, and a login), and is refused
// with 401 without them or with a wrong password; the probes stay open,
// and so does /metrics with NIXERY_METRICS_PUBLIC.
func TestPrivateInstance(t *testing.T) {
	needServer(t)
	tmp := t.TempDir()
	hash, err := bcrypt.GenerateFromPassword([]byte("correct horse"), bcrypt.DefaultCost)
	if err != nil {
		t.Fatal(err)
	}
	htpasswd := filepath.Join(tmp, "htpasswd")
	if err := os.WriteFile(htpasswd, []byte("# the team\nalice:"+string(hash)+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	s, err := start(tmp, filepath.Join(tmp, "storage"), "NIXERY_HTPASSWD="+htpasswd, "NIXERY_METRICS_PUBLIC=true")
	if err != nil {
		t.Fatal(err)
	}
	defer s.stop()
	ref := "docker://" + s.addr + "/shell/hello"

	// skopeo fails; its output is returned.
	fails := func(args ...string) string {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		out, err := exec.CommandContext(ctx, "skopeo", args...).CombinedOutput()
		if err == nil {
			t.Errorf("skopeo %s succeeded:\n%s", strings.Join(args, " "), out)
		}
		return string(out)
	}
	for _, args := range [][]string{
		{"inspect", "--tls-verify=false", ref},
		{"inspect", "--tls-verify=false", "--creds", "alice:wrong horse", ref},
		{"inspect", "--tls-verify=false", "--creds", "mallory:correct horse", ref},
	} {
		out := fails(args...)
		if !strings.Contains(strings.ToLower(out), "unauthorized") && !strings.Contains(out, "401") {
			t.Errorf("skopeo %s: not refused as unauthorized:\n%s", strings.Join(args, " "), out)
		}
	}
	if n := s.metric(t, "nixery_nix_builds_total"); n != 0 {
		t.Errorf("refused pulls ran Nix %d times", n)
	}

	out := run(t, "skopeo", "inspect", "--tls-verify=false", "--creds", "alice:correct horse", ref)
	if !strings.Contains(out, `"Digest": "sha256:`) {
		t.Errorf("skopeo inspect --creds: %s", out)
	}
	// A full pull, then a program from the image.
	dir := t.TempDir()
	layout := filepath.Join(dir, "oci")
	run(t, "skopeo", "--insecure-policy", "copy", "--src-tls-verify=false", "--src-creds", "alice:correct horse", ref, "oci:"+layout+":latest")
	run(t, "umoci", "unpack", "--image", layout+":latest", filepath.Join(dir, "bundle"))
	if out := inImage(t, filepath.Join(dir, "bundle", "rootfs"), "hello"); !strings.Contains(out, "Hello, world!") {
		t.Errorf("hello printed %q", out)
	}
	// skopeo login stores the credentials, as docker and podman do.
	authfile := filepath.Join(dir, "auth.json")
	run(t, "skopeo", "login", "--tls-verify=false", "--authfile", authfile, "-u", "alice", "-p", "correct horse", s.addr)
	run(t, "skopeo", "inspect", "--tls-verify=false", "--authfile", authfile, ref)
	fails("login", "--tls-verify=false", "--authfile", filepath.Join(dir, "bad.json"), "-u", "alice", "-p", "wrong horse", s.addr)

	for _, p := range []string{"/healthz", "/readyz"} {
		if resp, body := s.get(t, "GET", p, ""); resp.StatusCode != 200 {
			t.Errorf("%s: %d %s", p, resp.StatusCode, body)
		}
	}
	if resp, _ := s.get(t, "GET", "/", ""); resp.StatusCode != 401 {
		t.Errorf("index page without credentials: %d", resp.StatusCode)
	}
	if strings.Contains(s.log.String(), "horse") {
		t.Errorf("the server log shows a password")
	}
}
