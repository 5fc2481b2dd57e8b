package storage

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/aws/ratelimit"
	"github.com/aws/aws-sdk-go-v2/aws/retry"
	awshttp "github.com/aws/aws-sdk-go-v2/aws/transport/http"
	"github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/s3/types"
)

// S3Config configures the S3 backend. Only Bucket is required; zero values
// get the defaults named in each field's comment.
type S3Config struct {
	// Bucket holds everything, under Prefix.
	Bucket string
	// Prefix is prepended to every key, for sharing a bucket
	// ("nixery/"). Empty: the bucket's root.
	Prefix string
	// Region of the bucket. Empty: the AWS configuration's (AWS_REGION,
	// ~/.aws/config), else "us-east-1" (what most S3-compatible services
	// expect).
	Region string
	// Endpoint is the base URL of an S3-compatible service
	// ("http://127.0.0.1:9000", an R2 or Ceph URL). Empty: AWS.
	Endpoint string
	// PathStyle addresses the bucket as endpoint/bucket/key instead of
	// bucket.endpoint/key; most S3-compatible services need it.
	PathStyle bool
	// AccessKeyID and SecretAccessKey, if set, are used instead of the
	// standard AWS credential chain (AWS_ACCESS_KEY_ID…, shared files,
	// SSO, web identity, the instance's role). Meant for tests.
	AccessKeyID, SecretAccessKey string
	// DisableRedirect serves blobs through Nixery instead of redirecting
	// clients to presigned URLs.
	DisableRedirect bool
	// RedirectTTL is how long a presigned URL is valid (DefaultRedirectTTL).
	RedirectTTL time.Duration
	// Timeout bounds each metadata request and each wait for progress
	// while data moves (DefaultTimeout).
	Timeout time.Duration
	// TransferTimeout bounds each server-side copy (DefaultTransferTimeout).
	TransferTimeout time.Duration
	// PartSize is the largest blob uploaded in one request and the part
	// size of multipart uploads (DefaultPartSize; S3's minimum is 5 MiB).
	PartSize int
}

// S3 stores blobs in an S3 bucket (AWS or any S3-compatible service):
//
//	<prefix>blobs/sha256/<hex>   committed blobs
//	<prefix>objects/<name>       named objects (cache entries)
//	<prefix>tmp/<time>-<random>  multipart uploads of large blobs in progress
//
// Its Backend methods are the bucket adapter's (bucket.go); see
// remoteWriter for how uploads stay atomic.
type S3 struct {
	bucketStore
	api *s3Bucket
}

// s3Bucket implements bucket with the AWS SDK.
type s3Bucket struct {
	cfg     S3Config
	client  *s3.Client
	presign *s3.PresignClient
	// copyLimit is the largest object one CopyObject may copy (S3: 5 GiB);
	// larger ones are copied in parts of copyPart bytes (1 GiB). Tests
	// lower both to take that path with small blobs.
	copyLimit, copyPart int64
	// beforeCopyPart, if set, is called before each part of a multipart
	// copy is requested: a hook for tests that interrupt a copy.
	beforeCopyPart func(part int32)
}

// NewS3 makes an S3 backend. It does not contact the service: a bucket
// that cannot be reached yet gives ErrUnavailable on use, and the backend
// recovers by itself when it can.
func NewS3(ctx context.Context, cfg S3Config) (*S3, error) {
	if cfg.Bucket == "" {
		return nil, errors.New("storage: S3 bucket name is empty")
	}
	setDefaults(&cfg.Prefix, &cfg.Timeout, &cfg.TransferTimeout, &cfg.RedirectTTL, &cfg.PartSize)
	if cfg.PartSize < 5<<20 {
		return nil, fmt.Errorf("storage: S3 part size %d is below S3's minimum of 5 MiB", cfg.PartSize)
	}
	// Dial and response-header timeouts end a request to a host that does
	// not answer; the per-call contexts below end everything else.
	httpClient := awshttp.NewBuildableClient().
		WithDialerOptions(func(d *net.Dialer) { d.Timeout = cfg.Timeout }).
		WithTransportOptions(func(tr *http.Transport) {
			tr.ResponseHeaderTimeout = cfg.TransferTimeout
			tr.TLSHandshakeTimeout = cfg.Timeout
		})
	opts := []func(*config.LoadOptions) error{
		config.WithHTTPClient(httpClient),
		config.WithRetryer(func() aws.Retryer {
			return retry.NewStandard(func(o *retry.StandardOptions) {
				o.MaxAttempts = retryAttempts
				o.MaxBackoff = retryMaxBackoff
				// The default token bucket stops retrying after a run of
				// failures and refills only slowly; during an outage that
				// would keep failing requests after the service is back.
				o.RateLimiter = ratelimit.None
			})
		}),
	}
	if cfg.Region != "" {
		opts = append(opts, config.WithRegion(cfg.Region))
	}
	if cfg.AccessKeyID != "" {
		opts = append(opts, config.WithCredentialsProvider(
			credentials.NewStaticCredentialsProvider(cfg.AccessKeyID, cfg.SecretAccessKey, "")))
	}
	awsCfg, err := config.LoadDefaultConfig(ctx, opts...)
	if err != nil {
		return nil, fmt.Errorf("storage: AWS configuration: %w", err)
	}
	if awsCfg.Region == "" {
		awsCfg.Region = "us-east-1"
	}
	client := s3.NewFromConfig(awsCfg, func(o *s3.Options) {
		if cfg.Endpoint != "" {
			o.BaseEndpoint = aws.String(cfg.Endpoint)
		}
		o.UsePathStyle = cfg.PathStyle
		// Checksums only where S3 requires them: several S3-compatible
		// services reject the SDK's default trailing checksums. Integrity
		// is Commit's sha256 check plus TLS.
		o.RequestChecksumCalculation = aws.RequestChecksumCalculationWhenRequired
		o.ResponseChecksumValidation = aws.ResponseChecksumValidationWhenRequired
	})
	api := &s3Bucket{cfg: cfg, client: client, presign: s3.NewPresignClient(client), copyLimit: 5 << 30, copyPart: 1 << 30}
	return &S3{api: api, bucketStore: bucketStore{
		bucket: api, prefix: cfg.Prefix, timeout: cfg.Timeout, redirectTTL: cfg.RedirectTTL,
		partSize: cfg.PartSize, disableRedirect: cfg.DisableRedirect,
	}}, nil
}

func (s *s3Bucket) String() string {
	where := "AWS"
	if s.cfg.Endpoint != "" {
		where = s.cfg.Endpoint
	}
	return fmt.Sprintf("s3 bucket %s/%s at %s", s.cfg.Bucket, s.cfg.Prefix, where)
}

func (s *s3Bucket) stat(ctx context.Context, key string) (int64, error) {
	out, err := s.client.HeadObject(ctx, &s3.HeadObjectInput{Bucket: &s.cfg.Bucket, Key: &key})
	if err != nil {
		return 0, err
	}
	return aws.ToInt64(out.ContentLength), nil
}

func (s *s3Bucket) get(ctx context.Context, key string, offset int64) (io.ReadCloser, int64, error) {
	in := &s3.GetObjectInput{Bucket: &s.cfg.Bucket, Key: &key}
	if offset > 0 {
		in.Range = aws.String(fmt.Sprintf("bytes=%d-", offset))
	}
	out, err := s.client.GetObject(ctx, in)
	if err != nil {
		return nil, 0, err
	}
	return out.Body, aws.ToInt64(out.ContentLength), nil
}

func (s *s3Bucket) delete(ctx context.Context, key string) error {
	_, err := s.client.DeleteObject(ctx, &s3.DeleteObjectInput{Bucket: &s.cfg.Bucket, Key: &key})
	return err
}

// put uploads data in one PUT, which S3 applies atomically, and which may
// take as long as it keeps moving. ifAbsent sends If-None-Match: *, which
// S3 answers 412 when the key exists (and 409 when another conditional
// write of the key is in progress, which also means someone else is
// creating it).
// https://docs.aws.amazon.com/AmazonS3/latest/userguide/conditional-writes.html
func (s *s3Bucket) put(ctx context.Context, what, key string, data []byte, ifAbsent bool) error {
	pctx, wd := newWatchdog(ctx)
	defer wd.close()
	wd.arm(s.cfg.Timeout)
	in := &s3.PutObjectInput{
		Bucket:        &s.cfg.Bucket,
		Key:           &key,
		Body:          &progressReader{ReadSeeker: bytes.NewReader(data), wd: wd, limit: s.cfg.Timeout},
		ContentLength: aws.Int64(int64(len(data))),
	}
	if ifAbsent {
		in.IfNoneMatch = aws.String("*")
	}
	_, err := s.client.PutObject(pctx, in)
	if ifAbsent && err != nil {
		if st := httpStatus(err); st == 412 || st == 409 {
			return fmt.Errorf("%s: %w", what, ErrExists)
		}
	}
	return wd.check(what, s.cfg.Timeout, classify(ctx, what, err))
}

// s3Upload is a multipart upload to a temporary key.
type s3Upload struct {
	s        *s3Bucket
	ctx      context.Context
	key      string
	id       string
	buf      []byte
	parts    []types.CompletedPart
	finished bool
	etag     *string // of the completed temporary object
	size     int64
}

func (s *s3Bucket) startUpload(ctx context.Context, key string) (upload, error) {
	out, err := withTimeout(ctx, s.cfg.Timeout, "start upload", func(ctx context.Context) (*s3.CreateMultipartUploadOutput, error) {
		return s.client.CreateMultipartUpload(ctx, &s3.CreateMultipartUploadInput{Bucket: &s.cfg.Bucket, Key: &key})
	})
	if err != nil {
		return nil, err
	}
	return &s3Upload{s: s, ctx: ctx, key: key, id: aws.ToString(out.UploadId), buf: make([]byte, 0, s.cfg.PartSize)}, nil
}

func (u *s3Upload) write(p []byte) error {
	for len(p) > 0 {
		n := min(len(p), cap(u.buf)-len(u.buf))
		u.buf = append(u.buf, p[:n]...)
		p = p[n:]
		if len(u.buf) == cap(u.buf) {
			if err := u.flush(); err != nil {
				return err
			}
		}
	}
	return nil
}

// flush uploads the buffered bytes as the next part. Parts go one at a
// time: memory stays at one part per upload.
func (u *s3Upload) flush() error {
	if len(u.buf) == 0 && len(u.parts) > 0 {
		return nil
	}
	number := int32(len(u.parts) + 1)
	if number > 10000 {
		return errors.New("storage: blob too large for an S3 multipart upload (10,000 parts)")
	}
	what := fmt.Sprintf("upload part %d", number)
	pctx, wd := newWatchdog(u.ctx)
	defer wd.close()
	wd.arm(u.s.cfg.Timeout)
	out, err := u.s.client.UploadPart(pctx, &s3.UploadPartInput{
		Bucket:        &u.s.cfg.Bucket,
		Key:           &u.key,
		UploadId:      &u.id,
		PartNumber:    aws.Int32(number),
		Body:          &progressReader{ReadSeeker: bytes.NewReader(u.buf), wd: wd, limit: u.s.cfg.Timeout},
		ContentLength: aws.Int64(int64(len(u.buf))),
	})
	if err != nil {
		return wd.check(what, u.s.cfg.Timeout, classify(u.ctx, what, err))
	}
	u.parts = append(u.parts, types.CompletedPart{ETag: out.ETag, PartNumber: aws.Int32(number)})
	u.buf = u.buf[:0]
	return nil
}

// finish completes the upload and asks the service what it stored: the
// size, and the ETag that publish copies exactly.
func (u *s3Upload) finish() (int64, error) {
	if err := u.flush(); err != nil {
		return 0, err
	}
	u.buf = nil
	_, err := withTimeout(u.ctx, u.s.cfg.TransferTimeout, "complete upload", func(ctx context.Context) (*s3.CompleteMultipartUploadOutput, error) {
		return u.s.client.CompleteMultipartUpload(ctx, &s3.CompleteMultipartUploadInput{
			Bucket:          &u.s.cfg.Bucket,
			Key:             &u.key,
			UploadId:        &u.id,
			MultipartUpload: &types.CompletedMultipartUpload{Parts: u.parts},
		})
	})
	if err != nil {
		return 0, err
	}
	u.finished = true
	head, err := withTimeout(u.ctx, u.s.cfg.Timeout, "stat upload", func(ctx context.Context) (*s3.HeadObjectOutput, error) {
		return u.s.client.HeadObject(ctx, &s3.HeadObjectInput{Bucket: &u.s.cfg.Bucket, Key: &u.key})
	})
	if err != nil {
		return 0, err
	}
	u.etag, u.size = head.ETag, aws.ToInt64(head.ContentLength)
	return u.size, nil
}

// publish copies the finished temporary object to key, conditioned on its
// ETag. The copy appears whole or not at all.
func (u *s3Upload) publish(key string) error {
	source := u.s.cfg.Bucket + "/" + u.key
	if u.size > u.s.copyLimit {
		return u.s.copyInParts(u.ctx, source, key, u.size, u.etag)
	}
	_, err := withTimeout(u.ctx, u.s.cfg.TransferTimeout, "publish "+key, func(ctx context.Context) (*s3.CopyObjectOutput, error) {
		return u.s.client.CopyObject(ctx, &s3.CopyObjectInput{
			Bucket:            &u.s.cfg.Bucket,
			Key:               &key,
			CopySource:        &source,
			CopySourceIfMatch: u.etag,
		})
	})
	return err
}

// copyInParts copies an object too large for one CopyObject with a
// multipart upload whose parts are server-side copies; like any multipart
// upload, the object appears only when it is completed.
//
// Until then its parts are stored (and billed) without being visible, so
// every way out but completion aborts the upload: a failed part, a failed
// completion, the caller's cancellation. If the abort itself cannot reach
// the service, or the process dies mid-copy, DeleteTemporaries aborts the
// upload once it is older than its cutoff (it lists the uploads under the
// blobs prefix too).
func (s *s3Bucket) copyInParts(ctx context.Context, source, key string, size int64, etag *string) error {
	partSize := s.copyPart
	what := "publish " + key
	created, err := withTimeout(ctx, s.cfg.Timeout, what, func(ctx context.Context) (*s3.CreateMultipartUploadOutput, error) {
		return s.client.CreateMultipartUpload(ctx, &s3.CreateMultipartUploadInput{Bucket: &s.cfg.Bucket, Key: &key})
	})
	if err != nil {
		return err
	}
	completed := false
	defer func() {
		if completed {
			return
		}
		actx, cancel := context.WithTimeout(context.WithoutCancel(ctx), s.cfg.Timeout)
		defer cancel()
		s.client.AbortMultipartUpload(actx, &s3.AbortMultipartUploadInput{Bucket: &s.cfg.Bucket, Key: &key, UploadId: created.UploadId})
	}()
	var parts []types.CompletedPart
	for start, n := int64(0), int32(1); start < size; start, n = start+partSize, n+1 {
		if s.beforeCopyPart != nil {
			s.beforeCopyPart(n)
		}
		end := min(start+partSize, size) - 1
		out, err := withTimeout(ctx, s.cfg.TransferTimeout, what, func(ctx context.Context) (*s3.UploadPartCopyOutput, error) {
			return s.client.UploadPartCopy(ctx, &s3.UploadPartCopyInput{
				Bucket:            &s.cfg.Bucket,
				Key:               &key,
				UploadId:          created.UploadId,
				PartNumber:        aws.Int32(n),
				CopySource:        &source,
				CopySourceIfMatch: etag,
				CopySourceRange:   aws.String(fmt.Sprintf("bytes=%d-%d", start, end)),
			})
		})
		if err != nil {
			return err
		}
		if out.CopyPartResult == nil {
			return fmt.Errorf("storage: %s: part %d: no copy result", what, n)
		}
		parts = append(parts, types.CompletedPart{ETag: out.CopyPartResult.ETag, PartNumber: aws.Int32(n)})
	}
	_, err = withTimeout(ctx, s.cfg.TransferTimeout, what, func(ctx context.Context) (*s3.CompleteMultipartUploadOutput, error) {
		return s.client.CompleteMultipartUpload(ctx, &s3.CompleteMultipartUploadInput{
			Bucket: &s.cfg.Bucket, Key: &key, UploadId: created.UploadId,
			MultipartUpload: &types.CompletedMultipartUpload{Parts: parts},
		})
	})
	completed = err == nil
	return err
}

// discard aborts the upload, or deletes the temporary object once it was
// completed. It runs even when the writer's context is cancelled.
func (u *s3Upload) discard() {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(u.ctx), u.s.cfg.Timeout)
	defer cancel()
	if u.finished {
		u.s.client.DeleteObject(ctx, &s3.DeleteObjectInput{Bucket: &u.s.cfg.Bucket, Key: &u.key})
		return
	}
	u.s.client.AbortMultipartUpload(ctx, &s3.AbortMultipartUploadInput{Bucket: &u.s.cfg.Bucket, Key: &u.key, UploadId: &u.id})
}

// signedURL presigns a GET of key. Presigning is local (no request); the
// client needs to reach the endpoint itself.
func (s *s3Bucket) signedURL(ctx context.Context, key string, ttl time.Duration) (string, error) {
	req, err := s.presign.PresignGetObject(ctx, &s3.GetObjectInput{Bucket: &s.cfg.Bucket, Key: &key},
		s3.WithPresignExpires(ttl))
	if err != nil {
		return "", fmt.Errorf("storage: presigning %s: %w", key, err)
	}
	return req.URL, nil
}

func (s *s3Bucket) list(ctx context.Context, prefix string, fn func(key string, size int64, modTime time.Time) error) error {
	pages := s3.NewListObjectsV2Paginator(s.client, &s3.ListObjectsV2Input{Bucket: &s.cfg.Bucket, Prefix: &prefix})
	for pages.HasMorePages() {
		page, err := withTimeout(ctx, s.cfg.Timeout, "list "+prefix, func(ctx context.Context) (*s3.ListObjectsV2Output, error) {
			return pages.NextPage(ctx)
		})
		if err != nil {
			return err
		}
		for _, obj := range page.Contents {
			if err := fn(aws.ToString(obj.Key), aws.ToInt64(obj.Size), aws.ToTime(obj.LastModified)); err != nil {
				return err
			}
		}
	}
	return nil
}

// abortUploads aborts the multipart uploads initiated before cutoff
// (streamed uploads under tmp/ and multipart copies under blobs/sha256/,
// judged by the service's own initiation time). Keys outside the
// backend's layout are left alone, even with an empty prefix. (A bucket
// lifecycle rule that aborts incomplete multipart uploads after a day
// does the same without Nixery.)
func (s *s3Bucket) abortUploads(ctx context.Context, cutoff time.Time) (int, error) {
	tmpPrefix, blobPrefix := s.cfg.Prefix+tmpDir, s.cfg.Prefix+blobsDir
	removed := 0
	in := &s3.ListMultipartUploadsInput{Bucket: &s.cfg.Bucket, Prefix: &s.cfg.Prefix}
	for {
		page, err := withTimeout(ctx, s.cfg.Timeout, "list uploads", func(ctx context.Context) (*s3.ListMultipartUploadsOutput, error) {
			return s.client.ListMultipartUploads(ctx, in)
		})
		if err != nil {
			return removed, err
		}
		for _, up := range page.Uploads {
			key := aws.ToString(up.Key)
			if !strings.HasPrefix(key, tmpPrefix) && !strings.HasPrefix(key, blobPrefix) {
				continue
			}
			started := aws.ToTime(up.Initiated)
			if started.IsZero() {
				// A service that reports no time: the one in the key.
				t, ok := tmpKeyTime(s.cfg.Prefix, key)
				if !ok {
					continue
				}
				started = t
			}
			if !started.Before(cutoff) {
				continue
			}
			_, err := withTimeout(ctx, s.cfg.Timeout, "abort upload", func(ctx context.Context) (*s3.AbortMultipartUploadOutput, error) {
				return s.client.AbortMultipartUpload(ctx, &s3.AbortMultipartUploadInput{Bucket: &s.cfg.Bucket, Key: up.Key, UploadId: up.UploadId})
			})
			if err != nil && !errors.Is(err, ErrNotFound) {
				return removed, err
			}
			removed++
		}
		if !aws.ToBool(page.IsTruncated) {
			return removed, nil
		}
		in.KeyMarker, in.UploadIdMarker = page.NextKeyMarker, page.NextUploadIdMarker
	}
}
