package storage

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	gcs "cloud.google.com/go/storage"
	"github.com/googleapis/gax-go/v2"
	"github.com/opencontainers/go-digest"
	"google.golang.org/api/iterator"
	"google.golang.org/api/option"
)

// chunkRetryBudget is how long the library may keep retrying one failed
// chunk of an upload (its default is 32 s, and it ignores the attempt limit).
const chunkRetryBudget = 2 * time.Second

// GCSConfig configures the Google Cloud Storage backend. Only Bucket is
// required; zero values get the defaults named in each field's comment.
type GCSConfig struct {
	// Bucket holds everything, under Prefix (GCS_BUCKET, as in the
	// original Nixery).
	Bucket string
	// Prefix is prepended to every object name ("nixery/"). Empty: the
	// bucket's root.
	Prefix string
	// Endpoint is the base URL of an emulator such as fake-gcs-server
	// ("http://127.0.0.1:4443"); requests then carry no credentials.
	// Empty: Google (or STORAGE_EMULATOR_HOST, which the client library
	// reads itself). Credentials are found the standard Google way:
	// GOOGLE_APPLICATION_CREDENTIALS, gcloud's application default
	// credentials, the metadata server.
	Endpoint string
	// SigningAccount and SigningKeyFile (a PEM private key of that service
	// account) sign redirect URLs locally (GCS_SIGNING_ACCOUNT and
	// GCS_SIGNING_KEY, as in the original Nixery). Without them, URLs are
	// signed with the client's credentials when those can sign (a service
	// account key, or the IAM signBlob API), and otherwise the redirect
	// goes to the object's plain URL, which only works for a bucket that
	// is publicly readable.
	SigningAccount, SigningKeyFile string
	// PublicURL is the base of plain and signed object URLs. Empty:
	// https://storage.googleapis.com, or Endpoint when that is set.
	PublicURL string
	// DisableRedirect serves blobs through Nixery instead of redirecting.
	DisableRedirect bool
	// RedirectTTL is how long a signed URL is valid (DefaultRedirectTTL).
	RedirectTTL time.Duration
	// Timeout bounds each metadata request and each wait for progress
	// while data moves (DefaultTimeout).
	Timeout time.Duration
	// TransferTimeout bounds server-side copies and each call into the
	// upload stream (DefaultTransferTimeout).
	TransferTimeout time.Duration
	// PartSize is the largest blob uploaded in one request and the chunk
	// size of resumable uploads (DefaultPartSize).
	PartSize int
}

// GCS stores blobs in a Google Cloud Storage bucket:
//
//	<prefix>blobs/sha256/<hex>   committed blobs
//	<prefix>objects/<name>       named objects (cache entries)
//	<prefix>tmp/<time>-<random>  large blobs between upload and publication
//
// See remoteWriter for how uploads stay atomic. A GCS object is created
// only when its upload is closed, but its name is fixed when the upload
// starts, before the digest is known; so a large blob is uploaded under a
// temporary name, verified, then copied (a metadata-only rewrite within
// one bucket) to its digest's name.
type GCS struct {
	cfg        GCSConfig
	client     *gcs.Client
	bucket     *gcs.BucketHandle
	emulator   bool
	publicURL  *url.URL
	signingKey []byte

	signOnce sync.Once
	canSign  bool // the client's own credentials can sign URLs
}

var (
	_ Backend    = (*GCS)(nil)
	_ Redirector = (*GCS)(nil)
)

// NewGCS makes a GCS backend. It does not contact the service: a bucket
// that cannot be reached yet gives ErrUnavailable on use, and the backend
// recovers by itself when it can.
func NewGCS(ctx context.Context, cfg GCSConfig) (*GCS, error) {
	if cfg.Bucket == "" {
		return nil, errors.New("storage: GCS bucket name is empty")
	}
	if cfg.Prefix != "" && !strings.HasSuffix(cfg.Prefix, "/") {
		cfg.Prefix += "/"
	}
	setDefaults(&cfg.Timeout, &cfg.TransferTimeout, &cfg.RedirectTTL, &cfg.PartSize)
	g := &GCS{cfg: cfg}

	var opts []option.ClientOption
	public := "https://storage.googleapis.com"
	if cfg.Endpoint != "" {
		base := strings.TrimSuffix(strings.TrimSuffix(cfg.Endpoint, "/"), "/storage/v1")
		opts = append(opts, option.WithEndpoint(base+"/storage/v1/"), option.WithoutAuthentication())
		public, g.emulator = base, true
	} else if host := os.Getenv("STORAGE_EMULATOR_HOST"); host != "" {
		if !strings.Contains(host, "://") {
			host = "http://" + host
		}
		public, g.emulator = host, true
	}
	if cfg.PublicURL != "" {
		public = cfg.PublicURL
	}
	u, err := url.Parse(strings.TrimSuffix(public, "/"))
	if err != nil || u.Host == "" {
		return nil, fmt.Errorf("storage: invalid GCS public URL %q", public)
	}
	g.publicURL = u

	if (cfg.SigningKeyFile == "") != (cfg.SigningAccount == "") {
		return nil, errors.New("storage: GCS URL signing needs both the signing account and the key file")
	}
	if cfg.SigningKeyFile != "" {
		key, err := os.ReadFile(cfg.SigningKeyFile)
		if err != nil {
			return nil, fmt.Errorf("storage: GCS signing key: %w", err)
		}
		g.signingKey = key
	}

	client, err := gcs.NewClient(ctx, opts...)
	if err != nil {
		return nil, fmt.Errorf("storage: GCS client: %w", err)
	}
	// The library retries idempotent calls until the context ends, with
	// backoff up to 30 s; a few quick tries fail fast instead.
	client.SetRetry(
		gcs.WithBackoff(gax.Backoff{Initial: 100 * time.Millisecond, Max: retryMaxBackoff, Multiplier: 2}),
		gcs.WithMaxAttempts(retryAttempts))
	g.client = client
	g.bucket = client.Bucket(cfg.Bucket)
	return g, nil
}

// writable returns the handle of an object to write, copy to or delete.
// Every such call here may be retried: a blob's content is fixed by its
// name, a named object is replaced whole, deleting twice is harmless. The
// library does not apply the attempt limit to uploads (it retries until
// the context ends), so each handle counts its own attempts.
func (g *GCS) writable(key string) *gcs.ObjectHandle {
	var retries atomic.Int32
	return g.bucket.Object(key).Retryer(
		gcs.WithPolicy(gcs.RetryAlways),
		gcs.WithErrorFunc(func(err error) bool {
			return gcs.ShouldRetry(err) && retries.Add(1) < retryAttempts
		}))
}

func (g *GCS) String() string {
	return fmt.Sprintf("gcs bucket %s/%s", g.cfg.Bucket, g.cfg.Prefix)
}

// Close releases the client's connections.
func (g *GCS) Close() error { return g.client.Close() }

func (g *GCS) Create(ctx context.Context) (Writer, error) {
	return newRemoteWriter(ctx, g, g.cfg.PartSize), nil
}

func (g *GCS) Stat(ctx context.Context, d digest.Digest) (int64, error) {
	key, err := blobKey(g.cfg.Prefix, d)
	if err != nil {
		return 0, err
	}
	attrs, err := withTimeout(ctx, g.cfg.Timeout, "stat "+d.String(), g.bucket.Object(key).Attrs)
	if err != nil {
		return 0, err
	}
	return attrs.Size, nil
}

func (g *GCS) Open(ctx context.Context, d digest.Digest) (Reader, error) {
	key, err := blobKey(g.cfg.Prefix, d)
	if err != nil {
		return nil, err
	}
	what := "read " + d.String()
	obj := g.bucket.Object(key)
	rctx, wd := newWatchdog(ctx)
	wd.arm(g.cfg.Timeout)
	r, err := obj.NewRangeReader(rctx, 0, -1)
	wd.disarm()
	if err != nil {
		wd.close()
		return nil, wd.check(what, g.cfg.Timeout, classify(ctx, what, err))
	}
	return newRemoteReader(rctx, wd, what, g.cfg.Timeout, r.Attrs.Size, r,
		func(ctx context.Context, offset int64) (io.ReadCloser, error) {
			return obj.NewRangeReader(ctx, offset, -1)
		}), nil
}

func (g *GCS) GetObject(ctx context.Context, name string) ([]byte, error) {
	key, err := objectKey(g.cfg.Prefix, name)
	if err != nil {
		return nil, err
	}
	return withTimeout(ctx, g.cfg.Timeout, "object "+name, func(ctx context.Context) ([]byte, error) {
		r, err := g.bucket.Object(key).NewReader(ctx)
		if err != nil {
			return nil, err
		}
		defer r.Close()
		return readObject(name, r.Attrs.Size, r)
	})
}

// PutObject writes the object in one upload; GCS makes it visible only
// when the upload completes, replacing the old content at once.
func (g *GCS) PutObject(ctx context.Context, name string, data []byte) error {
	key, err := objectKey(g.cfg.Prefix, name)
	if err != nil {
		return err
	}
	if err := checkObjectSize(name, data); err != nil {
		return err
	}
	return g.put(ctx, "put object "+name, key, data)
}

func (g *GCS) putBlob(ctx context.Context, d digest.Digest, data []byte) error {
	key, err := blobKey(g.cfg.Prefix, d)
	if err != nil {
		return err
	}
	return g.put(ctx, "write "+d.String(), key, data)
}

// put uploads data in one request. The library does not retry such
// uploads, so put does, as often as other requests are tried, when the
// service refused quickly.
func (g *GCS) put(ctx context.Context, what, key string, data []byte) error {
	return g.putIf(ctx, what, key, data, false)
}

// CreateObject creates the object only if it does not exist: an upload
// with ifGenerationMatch=0, which GCS answers 412 when the object exists.
// https://cloud.google.com/storage/docs/request-preconditions
func (g *GCS) CreateObject(ctx context.Context, name string, data []byte) error {
	key, err := objectKey(g.cfg.Prefix, name)
	if err != nil {
		return err
	}
	if err := checkObjectSize(name, data); err != nil {
		return err
	}
	return g.putIf(ctx, "create object "+name, key, data, true)
}

func (g *GCS) putIf(ctx context.Context, what, key string, data []byte, absent bool) error {
	var err error
	for attempt := range retryAttempts {
		if attempt > 0 {
			select {
			case <-time.After(time.Duration(attempt) * 200 * time.Millisecond):
			case <-ctx.Done():
				return err
			}
		}
		start := time.Now()
		err = g.putOnce(ctx, what, key, data, absent)
		if !errors.Is(err, ErrUnavailable) || time.Since(start) > g.cfg.Timeout {
			return err // done, or a hung service: waiting again would not be failing fast
		}
	}
	return err
}

func (g *GCS) putOnce(ctx context.Context, what, key string, data []byte, absent bool) error {
	pctx, wd := newWatchdog(ctx)
	defer wd.close()
	obj := g.writable(key)
	if absent {
		obj = obj.If(gcs.Conditions{DoesNotExist: true})
	}
	w := obj.NewWriter(pctx)
	w.ContentType = "application/octet-stream"
	// One request for the whole object, no upload session.
	w.ChunkSize = 0
	wd.arm(g.cfg.TransferTimeout)
	_, err := io.Copy(w, bytes.NewReader(data))
	if err == nil {
		err = w.Close()
	}
	wd.disarm()
	if absent && httpStatus(err) == 412 {
		return fmt.Errorf("%s: %w", what, ErrExists)
	}
	return wd.check(what, g.cfg.TransferTimeout, classify(ctx, what, err))
}

// gcsUpload is a resumable upload to a temporary name.
type gcsUpload struct {
	g        *GCS
	ctx      context.Context // the writer's
	wd       *watchdog       // cancelling its context aborts the upload
	obj      *gcs.ObjectHandle
	w        *gcs.Writer
	attrs    *gcs.ObjectAttrs
	finished bool
}

func (g *GCS) beginTemp(ctx context.Context) (tempUpload, error) {
	obj := g.writable(tmpKey(g.cfg.Prefix))
	uctx, wd := newWatchdog(ctx)
	w := obj.NewWriter(uctx)
	w.ContentType = "application/octet-stream"
	w.ChunkSize = g.cfg.PartSize
	w.ChunkRetryDeadline = chunkRetryBudget
	return &gcsUpload{g: g, ctx: ctx, wd: wd, obj: obj, w: w}, nil
}

func (u *gcsUpload) write(p []byte) error {
	u.wd.arm(u.g.cfg.TransferTimeout)
	_, err := u.w.Write(p)
	u.wd.disarm()
	return u.wd.check("upload", u.g.cfg.TransferTimeout, classify(u.ctx, "upload", err))
}

func (u *gcsUpload) finish() error {
	u.wd.arm(u.g.cfg.TransferTimeout)
	err := u.w.Close()
	u.wd.disarm()
	if err != nil {
		return u.wd.check("complete upload", u.g.cfg.TransferTimeout, classify(u.ctx, "complete upload", err))
	}
	u.finished, u.attrs = true, u.w.Attrs()
	return nil
}

// promote copies the temporary object, exactly the generation this
// process uploaded, to the digest's name.
func (u *gcsUpload) promote(d digest.Digest, size int64) error {
	if u.attrs.Size != size {
		return fmt.Errorf("storage: uploaded %d bytes but the service stored %d", size, u.attrs.Size)
	}
	key, err := blobKey(u.g.cfg.Prefix, d)
	if err != nil {
		return err
	}
	src := u.obj.If(gcs.Conditions{GenerationMatch: u.attrs.Generation})
	_, err = withTimeout(u.ctx, u.g.cfg.TransferTimeout, "publish "+d.String(), func(ctx context.Context) (*gcs.ObjectAttrs, error) {
		c := u.g.writable(key).CopierFrom(src)
		c.ContentType = "application/octet-stream"
		return c.Run(ctx)
	})
	return err
}

// discard aborts the upload (cancelling its context: GCS then never
// creates the object) or deletes the finished temporary object.
func (u *gcsUpload) discard() {
	u.wd.close()
	if u.finished {
		ctx, cancel := context.WithTimeout(context.WithoutCancel(u.ctx), u.g.cfg.Timeout)
		defer cancel()
		u.obj.Delete(ctx)
	}
}

// RedirectURL returns a V4-signed URL valid for RedirectTTL when it can
// sign (see GCSConfig.SigningAccount), otherwise the object's plain URL.
func (g *GCS) RedirectURL(ctx context.Context, d digest.Digest) (string, error) {
	if g.cfg.DisableRedirect {
		return "", ErrNoRedirect
	}
	key, err := blobKey(g.cfg.Prefix, d)
	if err != nil {
		return "", err
	}
	opts := &gcs.SignedURLOptions{
		Method:   http.MethodGet,
		Expires:  time.Now().Add(g.cfg.RedirectTTL),
		Scheme:   gcs.SigningSchemeV4,
		Hostname: g.publicURL.Host,
		Insecure: g.publicURL.Scheme == "http",
	}
	if g.signingKey != nil {
		opts.GoogleAccessID, opts.PrivateKey = g.cfg.SigningAccount, g.signingKey
		u, err := g.bucket.SignedURL(key, opts)
		if err != nil {
			return "", fmt.Errorf("storage: signing URL for %s: %w", d, err)
		}
		return u, nil
	}
	// The client's credentials may sign (a service account key, or the
	// IAM API on Google's machines); an emulator has none, and probing
	// would only reach for a metadata server that is not there.
	if !g.emulator {
		g.signOnce.Do(func() {
			_, err := g.bucket.SignedURL(key, opts)
			g.canSign = err == nil
		})
		if g.canSign {
			u, err := g.bucket.SignedURL(key, opts)
			if err != nil {
				return "", classify(ctx, "signing URL for "+d.String(), err)
			}
			return u, nil
		}
	}
	return g.publicURL.JoinPath(g.cfg.Bucket, key).String(), nil
}

// list calls fn for every object under prefix. Each page must arrive
// within the timeout.
func (g *GCS) list(ctx context.Context, prefix string, fn func(*gcs.ObjectAttrs) error) error {
	lctx, wd := newWatchdog(ctx)
	defer wd.close()
	it := g.bucket.Objects(lctx, &gcs.Query{Prefix: prefix})
	for {
		wd.arm(g.cfg.Timeout)
		attrs, err := it.Next()
		wd.disarm()
		if err == iterator.Done {
			return nil
		}
		if err != nil {
			return wd.check("list "+prefix, g.cfg.Timeout, classify(ctx, "list "+prefix, err))
		}
		if err := fn(attrs); err != nil {
			return err
		}
	}
}

func (g *GCS) ListBlobs(ctx context.Context, fn func(d digest.Digest, size int64, modTime time.Time) error) error {
	return g.list(ctx, g.cfg.Prefix+blobsDir, func(a *gcs.ObjectAttrs) error {
		d, ok := digestFromKey(g.cfg.Prefix, a.Name)
		if !ok {
			return nil
		}
		return fn(d, a.Size, a.Updated)
	})
}

func (g *GCS) ListObjects(ctx context.Context, prefix string, fn func(name string, modTime time.Time) error) error {
	base := g.cfg.Prefix + objectsDir
	return g.list(ctx, base+prefix, func(a *gcs.ObjectAttrs) error {
		name := strings.TrimPrefix(a.Name, base)
		if !ValidObjectName(name) {
			return nil
		}
		return fn(name, a.Updated)
	})
}

func (g *GCS) DeleteBlob(ctx context.Context, d digest.Digest) error {
	key, err := blobKey(g.cfg.Prefix, d)
	if err != nil {
		return err
	}
	return g.delete(ctx, key)
}

func (g *GCS) DeleteObject(ctx context.Context, name string) error {
	key, err := objectKey(g.cfg.Prefix, name)
	if err != nil {
		return err
	}
	return g.delete(ctx, key)
}

func (g *GCS) delete(ctx context.Context, key string) error {
	_, err := withTimeout(ctx, g.cfg.Timeout, "delete "+key, func(ctx context.Context) (struct{}, error) {
		return struct{}{}, g.writable(key).Delete(ctx)
	})
	if errors.Is(err, ErrNotFound) {
		return nil
	}
	return err
}

// DeleteTemporaries deletes temporary objects written before cutoff (by
// the service's clock). A temporary object exists only between the end of
// a large upload and its publication, so one older than the cutoff was
// left by a process that died or lost the service in between. Resumable
// uploads that were never finished are not objects, invisible to other
// processes; GCS drops them after a week.
func (g *GCS) DeleteTemporaries(ctx context.Context, cutoff time.Time) (int, error) {
	var stale []string
	err := g.list(ctx, g.cfg.Prefix+tmpDir, func(a *gcs.ObjectAttrs) error {
		if a.Updated.Before(cutoff) {
			stale = append(stale, a.Name)
		}
		return nil
	})
	removed := 0
	for _, key := range stale {
		if err := g.delete(ctx, key); err != nil {
			return removed, err
		}
		removed++
	}
	return removed, err
}
