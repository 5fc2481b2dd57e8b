package nix

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"syscall"
	"time"
)

// Temporary GC roots.
//
// A build keeps its closure from Nix's garbage collection (min-free) with
// indirect roots: symlinks in a directory of its own, which
// /nix/var/nix/gcroots/auto points at, removed when the build ends. A
// process that dies — kill -9, the OOM killer, a lost node — removes
// nothing, and its roots would keep their store paths alive for good, a
// closure per build that was running, until the disk is full. So every
// directory of temporary roots is inside one directory per process, under
// one base directory per user; the process holds a lock (flock) on a file
// in its directory for as long as it lives, the kernel releases it when
// the process dies however it dies, and the first TempRoots of every
// Nixery process removes the directories whose lock is free. Flocks are
// not bound to PID namespaces, so this holds for processes in different
// containers sharing one /tmp too.

// rootsLock is the lock file of a process's roots directory.
const rootsLock = "lock"

// lockless is how old a process directory without a lock file must be to
// count as left behind: a process makes its lock file a moment after the
// directory, so only one that died in that moment leaves none.
const lockless = time.Hour

var procRoots struct {
	mu   sync.Mutex
	base string // the base directory dir is in
	dir  string // this process's directory; "" before the first use
	// locks stay open, and so locked, until the process ends, also when
	// a directory was replaced (builds may still have roots in it); held
	// here so that no finalizer closes them.
	locks []*os.File
}

// TempRoots makes a new directory for temporary GC roots (pass it as
// Request.RootDir or KnownRequest.RootDir, or to --add-root); remove
// deletes it and so the roots in it. It is inside this process's own
// directory, which another Nixery process removes once this one has died.
// If that directory went (a /tmp cleaner such as systemd-tmpfiles; tests
// that change TMPDIR), a new one is made.
func TempRoots() (dir string, remove func(), err error) {
	procRoots.mu.Lock()
	defer procRoots.mu.Unlock()
	for range 2 {
		if err := prepareRoots(); err != nil {
			return "", nil, err
		}
		dir, err = os.MkdirTemp(procRoots.dir, "roots-")
		if errors.Is(err, fs.ErrNotExist) {
			procRoots.dir = "" // removed under us: make another
			continue
		}
		if err != nil {
			return "", nil, fmt.Errorf("temporary GC roots: %w", err)
		}
		return dir, func() { os.RemoveAll(dir) }, nil
	}
	return "", nil, fmt.Errorf("temporary GC roots: %w", err)
}

// PrepareRoots does at once what the first TempRoots would: it removes
// the roots that dead processes left and makes this process's directory.
// serve calls it at start-up, so that a restart frees the store paths a
// killed process held even if it then builds nothing.
func PrepareRoots() error {
	procRoots.mu.Lock()
	defer procRoots.mu.Unlock()
	return prepareRoots()
}

// RemoveRoots removes this process's directory and every root in it, for
// a process that is about to exit: it leaves nothing behind for the next
// process to remove. A later TempRoots makes a new one.
func RemoveRoots() {
	procRoots.mu.Lock()
	defer procRoots.mu.Unlock()
	if procRoots.dir != "" {
		os.RemoveAll(procRoots.dir)
		procRoots.dir = ""
	}
}

// prepareRoots makes this process's directory in the base directory of
// TMPDIR, unless it has one there; procRoots.mu is held.
func prepareRoots() error {
	base := filepath.Join(os.TempDir(), "nixery-gcroots-"+strconv.Itoa(os.Getuid()))
	if procRoots.dir != "" && procRoots.base == base {
		return nil
	}
	if err := privateDir(base); err != nil {
		return fmt.Errorf("temporary GC roots: %w", err)
	}
	removeStaleRoots(base)
	own, lock, err := newProcRoots(base)
	if err != nil {
		return fmt.Errorf("temporary GC roots: %w", err)
	}
	procRoots.base, procRoots.dir = base, own
	procRoots.locks = append(procRoots.locks, lock)
	return nil
}

// privateDir makes dir (mode 0700) unless it exists, and checks that it is
// a directory of this user that nobody else can write: in a shared /tmp
// another user could have made it first, to remove the roots in it.
func privateDir(dir string) error {
	if err := os.Mkdir(dir, 0o700); err != nil && !errors.Is(err, fs.ErrExist) {
		return err
	}
	fi, err := os.Lstat(dir)
	if err != nil {
		return err
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !fi.IsDir() || !ok || int(st.Uid) != os.Getuid() || fi.Mode().Perm()&0o077 != 0 {
		return fmt.Errorf("%s is not a directory of this user (uid %d) with mode 0700; remove it", dir, os.Getuid())
	}
	return nil
}

// newProcRoots makes a process directory under base and returns it with
// its lock, which the caller keeps open for the life of the process. The
// lock is taken on a file under another name and then renamed into
// place, so that removeStaleRoots never sees the lock file of a live
// process unlocked.
func newProcRoots(base string) (string, *os.File, error) {
	dir, err := os.MkdirTemp(base, "proc-")
	if err != nil {
		return "", nil, err
	}
	f, err := os.OpenFile(filepath.Join(dir, rootsLock+".new"), os.O_CREATE|os.O_EXCL|os.O_RDWR, 0o600)
	if err == nil {
		err = syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
		if err == nil {
			err = os.Rename(f.Name(), filepath.Join(dir, rootsLock))
		}
		if err != nil {
			f.Close()
		}
	}
	if err != nil {
		os.RemoveAll(dir)
		return "", nil, err
	}
	return dir, f, nil
}

// removeStaleRoots removes the process directories under base whose lock
// nobody holds: their processes have died. It returns how many it removed.
func removeStaleRoots(base string) int {
	entries, err := os.ReadDir(base)
	if err != nil {
		return 0
	}
	removed := 0
	for _, e := range entries {
		dir := filepath.Join(base, e.Name())
		f, err := os.Open(filepath.Join(dir, rootsLock))
		if errors.Is(err, fs.ErrNotExist) {
			if fi, err := e.Info(); err == nil && time.Since(fi.ModTime()) > lockless {
				os.RemoveAll(dir)
				removed++
			}
			continue
		}
		if err != nil {
			continue
		}
		if syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB) == nil {
			// Held while removing: a second sweeper waits on nothing
			// and finds the directory gone or going.
			os.RemoveAll(dir)
			removed++
		}
		f.Close()
	}
	return removed
}
