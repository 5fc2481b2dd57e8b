package metadata

import (
	"context"
	"encoding/json"
	"errors"
	"slices"
	"sync"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/nixery/nixery/internal/nix"
	"github.com/nixery/nixery/internal/storage"
)

// Details describe a built image for people and for its SBOMs and
// provenance (package attest): what is in it, where it comes from and how
// it is layered. They are stored beside the manifest cache entry and
// collected with it.
//
// Details stored before SBOMs existed lack SourceType, SourceName,
// SourceURI, PackageMeta and the closure's NAR hashes and references; they read as
// empty.
type Details struct {
	Name        string                   `json:"name"`
	Tag         string                   `json:"tag"`
	Packages    []string                 `json:"packages"`
	Arch        string                   `json:"arch"`
	Source      string                   `json:"source"`               // the package set's identity
	SourceType  string                   `json:"sourceType,omitempty"` // "path", "nixpkgs", "git" or "flake"
	SourceName  string                   `json:"sourceName,omitempty"` // the package source for people, without credentials
	SourceURI   string                   `json:"sourceURI,omitempty"`  // where it comes from, without credentials (source.Resolved.URI)
	Revision    string                   `json:"revision"`             // resolved revision, if any
	Built       time.Time                `json:"built"`
	Roots       []string                 `json:"roots"`   // store paths of the requested packages
	Closure     []PathInfo               `json:"closure"` // sorted by path
	Layers      []LayerInfo              `json:"layers"`  // in manifest order
	Manifests   map[string]digest.Digest `json:"manifests"`
	PackageMeta []PackageInfo            `json:"packageMeta,omitempty"` // each requested package, in request order
}

// PathInfo is one store path of an image's closure.
type PathInfo struct {
	Path       string   `json:"path"`
	Size       int64    `json:"size"`                 // NAR size
	NarHash    string   `json:"narHash,omitempty"`    // SHA-256 of the NAR, "sha256:<hex>" (nix.StorePath)
	References []string `json:"references,omitempty"` // store paths it refers to, sorted, without itself
}

// PackageInfo is one requested package: the name it was requested by,
// its output paths in the image and what its meta says (any of which may
// be empty: nix.Meta).
type PackageInfo struct {
	Name    string   `json:"name"`
	Outputs []string `json:"outputs"`
	nix.Meta
}

// LayerInfo is one layer of an image.
type LayerInfo struct {
	Digest digest.Digest `json:"digest"`
	Size   int64         `json:"size"`            // compressed
	Paths  []string      `json:"paths,omitempty"` // store paths; none for the customisation layer
}

// Details reads the details of the image of key; an error wrapping
// storage.ErrNotFound if there are none.
func (c *Store) Details(ctx context.Context, key string) (*Details, error) {
	name, err := keyed(detailsPrefix, key)
	if err != nil {
		return nil, err
	}
	raw, err := c.Backend.GetObject(ctx, name)
	if err != nil {
		return nil, err
	}
	var d Details
	if err := json.Unmarshal(raw, &d); err != nil {
		return nil, err
	}
	return &d, nil
}

// PutDetails stores the details of a freshly built image and puts it first
// in the recent images.
func (c *Store) PutDetails(ctx context.Context, key string, d *Details) error {
	name, err := keyed(detailsPrefix, key)
	if err != nil {
		return err
	}
	data, err := json.Marshal(d)
	if err != nil {
		return err
	}
	if err := c.Backend.PutObject(ctx, name, data); err != nil {
		return err
	}
	c.recent.add(d)
	return c.pushRecent(ctx, key)
}

// keepRecent is how many images the recent list holds.
const keepRecent = 50

// pushRecent puts key first in the stored list of recent images.
// Replicas may race on it; the loser's entry is dropped, which is
// harmless for a list of examples.
func (c *Store) pushRecent(ctx context.Context, key string) error {
	keys, err := c.storedRecent(ctx)
	if err != nil {
		return err
	}
	keys = append([]string{key}, slices.DeleteFunc(keys, func(k string) bool { return k == key })...)
	if len(keys) > keepRecent {
		keys = keys[:keepRecent]
	}
	data, err := json.Marshal(keys)
	if err != nil {
		return err
	}
	return c.Backend.PutObject(ctx, recentObject, data)
}

func (c *Store) storedRecent(ctx context.Context) ([]string, error) {
	raw, err := c.Backend.GetObject(ctx, recentObject)
	if errors.Is(err, storage.ErrNotFound) || errors.Is(err, storage.ErrTooLarge) {
		return nil, nil // unreadable: start a new list
	}
	if err != nil {
		return nil, err
	}
	var keys []string
	if json.Unmarshal(raw, &keys) != nil {
		return nil, nil // unreadable: start a new list
	}
	return slices.DeleteFunc(keys, func(k string) bool { return !validKey(k) }), nil
}

// recentRefresh is how often Recent re-reads the stored list, to show
// images that other replicas (or an earlier process) built.
const recentRefresh = 30 * time.Second

// recentCache is the in-memory copy of the recent images.
type recentCache struct {
	mu     sync.Mutex
	images []*Details
	loaded time.Time // when the stored list was last read
}

func (r *recentCache) add(d *Details) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.images = slices.DeleteFunc(r.images, func(o *Details) bool { return sameImage(o, d) })
	r.images = append([]*Details{d}, r.images...)
	if len(r.images) > keepRecent {
		r.images = r.images[:keepRecent]
	}
}

func sameImage(a, b *Details) bool {
	for mt, d := range a.Manifests {
		if b.Manifests[mt] == d {
			return true
		}
	}
	return false
}

// Recent returns the images built most recently (by any process sharing
// the storage), newest first. The stored list is re-read at most every
// recentRefresh; images collected meanwhile drop out.
func (c *Store) Recent(ctx context.Context) []*Details {
	r := &c.recent
	r.mu.Lock()
	stale := c.now().Sub(r.loaded) > recentRefresh
	if stale {
		r.loaded = c.now() // one reader refreshes; the others use the old list
	}
	r.mu.Unlock()
	if stale {
		if err := c.loadRecent(ctx); err != nil {
			c.logger().Warn("recent images not loaded", "err", err)
		}
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.images)
}

// loadRecent replaces the in-memory list with the stored one.
func (c *Store) loadRecent(ctx context.Context) error {
	keys, err := c.storedRecent(ctx)
	if err != nil {
		return err
	}
	var images []*Details
	for _, key := range keys {
		if d, err := c.Details(ctx, key); err == nil {
			images = append(images, d)
		}
	}
	c.recent.mu.Lock()
	defer c.recent.mu.Unlock()
	c.recent.images = images
	return nil
}
