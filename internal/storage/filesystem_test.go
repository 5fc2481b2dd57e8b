package storage

import (
	"context"
	"errors"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/nixery/nixery/internal/need"
)

func TestFilesystem(t *testing.T) {
	ctx := context.Background()
	root := t.TempDir()
	b, err := NewFilesystem(root)
	if err != nil {
		t.Fatal(err)
	}

	d, err := Put(ctx, b, []byte("hello blob"))
	if err != nil {
		t.Fatal(err)
	}
	if d != digest.FromString("hello blob") {
		t.Fatalf("digest = %s", d)
	}
	if size, err := b.Stat(ctx, d); err != nil || size != 10 {
		t.Fatalf("Stat = %d, %v", size, err)
	}
	r, err := b.Open(ctx, d)
	if err != nil {
		t.Fatal(err)
	}
	r.Seek(6, io.SeekStart)
	rest, _ := io.ReadAll(r)
	r.Close()
	if string(rest) != "blob" || r.Size() != 10 {
		t.Fatalf("read %q size %d", rest, r.Size())
	}
	// Writing the same content again is fine.
	if _, err := Put(ctx, b, []byte("hello blob")); err != nil {
		t.Fatal(err)
	}

	// A wrong digest is refused and leaves nothing behind.
	w, _ := b.Create(ctx)
	w.Write([]byte("other"))
	wrong := digest.FromString("not other")
	if err := w.Commit(wrong); err == nil || !strings.Contains(err.Error(), "expected") {
		t.Fatalf("Commit with wrong digest: %v", err)
	}
	if _, err := b.Stat(ctx, wrong); !errors.Is(err, ErrNotFound) {
		t.Fatalf("Stat after failed commit: %v", err)
	}
	if _, err := b.Open(ctx, digest.FromString("absent")); !errors.Is(err, ErrNotFound) {
		t.Fatalf("Open absent: %v", err)
	}
	if _, err := b.Open(ctx, "sha256:../../etc/passwd"); err == nil || errors.Is(err, ErrNotFound) {
		t.Fatalf("Open invalid digest: %v", err)
	}

	// A cancelled write leaves no temporary file.
	w, _ = b.Create(ctx)
	w.Write([]byte("partial"))
	w.Cancel()
	if left, _ := os.ReadDir(filepath.Join(root, "tmp")); len(left) != 0 {
		t.Fatalf("temporary files left: %v", left)
	}

	// Opening the storage again (another process) changes nothing.
	crashed := filepath.Join(root, "tmp", "blob-crashed")
	os.WriteFile(crashed, []byte("x"), 0o644)
	if _, err := NewFilesystem(root); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(crashed); err != nil {
		t.Fatalf("opening the storage removed a temporary file: %v", err)
	}
	if _, err := b.Stat(ctx, d); err != nil {
		t.Fatalf("committed blob lost on restart: %v", err)
	}

	// Named objects: replaced atomically, names cannot escape.
	if _, err := b.GetObject(ctx, "manifests/abc"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("GetObject absent: %v", err)
	}
	for _, content := range []string{"one", "two"} {
		if err := b.PutObject(ctx, "manifests/abc", []byte(content)); err != nil {
			t.Fatal(err)
		}
		if got, err := b.GetObject(ctx, "manifests/abc"); err != nil || string(got) != content {
			t.Fatalf("GetObject = %q, %v; want %q", got, err, content)
		}
	}
	for _, bad := range []string{"../x", "/etc/passwd", "a/../../b", ".hidden", "A", "a//b", ""} {
		if err := b.PutObject(ctx, bad, []byte("x")); err == nil {
			t.Errorf("PutObject(%q) accepted", bad)
		}
	}
}

// Only uploads that made no progress for AbandonedAfter are removed, by
// DeleteTemporaries with serve's cutoff; the ages are set with Chtimes.
func TestFilesystemAbandonedAfter(t *testing.T) {
	ctx := context.Background()
	root := t.TempDir()
	b, err := NewFilesystem(root)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	live, _ := b.Create(ctx)
	live.Write([]byte("slow but alive "))
	abandoned, _ := b.Create(ctx)
	abandoned.Write([]byte("its process died"))
	age := func(w Writer, d time.Duration) {
		t.Helper()
		name := w.(*fsWriter).file.Name()
		if err := os.Chtimes(name, now.Add(-d), now.Add(-d)); err != nil {
			t.Fatal(err)
		}
	}
	age(live, AbandonedAfter-time.Minute)
	age(abandoned, AbandonedAfter+time.Minute)

	other, err := NewFilesystem(root)
	if err != nil {
		t.Fatal(err)
	}
	if left, _ := os.ReadDir(filepath.Join(root, "tmp")); len(left) != 2 {
		t.Fatalf("opening the storage left %d temporary files, want 2", len(left))
	}
	n, err := other.DeleteTemporaries(ctx, now.Add(-AbandonedAfter))
	if err != nil || n != 1 {
		t.Fatalf("DeleteTemporaries = %d, %v; want 1", n, err)
	}
	if _, err := os.Stat(abandoned.(*fsWriter).file.Name()); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("abandoned upload: %v", err)
	}
	live.Write([]byte("and done"))
	if err := live.Commit(digest.FromString("slow but alive and done")); err != nil {
		t.Fatalf("the live upload: %v", err)
	}
	if err := abandoned.Commit(digest.FromString("its process died")); err == nil {
		t.Fatal("the removed upload was committed")
	}
}

// Every new name is made durable: the directory of a renamed blob or
// object is synced, and so is the parent of every directory created.
func TestFilesystemSyncsDirectories(t *testing.T) {
	ctx := context.Background()
	var synced []string
	record := func(dir string) error {
		synced = append(synced, dir)
		return syncDir(dir)
	}
	root := filepath.Join(t.TempDir(), "new", "store")
	b, err := newFilesystem(root, record)
	if err != nil {
		t.Fatal(err)
	}
	expect := func(what string, dirs ...string) {
		t.Helper()
		for _, d := range dirs {
			if !slices.Contains(synced, d) {
				t.Errorf("%s: %s not synced (synced: %v)", what, d, synced)
			}
		}
		synced = nil
	}
	expect("opening a new storage", filepath.Dir(root), root, filepath.Join(root, "blobs"))

	if _, err := Put(ctx, b, []byte("durable")); err != nil {
		t.Fatal(err)
	}
	expect("Commit", filepath.Join(root, "blobs", "sha256"))
	if _, err := Put(ctx, b, []byte("durable")); err != nil {
		t.Fatal(err)
	}
	expect("Commit of an existing blob", filepath.Join(root, "blobs", "sha256"))

	if err := b.PutObject(ctx, "manifests/a/b", []byte("x")); err != nil {
		t.Fatal(err)
	}
	objects := filepath.Join(root, "objects")
	expect("PutObject in new directories", root, objects, filepath.Join(objects, "manifests"), filepath.Join(objects, "manifests", "a"))
	if err := b.PutObject(ctx, "manifests/a/b", []byte("y")); err != nil {
		t.Fatal(err)
	}
	expect("PutObject replacing", filepath.Join(objects, "manifests", "a"))

	// A failing sync fails the write: the caller is not told it is stored.
	b.syncDir = func(string) error { return errors.New("disk on fire") }
	if _, err := Put(ctx, b, []byte("not durable")); err == nil || !strings.Contains(err.Error(), "disk on fire") {
		t.Errorf("Commit with a failing directory sync: %v", err)
	}
	if err := b.PutObject(ctx, "manifests/c", []byte("x")); err == nil {
		t.Error("PutObject with a failing directory sync succeeded")
	}
}

// Directory syncs work on tmpfs, where Nixery's storage may live in tests
// and small setups.
func TestFilesystemOnTmpfs(t *testing.T) {
	var st syscall.Statfs_t
	const tmpfsMagic = 0x01021994
	if err := syscall.Statfs("/dev/shm", &st); err != nil || st.Type != tmpfsMagic {
		need.Skip(t, "no tmpfs at /dev/shm")
	}
	root, err := os.MkdirTemp("/dev/shm", "nixery-storage-test-")
	if err != nil {
		need.Skip(t, err)
	}
	t.Cleanup(func() { os.RemoveAll(root) })
	ctx := context.Background()
	b, err := NewFilesystem(filepath.Join(root, "store"))
	if err != nil {
		t.Fatal(err)
	}
	d, err := Put(ctx, b, []byte("on tmpfs"))
	if err != nil {
		t.Fatal(err)
	}
	if err := b.PutObject(ctx, "manifests/x/y", []byte("on tmpfs")); err != nil {
		t.Fatal(err)
	}
	if got, err := Get(ctx, b, d); err != nil || string(got) != "on tmpfs" {
		t.Fatalf("Get = %q, %v", got, err)
	}
}
