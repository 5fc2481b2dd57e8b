package e2e

import (
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"
)

// TestKilledServerRootsGo: a server killed (kill -9) in the middle of a
// build leaves its temporary Nix garbage-collector roots behind, which
// would keep the build's store paths from Nix's garbage collection for
// good; the next server to start on the machine removes them, and keeps
// its own.
func TestKilledServerRootsGo(t *testing.T) {
	needServer(t)
	tmp := t.TempDir()
	tmpdir := filepath.Join(tmp, "tmpdir") // the servers' TMPDIR, this test's alone
	if err := os.Mkdir(tmpdir, 0o700); err != nil {
		t.Fatal(err)
	}
	env := []string{"TMPDIR=" + tmpdir, "NIXERY_SLOW_SECONDS=30"}
	procs := filepath.Join(tmpdir, "nixery-gcroots-"+strconv.Itoa(os.Getuid()), "proc-*")

	a, err := start(tmp, filepath.Join(tmp, "storage"), env...)
	if err != nil {
		t.Fatal(err)
	}
	killed := false
	defer func() {
		if !killed {
			a.stop()
		}
	}()
	go fetch(a, "/v2/slow/manifests/latest", "") // fails when a dies
	var builds []string
	for deadline := time.Now().Add(30 * time.Second); len(builds) == 0; {
		if time.Now().After(deadline) {
			t.Fatalf("the build's roots never appeared under %s:\n%s", procs, tail(a.log.String(), 20))
		}
		time.Sleep(20 * time.Millisecond)
		builds, _ = filepath.Glob(filepath.Join(procs, "roots-*"))
	}
	a.kill()
	killed = true
	left, _ := filepath.Glob(procs)
	if len(left) != 1 {
		t.Fatalf("after kill -9: %v, want the killed server's directory", left)
	}

	b, err := start(tmp, filepath.Join(tmp, "storage"), env...)
	if err != nil {
		t.Fatal(err)
	}
	defer b.stop()
	// start returns once b answers; it prepares its roots before serving.
	now, _ := filepath.Glob(procs)
	if len(now) != 1 || now[0] == left[0] {
		t.Errorf("after a new server started: %v; want only its own directory, not %s", now, left[0])
	}
	if _, err := os.Lstat(builds[0]); !os.IsNotExist(err) {
		t.Errorf("the killed build's roots %s: %v", builds[0], err)
	}
}
