package main

import (
	"context"
	"maps"
	"path/filepath"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/nixery/nixery/bench/storegen"
	"github.com/nixery/nixery/internal/archive"
	"github.com/nixery/nixery/internal/layers"
	"github.com/nixery/nixery/internal/storage"
)

// The builder's packer and the way before issue 15 store the same blobs
// (the order and the limit never change the bytes), and the floor runs
// and counts its gzip stream.
func TestPackWaysAgree(t *testing.T) {
	root := t.TempDir()
	generated, _, err := storegen.Generate(filepath.Join(root, "nix", "store"), 3e6)
	if err != nil {
		t.Fatal(err)
	}
	var paths []layers.Path
	var dirs []string
	for _, p := range generated {
		paths = append(paths, layers.Path{Name: p.Dir, Size: p.Size, References: p.Refs})
		dirs = append(dirs, p.Dir)
	}
	groups := layers.GroupWith(paths, 4, layers.Options{})
	if len(groups) < 2 {
		t.Fatalf("%d groups, want several", len(groups))
	}
	blobs := map[bool]map[string]int64{}
	for _, before := range []bool{true, false} {
		dir := filepath.Join(root, "storage", map[bool]string{true: "before", false: "now"}[before])
		store, err := storage.NewFilesystem(dir)
		if err != nil {
			t.Fatal(err)
		}
		var size int64
		if before {
			size, _, err = packBefore(context.Background(), store, groups, archive.Options{})
		} else {
			size, _, err = pack(context.Background(), store, groups, 3, archive.Options{})
		}
		if err != nil {
			t.Fatal(err)
		}
		blobs[before] = map[string]int64{}
		err = store.ListBlobs(context.Background(), func(d digest.Digest, n int64, _ time.Time) error {
			blobs[before][d.String()] = n
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		var sum int64
		for _, n := range blobs[before] {
			sum += n
		}
		if len(blobs[before]) != len(groups) || sum != size {
			t.Errorf("before=%v: %d blobs of %d bytes stored, want %d of %d", before, len(blobs[before]), sum, len(groups), size)
		}
	}
	if !maps.Equal(blobs[true], blobs[false]) {
		t.Errorf("the two ways stored different blobs:\n%v\n%v", blobs[true], blobs[false])
	}
	secs, n, err := floor(dirs)
	if err != nil || secs <= 0 || n < 1000 {
		t.Errorf("floor: %v s, %d bytes, %v", secs, n, err)
	}
}
