package storage

import (
	"context"
	"errors"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
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
