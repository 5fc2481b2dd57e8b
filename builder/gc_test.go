package builder

import (
	"context"
	"encoding/json"
	"io/fs"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/nixery/nixery/config"
	"github.com/nixery/nixery/manifest"
)

func TestGC(t *testing.T) {
	pkgs := demoSet(t)
	root := t.TempDir()
	ctx := context.Background()
	b := newBuilder(t, config.PathSource{Path: pkgs}, root)
	if _, _, err := b.Manifest(ctx, request(t, "hello", "latest"), manifest.OCIManifest); err != nil {
		t.Fatal(err)
	}
	if _, _, err := b.Manifest(ctx, request(t, "jq", "latest"), manifest.OCIManifest); err != nil {
		t.Fatal(err)
	}
	src, _ := b.Source.Resolve(ctx, "latest")
	jqKey := b.manifestKey(src.Identity, []string{"jq"}, "x86_64-linux")

	// Everything was written two days ago; only hello was pulled since.
	old := time.Now().Add(-48 * time.Hour)
	filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			os.Chtimes(p, old, old)
		}
		return nil
	})
	entryFile := filepath.Join(root, "objects", "manifests", jqKey)
	raw, err := os.ReadFile(entryFile)
	if err != nil {
		t.Fatal(err)
	}
	var e manifestEntry
	json.Unmarshal(raw, &e)
	e.Used, e.Built = old, old
	raw, _ = json.Marshal(e)
	os.WriteFile(entryFile, raw, 0o644)
	os.Chtimes(entryFile, old, old)
	helloKey := b.manifestKey(src.Identity, []string{"hello"}, "x86_64-linux")
	os.Chtimes(filepath.Join(root, "objects", "manifests", helloKey), time.Now(), time.Now())

	dry, err := GC(ctx, b.Storage, 24*time.Hour, true)
	if err != nil {
		t.Fatal(err)
	}
	if dry.ImagesKept != 1 || dry.ImagesDeleted != 1 || dry.BlobsDeleted == 0 || dry.BlobsKept == 0 {
		t.Fatalf("dry run: %s", dry)
	}
	if _, err := os.Stat(entryFile); err != nil {
		t.Fatalf("dry run deleted the entry: %v", err)
	}

	rep, err := GC(ctx, b.Storage, 24*time.Hour, false)
	if err != nil {
		t.Fatal(err)
	}
	if rep.ImagesDeleted != dry.ImagesDeleted || rep.BlobsDeleted != dry.BlobsDeleted || rep.BytesDeleted != dry.BytesDeleted {
		t.Errorf("collection %s differs from its dry run %s", rep, dry)
	}
	// hello still pulls from the cache with all its blobs; jq is rebuilt.
	fresh := newBuilder(t, config.PathSource{Path: pkgs}, root)
	data, _, err := fresh.Manifest(ctx, request(t, "hello", "latest"), manifest.OCIManifest)
	if err != nil || fresh.Stats().NixBuilds.Load() != 0 {
		t.Fatalf("hello after gc: %v, %d Nix builds", err, fresh.Stats().NixBuilds.Load())
	}
	var m struct {
		Config struct{ Digest string }
		Layers []struct{ Digest string }
	}
	json.Unmarshal(data, &m)
	for _, d := range append([]string{m.Config.Digest}, func() (ds []string) {
		for _, l := range m.Layers {
			ds = append(ds, l.Digest)
		}
		return
	}()...) {
		if _, err := os.Stat(filepath.Join(root, "blobs", "sha256", d[len("sha256:"):])); err != nil {
			t.Errorf("blob %s of a kept image was deleted", d)
		}
	}
	if _, _, err := fresh.Manifest(ctx, request(t, "jq", "latest"), manifest.OCIManifest); err != nil || fresh.Stats().NixBuilds.Load() != 1 {
		t.Errorf("jq after gc: %v, %d Nix builds (want a rebuild)", err, fresh.Stats().NixBuilds.Load())
	}
}
