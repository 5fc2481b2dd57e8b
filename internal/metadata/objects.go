package metadata

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/nixery/nixery/internal/storage"
)

// What the garbage collector (package gc) asks of the metadata store. The
// collector works on kinds of objects and their keys; the names and the
// encodings stay here, so the metadata store remains the one package that
// spells an object name.

// Kind is a kind of named object, as the collector lists and deletes
// them: by key, never by name.
type Kind int

// The kinds of named objects the collector lists and deletes; the layout
// is in the package doc.
const (
	KindEntry      Kind = iota // manifests/<key>: manifest cache entries
	KindImageUse               // uses/images/<key>: use records of images
	KindDigestUse              // uses/digests/<hex>: use records of manifests pulled by digest; the key is the digest
	KindLayer                  // layers/<key>: layer cache entries
	KindDetails                // details/<key>: image details
	KindSearchList             // search/<key>: package lists
	KindPackage                // resolved/<key>: package resolutions
	KindLease                  // leases/<id>: build leases
	KindClaim                  // flights/…: fleet-wide build claims
	KindReferrers              // referrers/<hex>/<signer>: the artifacts of a manifest (ReferrersSubject)
)

var kindPrefixes = [...]string{
	KindEntry:      manifestsPrefix,
	KindImageUse:   imageUsesPrefix,
	KindDigestUse:  digestUsesPrefix,
	KindLayer:      layersPrefix,
	KindDetails:    detailsPrefix,
	KindSearchList: searchPrefix,
	KindPackage:    packagesPrefix,
	KindLease:      leasesPrefix,
	KindClaim:      claimsPrefix,
	KindReferrers:  referrersPrefix,
}

func (k Kind) String() string { return strings.TrimSuffix(kindPrefixes[k], "/") }

// The key of a digest use record is the digest it records; its name
// holds the digest's hex only.
const digestKeyPrefix = string(digest.SHA256) + ":"

// name is the object name of key of kind k: the inverse of what List
// reports.
func (k Kind) name(key string) string {
	if k == KindDigestUse {
		key = strings.TrimPrefix(key, digestKeyPrefix)
	}
	return kindPrefixes[k] + key
}

// List returns every object of kind k, by key, with the modification time
// the storage gave it (the storage's clock). Keys are returned as stored,
// valid or not; Delete takes them back.
func (c *Store) List(ctx context.Context, k Kind) (map[string]time.Time, error) {
	prefix := kindPrefixes[k]
	out := map[string]time.Time{}
	err := c.Backend.ListObjects(ctx, prefix, func(name string, mod time.Time) error {
		key := keyOf(name, prefix)
		if k == KindDigestUse {
			key = digestKeyPrefix + key
		}
		out[key] = mod
		return nil
	})
	return out, err
}

// Delete deletes the object of kind k and key (as List reports it);
// deleting one that is absent is not an error.
func (c *Store) Delete(ctx context.Context, k Kind, key string) error {
	return c.Backend.DeleteObject(ctx, k.name(key))
}

// ValidKey reports whether key is a cache key as Key makes them.
func ValidKey(key string) bool { return validKey(key) }

// LayerBlob reads which blob the layer cache entry of key names, without
// checking the blob (Layer does). readable is false for an entry that is
// too large, not JSON, or names no valid digest; d is what could be
// decoded even then. An entry that is gone is an error wrapping
// storage.ErrNotFound.
func (c *Store) LayerBlob(ctx context.Context, key string) (d digest.Digest, readable bool, err error) {
	raw, err := c.Backend.GetObject(ctx, layersPrefix+key)
	if err != nil && !errors.Is(err, storage.ErrTooLarge) {
		return "", false, err
	}
	var l struct{ Digest digest.Digest }
	unreadable := err != nil || json.Unmarshal(raw, &l) != nil || l.Digest.Validate() != nil
	return l.Digest, !unreadable, nil
}

// LeaseBlobs reads the blobs the build lease id holds (id as List
// reports it for KindLease). A lease that is gone is an error wrapping
// storage.ErrNotFound; one that is not JSON is an error too: Nixery
// writes every lease whole, so its blobs cannot be known.
func (c *Store) LeaseBlobs(ctx context.Context, id string) ([]digest.Digest, error) {
	raw, err := c.Backend.GetObject(ctx, leasesPrefix+id)
	if err != nil {
		return nil, err
	}
	var digests []digest.Digest
	if err := json.Unmarshal(raw, &digests); err != nil {
		return nil, fmt.Errorf("build lease %s is unreadable: %w", id, err)
	}
	return digests, nil
}

// CollectorLeaseHolder reads who holds the scheduled collector's lease
// (gc/lease); an error wrapping storage.ErrNotFound if nobody ever took it.
func (c *Store) CollectorLeaseHolder(ctx context.Context) (string, error) {
	held, err := c.Backend.GetObject(ctx, gcLeaseObject)
	return string(held), err
}

// PutCollectorLease writes the scheduled collector's lease for holder.
func (c *Store) PutCollectorLease(ctx context.Context, holder string) error {
	if err := c.Backend.PutObject(ctx, gcLeaseObject, []byte(holder)); err != nil {
		return fmt.Errorf("gc lease: %w", err)
	}
	return nil
}

// CollectorLeaseAge is how long ago the scheduled collector's lease was
// written, by the storage's clock: a probe (gc/clock) is written now and
// listed with the lease.
func (c *Store) CollectorLeaseAge(ctx context.Context) (time.Duration, error) {
	var leaseMod, now time.Time
	if err := c.Backend.PutObject(ctx, clockObject, nil); err != nil {
		return 0, err
	}
	err := c.Backend.ListObjects(ctx, "gc/", func(name string, mod time.Time) error {
		switch name {
		case gcLeaseObject:
			leaseMod = mod
		case clockObject:
			now = mod
		}
		return nil
	})
	if err != nil {
		return 0, err
	}
	return now.Sub(leaseMod), nil
}

// StorageClock reads the storage's clock: the modification time the
// storage gives a probe object (gc/clock) written now. Every age the
// collector judges is read on it, one clock for every replica.
func (c *Store) StorageClock(ctx context.Context) (time.Time, error) {
	if err := c.Backend.PutObject(ctx, clockObject, nil); err != nil {
		return time.Time{}, err
	}
	var t time.Time
	err := c.Backend.ListObjects(ctx, clockObject, func(name string, mod time.Time) error {
		if name == clockObject {
			t = mod
		}
		return nil
	})
	if err == nil && t.IsZero() {
		err = errors.New("the storage's clock probe was not listed")
	}
	return t, err
}

// DeleteAbandonedUploads removes the uploads that nothing has written to
// for storage.AbandonedAfter, judged on the storage's clock as the
// collector judges every age: a server whose own clock runs ahead must not
// take a replica's upload in progress for abandoned.
func (c *Store) DeleteAbandonedUploads(ctx context.Context) (int, error) {
	now, err := c.StorageClock(ctx)
	if err != nil {
		return 0, fmt.Errorf("reading the storage's clock: %w", err)
	}
	return c.Backend.DeleteTemporaries(ctx, now.Add(-storage.AbandonedAfter))
}
