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
// Its Backend methods are the bucket adapter's (bucket.go); see
// remoteWriter for how uploads stay atomic. A GCS object is created only
// when its upload is closed, but its name is fixed when the upload starts,
// before the digest is known; so a large blob is uploaded under a
// temporary name, verified, then copied (a metadata-only rewrite within
// one bucket) to its digest's name.
type GCS struct {
	bucketStore
	api *gcsBucket
}

// gcsBucket implements bucket with Google's client library.
type gcsBucket struct {
	cfg        GCSConfig
	client     *gcs.Client
	bucket     *gcs.BucketHandle
	emulator   bool
	publicURL  *url.URL
	signingKey []byte

	signOnce sync.Once
	canSign  bool // the client's own credentials can sign URLs
}

// NewGCS makes a GCS backend. It does not contact the service: a bucket
// that cannot be reached yet gives ErrUnavailable on use, and the backend
// recovers by itself when it can.
func NewGCS(ctx context.Context, cfg GCSConfig) (*GCS, error) {
	if cfg.Bucket == "" {
		return nil, errors.New("storage: GCS bucket name is empty")
	}
	setDefaults(&cfg.Prefix, &cfg.Timeout, &cfg.TransferTimeout, &cfg.RedirectTTL, &cfg.PartSize)
	g := &gcsBucket{cfg: cfg}

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
	return &GCS{api: g, bucketStore: bucketStore{
		bucket: g, prefix: cfg.Prefix, timeout: cfg.Timeout, redirectTTL: cfg.RedirectTTL,
		partSize: cfg.PartSize, disableRedirect: cfg.DisableRedirect,
	}}, nil
}

// writable returns the handle of an object to write, copy to or delete.
// Every such call here may be retried: a blob's content is fixed by its
// name, a named object is replaced whole, deleting twice is harmless. The
// library does not apply the attempt limit to uploads (it retries until
// the context ends), so each handle counts its own attempts.
func (g *gcsBucket) writable(key string) *gcs.ObjectHandle {
	var retries atomic.Int32
	return g.bucket.Object(key).Retryer(
		gcs.WithPolicy(gcs.RetryAlways),
		gcs.WithErrorFunc(func(err error) bool {
			return gcs.ShouldRetry(err) && retries.Add(1) < retryAttempts
		}))
}

func (g *gcsBucket) String() string {
	return fmt.Sprintf("gcs bucket %s/%s", g.cfg.Bucket, g.cfg.Prefix)
}

// Close releases the client's connections.
func (g *GCS) Close() error { return g.api.client.Close() }

func (g *gcsBucket) stat(ctx context.Context, key string) (int64, error) {
	attrs, err := g.bucket.Object(key).Attrs(ctx)
	if err != nil {
		return 0, err
	}
	return attrs.Size, nil
}

func (g *gcsBucket) get(ctx context.Context, key string, offset int64) (io.ReadCloser, int64, error) {
	r, err := g.bucket.Object(key).NewRangeReader(ctx, offset, -1)
	if err != nil {
		return nil, 0, err
	}
	return r, r.Attrs.Size - offset, nil
}

func (g *gcsBucket) delete(ctx context.Context, key string) error {
	return g.writable(key).Delete(ctx)
}

// put uploads data in one request; GCS makes the object visible only when
// the upload completes, replacing the old content at once. ifAbsent sends
// ifGenerationMatch=0, which GCS answers 412 when the object exists.
// https://cloud.google.com/storage/docs/request-preconditions
//
// The library does not retry such uploads, so put does, as often as other
// requests are tried, when the service refused quickly.
func (g *gcsBucket) put(ctx context.Context, what, key string, data []byte, ifAbsent bool) error {
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
		err = g.putOnce(ctx, what, key, data, ifAbsent)
		if !errors.Is(err, ErrUnavailable) || time.Since(start) > g.cfg.Timeout {
			return err // done, or a hung service: waiting again would not be failing fast
		}
	}
	return err
}

func (g *gcsBucket) putOnce(ctx context.Context, what, key string, data []byte, ifAbsent bool) error {
	pctx, wd := newWatchdog(ctx)
	defer wd.close()
	obj := g.writable(key)
	if ifAbsent {
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
	if ifAbsent && httpStatus(err) == 412 {
		return fmt.Errorf("%s: %w", what, ErrExists)
	}
	return wd.check(what, g.cfg.TransferTimeout, classify(ctx, what, err))
}

// gcsUpload is a resumable upload to a temporary name.
type gcsUpload struct {
	g        *gcsBucket
	ctx      context.Context // the writer's
	wd       *watchdog       // cancelling its context aborts the upload
	obj      *gcs.ObjectHandle
	w        *gcs.Writer
	attrs    *gcs.ObjectAttrs
	finished bool
}

func (g *gcsBucket) startUpload(ctx context.Context, key string) (upload, error) {
	obj := g.writable(key)
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

func (u *gcsUpload) finish() (int64, error) {
	u.wd.arm(u.g.cfg.TransferTimeout)
	err := u.w.Close()
	u.wd.disarm()
	if err != nil {
		return 0, u.wd.check("complete upload", u.g.cfg.TransferTimeout, classify(u.ctx, "complete upload", err))
	}
	u.finished, u.attrs = true, u.w.Attrs()
	return u.attrs.Size, nil
}

// publish copies the temporary object, exactly the generation this
// process uploaded, to key.
func (u *gcsUpload) publish(key string) error {
	src := u.obj.If(gcs.Conditions{GenerationMatch: u.attrs.Generation})
	_, err := withTimeout(u.ctx, u.g.cfg.TransferTimeout, "publish "+key, func(ctx context.Context) (*gcs.ObjectAttrs, error) {
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

// signedURL returns a V4-signed URL valid for ttl when it can sign (see
// GCSConfig.SigningAccount), otherwise the object's plain URL.
func (g *gcsBucket) signedURL(ctx context.Context, key string, ttl time.Duration) (string, error) {
	opts := &gcs.SignedURLOptions{
		Method:   http.MethodGet,
		Expires:  time.Now().Add(ttl),
		Scheme:   gcs.SigningSchemeV4,
		Hostname: g.publicURL.Host,
		Insecure: g.publicURL.Scheme == "http",
	}
	if g.signingKey != nil {
		opts.GoogleAccessID, opts.PrivateKey = g.cfg.SigningAccount, g.signingKey
		u, err := g.bucket.SignedURL(key, opts)
		if err != nil {
			return "", fmt.Errorf("storage: signing URL for %s: %w", key, err)
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
				return "", classify(ctx, "signing URL for "+key, err)
			}
			return u, nil
		}
	}
	return g.publicURL.JoinPath(g.cfg.Bucket, key).String(), nil
}

// list calls fn for every object under prefix. Each page must arrive
// within the timeout.
func (g *gcsBucket) list(ctx context.Context, prefix string, fn func(key string, size int64, modTime time.Time) error) error {
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
		if err := fn(attrs.Name, attrs.Size, attrs.Updated); err != nil {
			return err
		}
	}
}

// abortUploads has nothing to do: resumable uploads that were never
// finished are not objects, invisible to other processes, and GCS drops
// them after a week.
func (g *gcsBucket) abortUploads(context.Context, time.Time) (int, error) { return 0, nil }
