// Package storage keeps blobs (layers, configs, manifests) under their
// sha256 digest.
//
// A Backend is what every backend can do: write a new blob, open one, ask
// its size; read, write and create named objects; list and delete for
// garbage collection. The one optional ability, redirecting clients to a
// URL, is a separate interface discovered by type assertion, as in
// go-containerregistry's registry.
//
// Every write goes to a temporary name first; Commit verifies the digest
// of what was written and only then makes it visible under that digest, so
// a crash or an error never leaves a partial blob under a real name.
//
// Three backends live here: Filesystem (the default, one machine,
// filesystem.go), GCS and S3 (buckets shared by replicas). The bucket
// backends are one adapter (bucket.go, remote.go) over the few calls in
// which the two services differ (gcs.go, s3.go). docs/storage.md
// describes their configuration, the atomicity argument and the timeouts.
package storage

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"regexp"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/nixery/nixery/internal/fault"
)

// ErrNotFound is returned (wrapped) for a blob that does not exist.
var ErrNotFound = errors.New("blob not found")

// ErrUnavailable is returned (wrapped, together with the cause) when the
// storage service cannot be reached, times out or answers with a server
// error (5xx, or 429 "slow down"). The request may succeed later: the
// registry answers such errors with a retryable 503.
var ErrUnavailable = fault.New("storage unavailable", fault.Fault{Kind: fault.Unavailable, RetryAfter: 5 * time.Second})

// MaxObjectSize bounds a named object: PutObject and CreateObject refuse
// larger ones and GetObject refuses to read them (ErrTooLarge), so one
// broken or hostile object cannot exhaust a process's memory. Nixery's
// largest objects are package lists for the web search (a few MiB
// compressed for all of nixpkgs); cache entries and leases are far
// smaller.
const MaxObjectSize = 32 << 20

// ErrTooLarge is returned (wrapped) for a named object over MaxObjectSize.
var ErrTooLarge = errors.New("object too large")

// checkObjectSize refuses to write an object that could not be read back.
func checkObjectSize(name string, data []byte) error {
	if len(data) > MaxObjectSize {
		return fmt.Errorf("object %s: %d bytes: %w (at most %d)", name, len(data), ErrTooLarge, MaxObjectSize)
	}
	return nil
}

// readObject reads an object of size bytes (-1: unknown) from r, at most
// MaxObjectSize bytes of it.
func readObject(name string, size int64, r io.Reader) ([]byte, error) {
	tooLarge := fmt.Errorf("object %s: %w (over %d bytes)", name, ErrTooLarge, MaxObjectSize)
	if size > MaxObjectSize {
		return nil, tooLarge
	}
	data, err := io.ReadAll(io.LimitReader(r, MaxObjectSize+1))
	if err != nil {
		return nil, err
	}
	if len(data) > MaxObjectSize {
		return nil, tooLarge
	}
	return data, nil
}

// ErrExists is returned (wrapped) by Backend.CreateObject for a name that
// exists already.
var ErrExists = errors.New("object exists")

// ErrNoRedirect is returned by a Redirector that is configured to serve
// blobs through Nixery rather than redirecting clients.
var ErrNoRedirect = errors.New("blob redirects disabled")

// Backend stores content-addressed blobs and small named objects.
//
// Listing order is unspecified. Listing while others write is safe: a
// blob or object written meanwhile may or may not be reported. Deleting
// something that does not exist is not an error (two collectors may race).
type Backend interface {
	// Create starts writing a new blob.
	Create(ctx context.Context) (Writer, error)
	// Open opens the blob with digest d for reading; ErrNotFound if absent.
	Open(ctx context.Context, d digest.Digest) (Reader, error)
	// Stat returns the size of the blob with digest d; ErrNotFound if absent.
	Stat(ctx context.Context, d digest.Digest) (int64, error)
	// GetObject reads a small named object (a cache entry); ErrNotFound
	// if absent, ErrTooLarge if over MaxObjectSize. Names are relative
	// slash-separated paths such as "manifests/<key>" (see
	// ValidObjectName).
	GetObject(ctx context.Context, name string) ([]byte, error)
	// PutObject creates or replaces a named object atomically: a reader
	// sees the old content or the new, never a mix. Data over
	// MaxObjectSize is refused (ErrTooLarge).
	PutObject(ctx context.Context, name string, data []byte) error
	// CreateObject creates the object with data only if it does not
	// exist, atomically (the filesystem by an exclusive link, S3 by
	// If-None-Match: *, GCS by ifGenerationMatch=0), or fails with an
	// error wrapping ErrExists (possibly because an earlier attempt of
	// the same call succeeded: callers write content they can recognise
	// as their own). Replicas coordinate through it (build claims).
	CreateObject(ctx context.Context, name string, data []byte) error

	// ListBlobs calls fn for every committed blob with its size and the
	// time it was last written. An error from fn stops the listing and
	// is returned.
	ListBlobs(ctx context.Context, fn func(d digest.Digest, size int64, modTime time.Time) error) error
	// ListObjects calls fn for every named object whose name starts
	// with prefix ("" for all), with the time it was last written.
	ListObjects(ctx context.Context, prefix string, fn func(name string, modTime time.Time) error) error
	// DeleteBlob removes blob d.
	DeleteBlob(ctx context.Context, d digest.Digest) error
	// DeleteObject removes the named object.
	DeleteObject(ctx context.Context, name string) error
	// DeleteTemporaries removes uploads abandoned before cutoff (by a
	// process that crashed or lost its storage mid-write) and returns how
	// many it removed. Uploads younger than cutoff may still be in progress
	// in another replica and are left alone; see AbandonedAfter. It is the
	// only call that removes temporaries: opening a backend changes
	// nothing.
	DeleteTemporaries(ctx context.Context, cutoff time.Time) (int, error)

	// String names the backend and its location for logs.
	String() string
}

var objectNameRE = regexp.MustCompile(`^[a-z0-9][a-z0-9._-]*(/[a-z0-9][a-z0-9._-]*)*$`)

// ValidObjectName reports whether name can name an object: lower-case
// letters, digits, '.', '_' and '-' in slash-separated parts that do not
// start with a dot, so no name can escape its backend's object area.
func ValidObjectName(name string) bool {
	return len(name) <= 512 && objectNameRE.MatchString(name)
}

// Redirector is implemented by backends whose blobs clients can download
// directly (a bucket). RedirectURL does not check that the blob exists:
// callers Stat it first (they need its size for the headers anyway).
type Redirector interface {
	// RedirectURL returns a URL the client may GET the blob from, valid
	// for a short while (see each backend's RedirectTTL), or an error
	// wrapping ErrNoRedirect if redirects are disabled.
	RedirectURL(ctx context.Context, d digest.Digest) (string, error)
}

// RedirectURL returns where to redirect a client for blob d, or ok=false
// if b serves blobs only through Nixery (no Redirector, or redirects
// disabled in its configuration).
func RedirectURL(ctx context.Context, b Backend, d digest.Digest) (url string, ok bool, err error) {
	r, isRedirector := b.(Redirector)
	if !isRedirector {
		return "", false, nil
	}
	url, err = r.RedirectURL(ctx, d)
	if errors.Is(err, ErrNoRedirect) {
		return "", false, nil
	}
	if err != nil {
		return "", false, err
	}
	return url, true, nil
}

// AbandonedAfter is how long a temporary upload may go without progress
// before DeleteTemporaries may remove it: one day, far longer than any
// upload takes (a layer of several GB streams in minutes), so the uploads
// of a live process on the same storage — another replica, a running
// server beside `nixery gc` or `nixery build --local` — are never touched.
// Callers pass the storage's own clock minus AbandonedAfter as the cutoff
// (metadata.DeleteAbandonedUploads): `nixery serve` once at start-up and
// garbage collection on every run.
const AbandonedAfter = 24 * time.Hour

// Writer receives the bytes of a new blob.
type Writer interface {
	io.Writer
	// Commit checks that what was written has digest d and makes it
	// readable under d. If a blob with digest d exists already, the new
	// copy is dropped. After Commit the Writer is closed.
	Commit(d digest.Digest) error
	// Cancel discards what was written. Safe to call after Commit.
	Cancel() error
}

// Reader reads one blob; Seek makes Range requests cheap.
type Reader interface {
	io.ReadSeekCloser
	Size() int64
}

// Put stores data and returns its digest.
func Put(ctx context.Context, b Backend, data []byte) (digest.Digest, error) {
	d := digest.FromBytes(data)
	w, err := b.Create(ctx)
	if err != nil {
		return "", err
	}
	if _, err := io.Copy(w, bytes.NewReader(data)); err != nil {
		w.Cancel()
		return "", err
	}
	return d, w.Commit(d)
}

// Get reads a whole (small) blob.
func Get(ctx context.Context, b Backend, d digest.Digest) ([]byte, error) {
	r, err := b.Open(ctx, d)
	if err != nil {
		return nil, err
	}
	defer r.Close()
	return io.ReadAll(r)
}
