package storage

// The bucket adapter: the blob semantics of both bucket backends, written
// once over the few calls in which GCS and S3 really differ (as CNCF
// distribution's registry/storage/driver/base is written once over its
// drivers). s3.go and gcs.go implement bucket; everything a Backend
// promises (keys, verified commits, bounded objects, timeouts that become
// ErrUnavailable, redirects, leftovers) is here and in remote.go.

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/opencontainers/go-digest"
)

// bucket is what one storage service offers: the primitive calls the
// adapter needs. Keys are whole (the prefix included).
//
// stat, get and delete return the service's errors as they are; the
// adapter bounds them with its timeout and classifies them. put, list and
// the uploads time themselves (each SDK needs its own kind of watch: a
// progress-driven body on S3, a retry loop and a stream on GCS, pages
// behind a paginator or an iterator) and return errors already
// classified (classify, watchdog.check).
type bucket interface {
	// put writes data to key in one request: the object appears whole or
	// not at all. With ifAbsent it writes only if key does not exist, and
	// fails with an error wrapping ErrExists if it does. what names the
	// call in errors.
	put(ctx context.Context, what, key string, data []byte, ifAbsent bool) error
	// get opens key from offset to its end; size is the length of body.
	get(ctx context.Context, key string, offset int64) (body io.ReadCloser, size int64, err error)
	// stat returns the size of key.
	stat(ctx context.Context, key string) (int64, error)
	// list calls fn for every object under prefix, each page within the
	// backend's timeout. An error from fn stops the listing.
	list(ctx context.Context, prefix string, fn func(key string, size int64, modTime time.Time) error) error
	// delete removes key.
	delete(ctx context.Context, key string) error
	// startUpload starts a streamed upload to the temporary key.
	startUpload(ctx context.Context, key string) (upload, error)
	// signedURL returns a URL a client may GET key from for ttl.
	signedURL(ctx context.Context, key string, ttl time.Duration) (string, error)
	// abortUploads ends the service's unfinished uploads (not objects:
	// invisible to list) started before cutoff and returns how many.
	abortUploads(ctx context.Context, cutoff time.Time) (int, error)
	// String names the bucket and its location for logs.
	String() string
}

// upload is a streamed upload under a temporary key.
type upload interface {
	write(p []byte) error
	// finish completes the temporary object, still invisible under any
	// digest, and returns the size the service stored.
	finish() (int64, error)
	// publish copies the finished temporary object, exactly the content
	// this upload stored, to key, server side.
	publish(key string) error
	// discard aborts the upload or deletes the temporary object, best
	// effort: leftovers are removed by DeleteTemporaries.
	discard()
}

var (
	_ bucket     = (*s3Bucket)(nil)
	_ bucket     = (*gcsBucket)(nil)
	_ Backend    = (*S3)(nil)
	_ Redirector = (*S3)(nil)
	_ Backend    = (*GCS)(nil)
	_ Redirector = (*GCS)(nil)
)

// bucketStore implements Backend and Redirector over a bucket. S3 and GCS
// embed it.
type bucketStore struct {
	bucket          bucket
	prefix          string
	timeout         time.Duration
	redirectTTL     time.Duration
	partSize        int
	disableRedirect bool
}

// setDefaults fills in the zero settings both bucket configurations share.
func setDefaults(prefix *string, timeout, transfer, ttl *time.Duration, partSize *int) {
	if *prefix != "" && !strings.HasSuffix(*prefix, "/") {
		*prefix += "/"
	}
	if *timeout <= 0 {
		*timeout = DefaultTimeout
	}
	if *transfer <= 0 {
		*transfer = DefaultTransferTimeout
	}
	if *ttl <= 0 {
		*ttl = DefaultRedirectTTL
	}
	if *partSize <= 0 {
		*partSize = DefaultPartSize
	}
}

func (s *bucketStore) String() string { return s.bucket.String() }

func (s *bucketStore) Create(ctx context.Context) (Writer, error) {
	return newRemoteWriter(ctx, s), nil
}

func (s *bucketStore) Stat(ctx context.Context, d digest.Digest) (int64, error) {
	key, err := blobKey(s.prefix, d)
	if err != nil {
		return 0, err
	}
	return withTimeout(ctx, s.timeout, "stat "+d.String(), func(ctx context.Context) (int64, error) {
		return s.bucket.stat(ctx, key)
	})
}

// Open answers from the first GET, which also tells the size; the Reader
// opens further ranged GETs only after a Seek.
func (s *bucketStore) Open(ctx context.Context, d digest.Digest) (Reader, error) {
	key, err := blobKey(s.prefix, d)
	if err != nil {
		return nil, err
	}
	what := "read " + d.String()
	rctx, wd := newWatchdog(ctx)
	wd.arm(s.timeout)
	body, size, err := s.bucket.get(rctx, key, 0)
	wd.disarm()
	if err != nil {
		wd.close()
		return nil, wd.check(what, s.timeout, classify(ctx, what, err))
	}
	return newRemoteReader(rctx, wd, what, s.timeout, size, body,
		func(ctx context.Context, offset int64) (io.ReadCloser, error) {
			body, _, err := s.bucket.get(ctx, key, offset)
			return body, err
		}), nil
}

func (s *bucketStore) GetObject(ctx context.Context, name string) ([]byte, error) {
	key, err := objectKey(s.prefix, name)
	if err != nil {
		return nil, err
	}
	return withTimeout(ctx, s.timeout, "object "+name, func(ctx context.Context) ([]byte, error) {
		body, size, err := s.bucket.get(ctx, key, 0)
		if err != nil {
			return nil, err
		}
		defer body.Close()
		return readObject(name, size, body)
	})
}

// PutObject writes the object in one request, which both services apply
// atomically: readers see the old content or the new.
func (s *bucketStore) PutObject(ctx context.Context, name string, data []byte) error {
	return s.putObject(ctx, "put object ", name, data, false)
}

// CreateObject creates the object only if it does not exist: one
// conditional request (S3 If-None-Match: *, GCS ifGenerationMatch=0).
func (s *bucketStore) CreateObject(ctx context.Context, name string, data []byte) error {
	return s.putObject(ctx, "create object ", name, data, true)
}

func (s *bucketStore) putObject(ctx context.Context, what, name string, data []byte, ifAbsent bool) error {
	key, err := objectKey(s.prefix, name)
	if err != nil {
		return err
	}
	if err := checkObjectSize(name, data); err != nil {
		return err
	}
	return s.bucket.put(ctx, what+name, key, data, ifAbsent)
}

// putBlob uploads a whole (small) blob straight to its digest's key in one
// request: the object appears whole or not at all.
func (s *bucketStore) putBlob(ctx context.Context, d digest.Digest, data []byte) error {
	key, err := blobKey(s.prefix, d)
	if err != nil {
		return err
	}
	return s.bucket.put(ctx, "write "+d.String(), key, data, false)
}

// RedirectURL returns a URL valid for RedirectTTL (presigned on S3;
// signed or plain on GCS, see GCSConfig.SigningAccount).
func (s *bucketStore) RedirectURL(ctx context.Context, d digest.Digest) (string, error) {
	if s.disableRedirect {
		return "", ErrNoRedirect
	}
	key, err := blobKey(s.prefix, d)
	if err != nil {
		return "", err
	}
	return s.bucket.signedURL(ctx, key, s.redirectTTL)
}

func (s *bucketStore) ListBlobs(ctx context.Context, fn func(d digest.Digest, size int64, modTime time.Time) error) error {
	return s.bucket.list(ctx, s.prefix+blobsDir, func(key string, size int64, mod time.Time) error {
		d, ok := digestFromKey(s.prefix, key)
		if !ok {
			return nil
		}
		return fn(d, size, mod)
	})
}

func (s *bucketStore) ListObjects(ctx context.Context, prefix string, fn func(name string, modTime time.Time) error) error {
	base := s.prefix + objectsDir
	return s.bucket.list(ctx, base+prefix, func(key string, _ int64, mod time.Time) error {
		name := strings.TrimPrefix(key, base)
		if !ValidObjectName(name) {
			return nil
		}
		return fn(name, mod)
	})
}

func (s *bucketStore) DeleteBlob(ctx context.Context, d digest.Digest) error {
	key, err := blobKey(s.prefix, d)
	if err != nil {
		return err
	}
	return s.delete(ctx, key)
}

func (s *bucketStore) DeleteObject(ctx context.Context, name string) error {
	key, err := objectKey(s.prefix, name)
	if err != nil {
		return err
	}
	return s.delete(ctx, key)
}

func (s *bucketStore) delete(ctx context.Context, key string) error {
	_, err := withTimeout(ctx, s.timeout, "delete "+key, func(ctx context.Context) (struct{}, error) {
		return struct{}{}, s.bucket.delete(ctx, key)
	})
	if errors.Is(err, ErrNotFound) {
		return nil
	}
	return err
}

// DeleteTemporaries ends the service's unfinished uploads started before
// cutoff (S3's multipart uploads; GCS shows none) and deletes the
// temporary objects written before cutoff, by the service's clock. A
// temporary object exists only between the end of a large upload and its
// publication, so one older than the cutoff was left by a process that
// died or lost the service in between.
func (s *bucketStore) DeleteTemporaries(ctx context.Context, cutoff time.Time) (int, error) {
	removed, err := s.bucket.abortUploads(ctx, cutoff)
	if err != nil {
		return removed, err
	}
	var stale []string
	err = s.bucket.list(ctx, s.prefix+tmpDir, func(key string, _ int64, mod time.Time) error {
		if mod.Before(cutoff) {
			stale = append(stale, key)
		}
		return nil
	})
	if err != nil {
		return removed, err
	}
	for _, key := range stale {
		if err := s.delete(ctx, key); err != nil {
			return removed, err
		}
		removed++
	}
	return removed, nil
}

// publishUpload completes a streamed upload and publishes it under d once
// the service is seen to hold as many bytes as were written.
func (s *bucketStore) publishUpload(u upload, d digest.Digest, size int64) error {
	stored, err := u.finish()
	if err != nil {
		return err
	}
	if stored != size {
		return fmt.Errorf("storage: uploaded %d bytes but the service stored %d", size, stored)
	}
	key, err := blobKey(s.prefix, d)
	if err != nil {
		return err
	}
	return u.publish(key)
}
