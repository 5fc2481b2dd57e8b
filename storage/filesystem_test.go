package storage

import (
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

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

	// Temporary files of a crashed process are removed at start-up.
	os.WriteFile(filepath.Join(root, "tmp", "blob-crashed"), []byte("x"), 0o644)
	if _, err := NewFilesystem(root); err != nil {
		t.Fatal(err)
	}
	if left, _ := os.ReadDir(filepath.Join(root, "tmp")); len(left) != 0 {
		t.Fatalf("temporary files survived restart: %v", left)
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
