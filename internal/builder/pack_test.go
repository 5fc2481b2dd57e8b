package builder

import (
	"archive/tar"
	"context"
	"errors"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/nixery/nixery/internal/archive"
	"github.com/nixery/nixery/internal/storage"
)

// fileLayer is a layer of one file of content; its cache key is its name.
func fileLayer(name, content string) Layer {
	return Layer{Kind: "test", Paths: []string{name}, CreatedBy: name,
		List: func() (int64, func(*tar.Writer) error, error) {
			return int64(len(content)), func(tw *tar.Writer) error {
				return archive.Entries(tw, []archive.Entry{{Name: name, Type: tar.TypeReg, Data: []byte(content), Mode: 0o644}})
			}, nil
		}}
}

// memCache is a LayerCache in memory that records what it is told.
type memCache struct {
	mu     sync.Mutex
	layers map[string]archive.Layer
	packed []string
}

func (c *memCache) Layer(_ context.Context, key string) (archive.Layer, bool, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	l, ok := c.layers[key]
	return l, ok, nil
}

func (c *memCache) Packed(_ context.Context, key string, l archive.Layer) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.layers[key] = l
	c.packed = append(c.packed, key)
	return nil
}

// The packer returns the layers in the order given whatever the order it
// packs them in, packs only what its cache lacks, tells the cache of
// each new layer, and stores every blob it returns.
func TestPackerPacksWhatTheCacheLacks(t *testing.T) {
	ctx := context.Background()
	store, err := storage.NewFilesystem(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	layers := []Layer{fileLayer("small", "a"), fileLayer("big", strings.Repeat("b", 1<<20)), fileLayer("middle", strings.Repeat("c", 1000))}
	cache := &memCache{layers: map[string]archive.Layer{}}
	pk := Packer{Storage: store, Limit: 2, Cache: cache}
	first, err := pk.Pack(ctx, layers)
	if err != nil {
		t.Fatal(err)
	}
	if len(first) != 3 || len(cache.packed) != 3 {
		t.Fatalf("%d layers returned, %d packed; want 3 and 3", len(first), len(cache.packed))
	}
	for i, l := range first {
		if _, err := store.Stat(ctx, l.Digest); err != nil {
			t.Errorf("layer %d (%s) not stored: %v", i, layers[i].CreatedBy, err)
		}
		alone, err := (&Packer{Storage: store}).Pack(ctx, layers[i:i+1])
		if err != nil || alone[0] != l {
			t.Errorf("layer %d is %v, packed alone %v (%v)", i, l, alone, err)
		}
	}

	// Packed again with one more layer: only that one is packed, and the
	// cached ones come back as they were.
	cache.packed = nil
	again, err := pk.Pack(ctx, append(layers, fileLayer("new", "d")))
	if err != nil {
		t.Fatal(err)
	}
	if len(cache.packed) != 1 || !slices.Equal(again[:3], first) {
		t.Errorf("second pack: %d packed, layers %v; want 1 and %v", len(cache.packed), again[:3], first)
	}

}

// A layer that cannot be listed fails the pack, naming the layer.
func TestPackerNamesTheFailingLayer(t *testing.T) {
	store, err := storage.NewFilesystem(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	broken := Layer{Kind: "test", CreatedBy: "the broken one", List: func() (int64, func(*tar.Writer) error, error) {
		return 0, nil, errors.New("unreadable")
	}}
	_, err = (&Packer{Storage: store}).Pack(context.Background(), []Layer{fileLayer("fine", "x"), broken})
	if err == nil || !strings.Contains(err.Error(), "the broken one") {
		t.Errorf("pack with a broken layer: %v", err)
	}
}
