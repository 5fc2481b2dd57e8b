package builder

import (
	"context"
	"encoding/json"
	"errors"
	"slices"
	"sync"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/nixery/nixery/config"
	"github.com/nixery/nixery/image"
	"github.com/nixery/nixery/manifest"
	"github.com/nixery/nixery/nix"
	"github.com/nixery/nixery/storage"
)

// ErrNotBuilt is returned by Details for an image that has not been built
// (or whose cache entry expired).
var ErrNotBuilt = errors.New("image not built yet")

// Details describe a built image for people: what is in it and how it is
// layered. They are stored beside the manifest cache entry
// (objects/details/<key>).
type Details struct {
	Name      string                   `json:"name"`
	Tag       string                   `json:"tag"`
	Packages  []string                 `json:"packages"`
	Arch      string                   `json:"arch"`
	Source    string                   `json:"source"`   // the package set's identity
	Revision  string                   `json:"revision"` // resolved revision, if any
	Built     time.Time                `json:"built"`
	Roots     []string                 `json:"roots"`   // store paths of the requested packages
	Closure   []PathInfo               `json:"closure"` // sorted by path
	Layers    []LayerInfo              `json:"layers"`  // in manifest order
	Manifests map[string]digest.Digest `json:"manifests"`
}

// PathInfo is one store path of an image's closure.
type PathInfo struct {
	Path string `json:"path"`
	Size int64  `json:"size"` // NAR size
}

// LayerInfo is one layer of an image.
type LayerInfo struct {
	Digest digest.Digest `json:"digest"`
	Size   int64         `json:"size"`            // compressed
	Paths  []string      `json:"paths,omitempty"` // store paths; none for the customisation layer
}

// remember stores the details of a freshly built image and adds it to
// the recent images. Failures are logged, never fatal: the image is built.
// packed are the layers of the OCI manifest: groups, then the
// customisation layer.
func (b *Builder) remember(ctx context.Context, key string, req *image.Request, src config.Resolved, res *nix.Result, groups [][]string, packed []manifest.Layer, img *Image) {
	d := &Details{
		Name: req.Name, Tag: req.Tag, Packages: req.Packages, Arch: req.Arch.OCI,
		Source: src.Identity, Revision: src.Revision, Built: time.Now().UTC(),
		Roots: res.Roots, Manifests: map[string]digest.Digest{},
	}
	for _, p := range res.Closure {
		d.Closure = append(d.Closure, PathInfo{Path: p.Path, Size: p.NarSize})
	}
	for mt, m := range img.Manifests {
		d.Manifests[mt] = m.Digest
	}
	for i, l := range packed {
		li := LayerInfo{Digest: l.Digest, Size: l.Size}
		if i < len(groups) {
			li.Paths = groups[i]
		}
		d.Layers = append(d.Layers, li)
	}
	data, err := json.Marshal(d)
	if err == nil {
		err = b.Storage.PutObject(ctx, "details/"+key, data)
	}
	if err != nil {
		b.logger().Warn("image details not stored", "image", req.Name, "err", err)
	}
	b.recent.add(d)
	if err := b.recordRecent(ctx, key); err != nil {
		b.logger().Warn("recent images not stored", "err", err)
	}
}

// recentObject lists the keys of the images built last, newest first, so
// that the index page's list survives restarts and is shared by replicas.
const recentObject = "recent/images"

// recordRecent puts key first in the stored list of recent images.
// Replicas may race on it; the loser's entry is dropped, which is
// harmless for a list of examples.
func (b *Builder) recordRecent(ctx context.Context, key string) error {
	keys, err := b.storedRecent(ctx)
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
	return b.Storage.PutObject(ctx, recentObject, data)
}

func (b *Builder) storedRecent(ctx context.Context) ([]string, error) {
	raw, err := b.Storage.GetObject(ctx, recentObject)
	if errors.Is(err, storage.ErrNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var keys []string
	if json.Unmarshal(raw, &keys) != nil {
		return nil, nil // unreadable: start a new list
	}
	return keys, nil
}

// recentRefresh is how often Recent re-reads the stored list, to show
// images that other replicas (or an earlier process) built.
const recentRefresh = 30 * time.Second

// loadRecent replaces the in-memory list with the stored one.
func (b *Builder) loadRecent(ctx context.Context) error {
	keys, err := b.storedRecent(ctx)
	if err != nil {
		return err
	}
	var images []*Details
	for _, key := range keys {
		raw, err := b.Storage.GetObject(ctx, "details/"+key)
		if err != nil {
			continue // collected meanwhile
		}
		var d Details
		if json.Unmarshal(raw, &d) == nil {
			images = append(images, &d)
		}
	}
	b.recent.mu.Lock()
	defer b.recent.mu.Unlock()
	b.recent.images, b.recent.loaded = images, time.Now()
	return nil
}

// Details returns the details of the image req selects, or ErrNotBuilt.
func (b *Builder) Details(ctx context.Context, req *image.Request) (*Details, error) {
	_, key, err := b.resolve(ctx, req)
	if err != nil {
		return nil, err
	}
	if _, _, ok, err := b.cachedManifest(ctx, key, manifest.OCIManifest); err != nil {
		return nil, err
	} else if !ok {
		return nil, ErrNotBuilt
	}
	raw, err := b.Storage.GetObject(ctx, "details/"+key)
	if errors.Is(err, storage.ErrNotFound) {
		return nil, ErrNotBuilt
	}
	if err != nil {
		return nil, err
	}
	var d Details
	if err := json.Unmarshal(raw, &d); err != nil {
		return nil, err
	}
	// The name and tag asked for, which may differ from the first ones
	// that built this image (package order, case).
	d.Name, d.Tag = req.Name, req.Tag
	return &d, nil
}

// Recent returns the images built most recently (by any process sharing
// the storage), newest first.
func (b *Builder) Recent() []*Details {
	b.recent.mu.Lock()
	stale := time.Since(b.recent.loaded) > recentRefresh
	b.recent.mu.Unlock()
	if stale {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := b.loadRecent(ctx); err != nil {
			b.logger().Warn("recent images not loaded", "err", err)
			b.recent.mu.Lock()
			b.recent.loaded = time.Now() // retry after recentRefresh
			b.recent.mu.Unlock()
		}
	}
	return b.recent.list()
}

// recentList keeps the last few built images.
type recentList struct {
	mu     sync.Mutex
	images []*Details
	loaded time.Time // when the stored list was last read
}

const keepRecent = 50

func (r *recentList) add(d *Details) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.images = slices.DeleteFunc(r.images, func(o *Details) bool {
		return o.Manifests[manifest.OCIManifest] == d.Manifests[manifest.OCIManifest]
	})
	r.images = append([]*Details{d}, r.images...)
	if len(r.images) > keepRecent {
		r.images = r.images[:keepRecent]
	}
}

func (r *recentList) list() []*Details {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.images)
}

// PhaseStat is the count and total time of one build phase.
type PhaseStat struct {
	Count   int64
	Seconds float64
}

// phaseStats accumulates the time of each build phase.
type phaseStats struct {
	mu     sync.Mutex
	phases map[string]*PhaseStat
}

func (b *Builder) observePhase(name string, d time.Duration) {
	s := &b.phases
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.phases == nil {
		s.phases = map[string]*PhaseStat{}
	}
	ps := s.phases[name]
	if ps == nil {
		ps = &PhaseStat{}
		s.phases[name] = ps
	}
	ps.Count++
	ps.Seconds += d.Seconds()
}

// PhaseStats returns the count and total seconds of each build phase.
func (b *Builder) PhaseStats() map[string]PhaseStat {
	s := &b.phases
	s.mu.Lock()
	defer s.mu.Unlock()
	out := map[string]PhaseStat{}
	for k, v := range s.phases {
		out[k] = *v
	}
	return out
}
