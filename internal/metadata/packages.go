package metadata

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/nixery/nixery/internal/nix"
	"github.com/nixery/nixery/internal/storage"
)

// What a package name resolves to in a package set, so that a new image
// of packages resolved before needs no evaluation of the package set:
//
//	resolved/<key>   one name of one package set for one system
//
// (The objects keep their first name, resolved/, so that caches written
// by every version are read.)
//
// For a package set pinned for good (a commit, a locked flake) the answer
// never changes; for a moving one (a branch, a channel name, a directory)
// it holds for the cache time, as the manifest cache does.

const packagesPrefix = "resolved/"

// Package is what one package name stands for in a package set: the
// store paths it puts into images and its main programs, as an
// evaluation found them.
type Package struct {
	Outputs  []string  `json:"outputs"`  // store paths that go into images
	Programs []string  `json:"programs"` // its main programs (meta.mainProgram)
	At       time.Time `json:"at"`       // when it was resolved (local clock, for the cache time)
	// Meta is what its meta says, for SBOMs; nil in a resolution
	// recorded before Nixery read meta.
	Meta *nix.Meta `json:"meta,omitempty"`
}

// Fresh reports whether r may still be used at now: always for a package
// set pinned for good, else within ttl (as Entry.Fresh).
func (r Package) Fresh(immutable bool, ttl time.Duration, now time.Time) bool {
	return immutable || now.Sub(r.At) < ttl
}

func resolvedKey(identity, system, name string) string {
	return Key(map[string]any{"v": Version, "source": identity, "system": system, "name": name})
}

// Package returns what name resolved to in the package set identity
// for system, if an evaluation recorded it; ok=false if none did.
func (c *Store) Package(ctx context.Context, identity, system, name string) (r Package, ok bool, err error) {
	raw, err := c.Backend.GetObject(ctx, packagesPrefix+resolvedKey(identity, system, name))
	if errors.Is(err, storage.ErrNotFound) || errors.Is(err, storage.ErrTooLarge) {
		return r, false, nil
	}
	if err != nil {
		return r, false, fmt.Errorf("resolved packages: %w", err)
	}
	if json.Unmarshal(raw, &r) != nil || len(r.Outputs) == 0 {
		return Package{}, false, nil // unreadable: evaluated again, overwritten
	}
	for _, p := range append(append([]string(nil), r.Outputs...), r.Programs...) {
		if !strings.HasPrefix(p, "/nix/store/") {
			return Package{}, false, nil
		}
	}
	return r, true, nil
}

// PutPackage records what name resolved to.
func (c *Store) PutPackage(ctx context.Context, identity, system, name string, r Package) error {
	data, err := json.Marshal(r)
	if err != nil {
		return err
	}
	return c.Backend.PutObject(ctx, packagesPrefix+resolvedKey(identity, system, name), data)
}
