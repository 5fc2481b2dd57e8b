package nix

import (
	"bufio"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"
)

// rootsChild, when set, makes TestRootsOfADeadProcessGo's child: it makes
// its process directory under that base with a root in it, prints the
// directory and waits to be killed.
const rootsChild = "NIXERY_TEST_ROOTS_CHILD"

// childLock keeps the child's lock reachable until the kill (an *os.File
// that nothing refers to may be closed by its finalizer, and its flock
// with it).
var childLock *os.File

func TestMain(m *testing.M) {
	if base := os.Getenv(rootsChild); base != "" {
		dir, lock, err := newProcRoots(base)
		childLock = lock // open (and locked) until the kill
		if err == nil {
			err = os.Symlink("/nix/store/00000000000000000000000000000000-x", filepath.Join(dir, "result"))
		}
		if err != nil {
			fmt.Println("error:", err)
			os.Exit(1)
		}
		fmt.Println(dir)
		// Asleep, not blocked: a binary without cgo (as built where
		// there is no C compiler, in CI's Debian 13 root) whose
		// goroutines all block on nothing dies of "all goroutines are
		// asleep - deadlock!", which freed the "live" child's lock.
		for {
			time.Sleep(time.Hour)
		}
	}
	os.Exit(m.Run())
}

// The roots of a process that was killed (no deferred removal ran) are
// removed by the next process's sweep; those of a live process are not.
func TestRootsOfADeadProcessGo(t *testing.T) {
	base := t.TempDir()
	start := func() (*exec.Cmd, string) {
		t.Helper()
		cmd := exec.Command(os.Args[0], "-test.run=^$")
		cmd.Env = append(os.Environ(), rootsChild+"="+base)
		out, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		line, err := bufio.NewReader(out).ReadString('\n')
		if err != nil || filepath.Dir(line[:len(line)-1]) != base {
			cmd.Process.Kill()
			t.Fatalf("child: %q, %v", line, err)
		}
		return cmd, line[:len(line)-1]
	}
	dead, deadDir := start()
	live, liveDir := start()
	defer func() { live.Process.Kill(); live.Wait() }()
	// This process's own directory is locked too, by another open file
	// than the sweep's: it must survive as well.
	own, lock, err := newProcRoots(base)
	if err != nil {
		t.Fatal(err)
	}
	defer lock.Close()

	if n := removeStaleRoots(base); n != 0 {
		t.Fatalf("with every process alive the sweep removed %d directories", n)
	}
	dead.Process.Kill()
	dead.Wait()
	if n := removeStaleRoots(base); n != 1 {
		t.Errorf("after kill -9 the sweep removed %d directories, want 1", n)
	}
	if _, err := os.Lstat(deadDir); !os.IsNotExist(err) {
		t.Errorf("the killed process's roots are still there: %v", err)
	}
	for _, dir := range []string{liveDir, own} {
		if _, err := os.Stat(filepath.Join(dir, rootsLock)); err != nil {
			t.Errorf("a live process's directory went: %v", err)
		}
	}
}

// A process directory without a lock file (its process died the moment
// after making it) goes once it is an hour old, not before: a live
// process may be about to lock it.
func TestRootsWithoutLock(t *testing.T) {
	base := t.TempDir()
	young := filepath.Join(base, "proc-young")
	old := filepath.Join(base, "proc-old")
	for _, dir := range []string{young, old} {
		if err := os.Mkdir(dir, 0o700); err != nil {
			t.Fatal(err)
		}
	}
	then := time.Now().Add(-lockless - time.Minute)
	if err := os.Chtimes(old, then, then); err != nil {
		t.Fatal(err)
	}
	if n := removeStaleRoots(base); n != 1 {
		t.Errorf("removed %d, want 1", n)
	}
	if _, err := os.Stat(young); err != nil {
		t.Errorf("young directory: %v", err)
	}
	if _, err := os.Stat(old); !os.IsNotExist(err) {
		t.Errorf("old directory: %v", err)
	}
}

// TempRoots refuses a base directory that another user could have made.
func TestPrivateDir(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "roots")
	if err := privateDir(dir); err != nil {
		t.Fatal(err)
	}
	if err := privateDir(dir); err != nil {
		t.Fatalf("again: %v", err)
	}
	os.Chmod(dir, 0o777)
	if err := privateDir(dir); err == nil {
		t.Error("a directory anyone can write was accepted")
	}
	link := filepath.Join(t.TempDir(), "link")
	os.Symlink(dir, link)
	if err := privateDir(link); err == nil {
		t.Error("a symlink was accepted")
	}
}

// A process that exits cleanly removes its own directory.
func TestRemoveRoots(t *testing.T) {
	t.Setenv("TMPDIR", t.TempDir())
	dir, remove, err := TempRoots()
	if err != nil {
		t.Fatal(err)
	}
	remove()
	RemoveRoots()
	if _, err := os.Stat(filepath.Dir(dir)); !os.IsNotExist(err) {
		t.Errorf("the process's directory: %v", err)
	}
	if _, _, err := TempRoots(); err != nil { // and a new one is made after
		t.Errorf("TempRoots after RemoveRoots: %v", err)
	}
}
