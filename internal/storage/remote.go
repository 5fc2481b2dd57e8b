package storage

// The parts of the bucket adapter (bucket.go) that GCS and S3 both use:
// the layout of keys, the write path that keeps half-written blobs
// invisible, a seekable reader made of ranged GETs, timeouts and the
// mapping of errors to ErrNotFound and ErrUnavailable.

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"net"
	"strings"
	"sync/atomic"
	"time"

	gcs "cloud.google.com/go/storage"
	"github.com/opencontainers/go-digest"
	"google.golang.org/api/googleapi"
)

// Defaults shared by the bucket backends; docs/storage.md explains them.
const (
	// DefaultTimeout bounds each metadata request (stat, small objects,
	// listing pages, deletes) and each wait for progress while data moves.
	DefaultTimeout = 10 * time.Second
	// DefaultTransferTimeout bounds server-side copies and, for GCS, each
	// call into the upload stream.
	DefaultTransferTimeout = 5 * time.Minute
	// DefaultRedirectTTL is how long a signed or presigned URL is valid.
	DefaultRedirectTTL = 10 * time.Minute
	// DefaultPartSize is both the largest blob uploaded in one request
	// (straight to its digest's key) and the size of the chunks of larger
	// uploads, so one upload holds at most this much memory.
	DefaultPartSize = 8 << 20
	// retryAttempts is how often a failed request is tried in all, with
	// jittered backoff of at most one second between tries.
	retryAttempts   = 3
	retryMaxBackoff = time.Second
)

// Keys inside a bucket, below the configured prefix. They mirror the
// filesystem backend's directories.
const (
	blobsDir   = "blobs/sha256/"
	objectsDir = "objects/"
	tmpDir     = "tmp/"
)

func blobKey(prefix string, d digest.Digest) (string, error) {
	if err := checkDigest(d); err != nil {
		return "", err
	}
	return prefix + blobsDir + d.Encoded(), nil
}

func objectKey(prefix, name string) (string, error) {
	if !ValidObjectName(name) {
		return "", fmt.Errorf("invalid object name %q", name)
	}
	return prefix + objectsDir + name, nil
}

// tmpKey names a new temporary upload. The time in the name lets
// DeleteTemporaries judge its age even where the service reports none
// (S3 multipart uploads that were never completed).
func tmpKey(prefix string) string {
	var b [8]byte
	rand.Read(b[:])
	return fmt.Sprintf("%s%s%d-%s", prefix, tmpDir, time.Now().Unix(), hex.EncodeToString(b[:]))
}

// tmpKeyTime reads back the creation time from a temporary key.
func tmpKeyTime(prefix, key string) (time.Time, bool) {
	rest, ok := strings.CutPrefix(key, prefix+tmpDir)
	if !ok {
		return time.Time{}, false
	}
	secs, _, ok := strings.Cut(rest, "-")
	var n int64
	if _, err := fmt.Sscan(secs, &n); !ok || err != nil {
		return time.Time{}, false
	}
	return time.Unix(n, 0), true
}

// digestFromKey parses the digest back out of a blob key; ok is false for
// anything else found under the blobs prefix.
func digestFromKey(prefix, key string) (digest.Digest, bool) {
	hexPart, ok := strings.CutPrefix(key, prefix+blobsDir)
	if !ok {
		return "", false
	}
	d := digest.NewDigestFromEncoded(digest.SHA256, hexPart)
	return d, d.Validate() == nil
}

func checkDigest(d digest.Digest) error {
	if err := d.Validate(); err != nil || d.Algorithm() != digest.SHA256 {
		return fmt.Errorf("invalid digest %q", d)
	}
	return nil
}

// classify turns an error from a storage service call into one that wraps
// ErrNotFound (404) or ErrUnavailable (cannot connect, timed out, 5xx,
// 429), so callers can test with errors.Is. The caller's own cancellation
// passes through unchanged: that is not an outage.
func classify(ctx context.Context, what string, err error) error {
	if err == nil {
		return nil
	}
	if errors.Is(err, ErrNotFound) || errors.Is(err, ErrUnavailable) {
		return err
	}
	// The GCS library reports a missing object or bucket with sentinels
	// rather than a status.
	if errors.Is(err, gcs.ErrObjectNotExist) || errors.Is(err, gcs.ErrBucketNotExist) {
		return fmt.Errorf("%s: %w (%v)", what, ErrNotFound, err)
	}
	if ctx.Err() != nil {
		return fmt.Errorf("storage: %s: %w", what, ctx.Err())
	}
	if status := httpStatus(err); status != 0 {
		switch {
		case status == 404:
			return fmt.Errorf("%s: %w", what, ErrNotFound)
		case status >= 500 || status == 429 || status == 408:
			return fmt.Errorf("%w: %s: %w", ErrUnavailable, what, err)
		}
		return fmt.Errorf("storage: %s: %w", what, err)
	}
	var netErr net.Error
	if errors.As(err, &netErr) || errors.Is(err, context.DeadlineExceeded) ||
		errors.Is(err, context.Canceled) || errors.Is(err, io.ErrUnexpectedEOF) {
		// Our own timeouts (the caller's context is still live) and
		// connections that failed or broke mid-answer.
		return fmt.Errorf("%w: %s: %w", ErrUnavailable, what, err)
	}
	return fmt.Errorf("storage: %s: %w", what, err)
}

// httpStatus finds the HTTP status code in an error from either SDK:
// smithy's ResponseError (AWS) has HTTPStatusCode, googleapi.Error has Code.
func httpStatus(err error) int {
	var aws interface{ HTTPStatusCode() int }
	if errors.As(err, &aws) {
		return aws.HTTPStatusCode()
	}
	var gerr *googleapi.Error
	if errors.As(err, &gerr) {
		return gerr.Code
	}
	return 0
}

// watchdog cancels a context when a call takes longer than allowed. Unlike
// context.WithTimeout it can be re-armed for each step of a long stream,
// so a big download may take hours but no single read may stall.
type watchdog struct {
	cancel context.CancelFunc
	timer  *time.Timer
	fired  atomic.Bool
}

func newWatchdog(parent context.Context) (context.Context, *watchdog) {
	ctx, cancel := context.WithCancel(parent)
	w := &watchdog{cancel: cancel}
	w.timer = time.AfterFunc(time.Hour, func() {
		w.fired.Store(true)
		cancel()
	})
	w.timer.Stop()
	return ctx, w
}

// arm starts (or restarts) the countdown.
func (w *watchdog) arm(d time.Duration) { w.timer.Reset(d) }

// disarm stops the countdown.
func (w *watchdog) disarm() { w.timer.Stop() }

// close releases the context.
func (w *watchdog) close() {
	w.timer.Stop()
	w.cancel()
}

// check turns the cancellation caused by the watchdog into ErrUnavailable.
func (w *watchdog) check(what string, limit time.Duration, err error) error {
	if err == nil || !w.fired.Load() {
		return err
	}
	if errors.Is(err, ErrUnavailable) {
		return fmt.Errorf("%w (no progress for %s)", err, limit)
	}
	return fmt.Errorf("%w: %s: no progress for %s: %w", ErrUnavailable, what, limit, err)
}

// progressReader re-arms a watchdog whenever the HTTP client takes more of
// a request body, so an upload fails only when it stops moving.
type progressReader struct {
	io.ReadSeeker
	wd    *watchdog
	limit time.Duration
}

func (p *progressReader) Read(b []byte) (int, error) {
	p.wd.arm(p.limit)
	return p.ReadSeeker.Read(b)
}

// remoteWriter implements Writer for the bucket backends.
//
// A blob of at most partSize bytes is kept in memory and uploaded in one
// request straight to its digest's key after the digest is verified (one
// request, no copy: most blobs, manifests and configs are small). A larger
// blob streams to a temporary key while it is hashed; Commit verifies the
// digest, completes the temporary object and copies it server-side to the
// digest's key, then deletes it. Either way the digest's key is only ever
// written with verified content, in one atomic step of the service.
type remoteWriter struct {
	ctx   context.Context
	store *bucketStore
	buf   []byte
	tmp   upload
	hash  hash.Hash
	size  int64
	err   error // sticky: a failed upload cannot be committed
	done  bool
}

func newRemoteWriter(ctx context.Context, store *bucketStore) *remoteWriter {
	return &remoteWriter{ctx: ctx, store: store, hash: sha256.New()}
}

func (w *remoteWriter) Write(p []byte) (int, error) {
	if w.done {
		return 0, errors.New("storage: write after commit or cancel")
	}
	if w.err != nil {
		return 0, w.err
	}
	w.hash.Write(p)
	w.size += int64(len(p))
	if w.tmp == nil && len(w.buf)+len(p) <= w.store.partSize {
		w.buf = append(w.buf, p...)
		return len(p), nil
	}
	if w.tmp == nil {
		tmp, err := w.store.bucket.startUpload(w.ctx, tmpKey(w.store.prefix))
		if err != nil {
			w.err = err
			return 0, err
		}
		w.tmp = tmp
		buffered := w.buf
		w.buf = nil
		if err := tmp.write(buffered); err != nil {
			w.err = err
			return 0, err
		}
	}
	if err := w.tmp.write(p); err != nil {
		w.err = err
		return 0, err
	}
	return len(p), nil
}

func (w *remoteWriter) Commit(d digest.Digest) error {
	if w.done {
		return errors.New("storage: blob already committed or cancelled")
	}
	defer w.Cancel()
	if err := checkDigest(d); err != nil {
		return err
	}
	if w.err != nil {
		return w.err
	}
	if got := digest.NewDigest(digest.SHA256, w.hash); got != d {
		return fmt.Errorf("storage: blob digest is %s, expected %s", got, d)
	}
	// Content-addressed: a blob already stored under d with the same size
	// is this blob. One with another size is damaged and is replaced.
	size, err := w.store.Stat(w.ctx, d)
	if err == nil && size == w.size {
		return nil
	}
	if err != nil && !errors.Is(err, ErrNotFound) {
		return err
	}
	if w.tmp == nil {
		return w.store.putBlob(w.ctx, d, w.buf)
	}
	return w.store.publishUpload(w.tmp, d, w.size)
}

func (w *remoteWriter) Cancel() error {
	if w.done {
		return nil
	}
	w.done = true
	w.buf = nil
	if w.tmp != nil {
		w.tmp.discard()
	}
	return nil
}

// rangeOpener starts a GET of a blob from offset to its end.
type rangeOpener func(ctx context.Context, offset int64) (io.ReadCloser, error)

// remoteReader implements Reader with ranged GETs: it reads one response
// body front to back and opens a new one only after a Seek moved away
// from where the body is (http.ServeContent seeks to the end and back to
// learn the size; that costs nothing here).
type remoteReader struct {
	what    string
	open    rangeOpener
	ctx     context.Context
	wd      *watchdog
	timeout time.Duration
	size    int64
	pos     int64
	body    io.ReadCloser
	bodyPos int64
}

// newRemoteReader wraps a body already opened at offset 0 (the request
// that found the size) for a blob of size bytes.
func newRemoteReader(ctx context.Context, wd *watchdog, what string, timeout time.Duration, size int64, body io.ReadCloser, open rangeOpener) *remoteReader {
	return &remoteReader{what: what, open: open, ctx: ctx, wd: wd, timeout: timeout, size: size, body: body}
}

func (r *remoteReader) Size() int64 { return r.size }

func (r *remoteReader) Read(p []byte) (int, error) {
	if r.pos >= r.size {
		return 0, io.EOF
	}
	if r.body != nil && r.bodyPos != r.pos {
		r.body.Close()
		r.body = nil
	}
	r.wd.arm(r.timeout)
	defer r.wd.disarm()
	if r.body == nil {
		body, err := r.open(r.ctx, r.pos)
		if err != nil {
			return 0, r.wd.check(r.what, r.timeout, classify(r.ctx, r.what, err))
		}
		r.body, r.bodyPos = body, r.pos
	}
	n, err := r.body.Read(p)
	r.pos += int64(n)
	r.bodyPos += int64(n)
	if err == io.EOF && r.pos < r.size {
		err = io.ErrUnexpectedEOF
	}
	if err != nil && err != io.EOF {
		r.body.Close()
		r.body = nil
		return n, r.wd.check(r.what, r.timeout, classify(r.ctx, r.what, err))
	}
	return n, err
}

func (r *remoteReader) Seek(offset int64, whence int) (int64, error) {
	switch whence {
	case io.SeekStart:
	case io.SeekCurrent:
		offset += r.pos
	case io.SeekEnd:
		offset += r.size
	default:
		return 0, errors.New("storage: invalid whence")
	}
	if offset < 0 {
		return 0, errors.New("storage: seek before start")
	}
	r.pos = offset
	return offset, nil
}

func (r *remoteReader) Close() error {
	if r.body != nil {
		r.body.Close()
		r.body = nil
	}
	r.wd.close()
	return nil
}

// withTimeout runs one metadata request with the backend's timeout.
func withTimeout[T any](ctx context.Context, timeout time.Duration, what string, call func(ctx context.Context) (T, error)) (T, error) {
	cctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	v, err := call(cctx)
	return v, classify(ctx, what, err)
}
