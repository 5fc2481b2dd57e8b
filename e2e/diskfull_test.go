package e2e

import (
	"crypto/sha256"
	"encoding/hex"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/nixery/nixery/internal/need"
)

// TestDiskFull stores images on a tiny tmpfs: a build that does not fit
// fails with a clear error, leaves no temporary file and no blob whose
// content does not match its name, and the same pull succeeds once there
// is room, without restarting Nixery.
func TestDiskFull(t *testing.T) {
	needServer(t)
	dir := t.TempDir()
	mnt := filepath.Join(dir, "small")
	os.Mkdir(mnt, 0o755)
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size=600k", "tmpfs", mnt).CombinedOutput(); err != nil {
		need.Skipf(t, "cannot mount a tmpfs here: %v %s", err, out)
	}
	defer exec.Command("umount", "-l", mnt).Run()

	s, err := start(dir, mnt)
	if err != nil {
		t.Fatal(err)
	}
	defer s.stop()
	resp, body := s.get(t, "GET", "/v2/shell/python3/manifests/latest", "")
	if resp.StatusCode != 500 || !strings.Contains(string(body), "no space left on device") || resp.Header.Get("Content-Type") != "application/json" {
		t.Fatalf("pull on a full disk: %d %s", resp.StatusCode, body)
	}
	if left, _ := os.ReadDir(filepath.Join(mnt, "tmp")); len(left) != 0 {
		t.Errorf("temporary files left after the failure: %d", len(left))
	}
	blobs, _ := filepath.Glob(filepath.Join(mnt, "blobs", "sha256", "*"))
	for _, b := range blobs {
		data, err := os.ReadFile(b)
		sum := sha256.Sum256(data)
		if err != nil || hex.EncodeToString(sum[:]) != filepath.Base(b) {
			t.Errorf("blob %s does not match its digest", filepath.Base(b))
		}
	}

	if out, err := exec.Command("mount", "-o", "remount,size=64m", mnt).CombinedOutput(); err != nil {
		t.Fatalf("remount: %v %s", err, out)
	}
	rootfs := pullFrom(t, s, "shell/python3")
	if out := inImage(t, rootfs, "python3 --version"); !strings.Contains(strings.ToLower(out), "python") {
		t.Errorf("python3 --version printed %q", out)
	}
}
