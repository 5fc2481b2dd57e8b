// Package registry serves the pull side of the OCI distribution API
// (https://github.com/opencontainers/distribution-spec/blob/main/spec.md).
//
// Nixery is a read-only registry whose manifests are built on demand, so
// only GET and HEAD exist; every write method answers 405 UNSUPPORTED.
// Routing reads the URL path from the end ("…/manifests/<ref>",
// "…/blobs/<digest>"), so repository names with any number of slashes
// just work, and every handler returns an error value that one function,
// writeError, turns into a spec-shaped answer.
package registry

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/opencontainers/go-digest"
	v1 "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/nixery/nixery/internal/artifact"
	"github.com/nixery/nixery/internal/fault"
	"github.com/nixery/nixery/internal/image"
	"github.com/nixery/nixery/internal/manifest"
	"github.com/nixery/nixery/internal/metadata"
	"github.com/nixery/nixery/internal/route"
	"github.com/nixery/nixery/internal/storage"
)

// Builder produces the manifest of an image on demand.
type Builder interface {
	// Manifest builds (or finds) the image req selects and returns its
	// manifest encoded in mediaType (one of manifest.MediaTypes).
	Manifest(ctx context.Context, req *image.Request, mediaType string) ([]byte, digest.Digest, error)
}

// Registry is the /v2/ HTTP API.
type Registry struct {
	Builder Builder
	Storage storage.Backend
	Logger  *slog.Logger
	// Uses, if set, records pulls of manifests by digest, so that garbage
	// collection keeps images that are pulled only that way (Kubernetes).
	Uses UseRecorder
	// Referrers, if set, finds the artifacts of a manifest (its SBOMs,
	// provenance and signatures) for the referrers API and the
	// referrers tag schema; without it every manifest has none.
	Referrers ReferrerFinder
}

// ReferrerFinder finds the artifacts of a manifest: an error wrapping
// storage.ErrNotFound when it has none.
type ReferrerFinder interface {
	Referrers(ctx context.Context, subject digest.Digest) (metadata.Referrers, error)
}

// UseRecorder records that a manifest was pulled by digest.
type UseRecorder interface {
	RecordDigestPull(ctx context.Context, d digest.Digest)
}

// regError is an error answer: an HTTP status and a spec error code.
// https://github.com/opencontainers/distribution-spec/blob/main/spec.md#error-codes
type regError struct {
	Status     int
	Code       string
	Message    string
	RetryAfter int // seconds; sent as Retry-After when > 0
}

func regErr(status int, code, message string) *regError {
	return &regError{Status: status, Code: code, Message: message}
}

func (e *regError) Error() string { return e.Code + ": " + e.Message }

func unsupported(method string) *regError {
	return regErr(http.StatusMethodNotAllowed, "UNSUPPORTED", fmt.Sprintf("Nixery is a read-only registry: %s is not supported", method))
}

func (r *Registry) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	if err := r.serve(w, req); err != nil {
		r.writeError(w, req, err)
	}
}

func (r *Registry) serve(w http.ResponseWriter, req *http.Request) error {
	w.Header().Set("Docker-Distribution-API-Version", "registry/2.0")
	p := parsePath(req.URL.EscapedPath())
	route.Name(req, p.label())
	var handle func(w http.ResponseWriter, req *http.Request, name, ref string) error
	switch p.endpoint {
	case uploads:
		// Uploads are the push side: no method of any upload path exists
		// here, GET (upload status) included. RFC 9110 §10.2.1: an empty
		// Allow says the resource allows no method at all.
		w.Header().Set("Allow", "")
		return regErr(http.StatusMethodNotAllowed, "UNSUPPORTED", "Nixery is a read-only registry: blob uploads are not supported")
	case base:
		handle = r.base
	case manifests:
		handle = r.manifest
	case blobs:
		handle = r.blob
	case referrers:
		handle = r.referrers
	case tags:
		handle = r.tags
	default:
		// The spec has no code for "no such endpoint". NAME_UNKNOWN would
		// tell the client that a repository is missing, which is false
		// (every name exists here, built on demand); UNSUPPORTED is the
		// spec's code for an operation this registry does not implement,
		// and 404 is what the path is.
		return regErr(http.StatusNotFound, "UNSUPPORTED", "no such endpoint in the registry API: "+req.URL.Path)
	}
	if req.Method != http.MethodGet && req.Method != http.MethodHead {
		w.Header().Set("Allow", "GET, HEAD")
		return unsupported(req.Method)
	}
	if p.endpoint != base && !image.ValidName(p.name) {
		return regErr(http.StatusBadRequest, "NAME_INVALID", fmt.Sprintf("invalid repository name %q", p.name))
	}
	return handle(w, req, p.name, p.ref)
}

// base answers GET/HEAD /v2/: this is a registry.
// https://github.com/opencontainers/distribution-spec/blob/main/spec.md#determining-support
func (r *Registry) base(w http.ResponseWriter, req *http.Request, _, _ string) error {
	return writeBody(w, req, "application/json", "", []byte("{}"))
}

// Unauthorized answers a request that access.Guard turned away (it has
// set the WWW-Authenticate challenge): 401 with the spec's UNAUTHORIZED
// error body, as clients expect before they send credentials.
// https://github.com/opencontainers/distribution-spec/blob/main/spec.md#error-codes
func (r *Registry) Unauthorized(w http.ResponseWriter, req *http.Request) {
	w.Header().Set("Docker-Distribution-API-Version", "registry/2.0")
	r.writeError(w, req, regErr(http.StatusUnauthorized, "UNAUTHORIZED", "authentication required: log in with a user of this Nixery"))
}

// Refused answers a request that access.Guard turned away: err nil is
// Unauthorized; else the login was refused unchecked (too many failed
// lately, or too many waiting), 429 TOOMANYREQUESTS with Retry-After.
func (r *Registry) Refused(w http.ResponseWriter, req *http.Request, err error) {
	// The refusal answers for the route the path asked for.
	route.Name(req, parsePath(req.URL.EscapedPath()).label())
	if err == nil {
		r.Unauthorized(w, req)
		return
	}
	w.Header().Set("Docker-Distribution-API-Version", "registry/2.0")
	r.writeError(w, req, err)
}

func blobUnknown(d digest.Digest) *regError {
	return regErr(http.StatusNotFound, "BLOB_UNKNOWN", fmt.Sprintf("blob %s is not known to this registry", d))
}

// manifest answers GET/HEAD /v2/<name>/manifests/<reference>.
// https://github.com/opencontainers/distribution-spec/blob/main/spec.md#pulling-manifests
func (r *Registry) manifest(w http.ResponseWriter, req *http.Request, name, ref string) error {
	// A digest has a colon and never a slash; a reference with a slash
	// (refs%2Fheads%2Fmain, see parsePath) is an invalid tag, which
	// image.Parse answers with MANIFEST_UNKNOWN naming it.
	if strings.Contains(ref, ":") && !strings.Contains(ref, "/") {
		d, err := parseDigest(ref)
		if err != nil {
			return err
		}
		data, err := r.manifestBlob(req.Context(), d)
		if err != nil {
			return err
		}
		mt := manifest.MediaType(data)
		if mt == "" {
			// A config blob (JSON, small) is not a manifest either.
			return notManifest(d)
		}
		if r.Uses != nil && manifest.IsImage(data) {
			// An artifact (an SBOM, a signature) lives as long as its
			// image, however often it is pulled.
			r.Uses.RecordDigestPull(req.Context(), d)
		}
		return writeBody(w, req, mt, d, data)
	}

	if subject, suffix, ok := image.ReferrersTag(ref); ok {
		return r.referrersTag(w, req, ref, subject, suffix)
	}
	ireq, err := image.Parse(name, ref)
	if err != nil {
		return err
	}
	mt := manifest.Negotiate(req.Header.Values("Accept"))
	data, d, err := r.Builder.Manifest(req.Context(), ireq, mt)
	if err != nil {
		return err
	}
	return writeBody(w, req, mt, d, data)
}

// MaxManifestSize is the largest blob read as a manifest (manifest.MaxSize).
const MaxManifestSize = manifest.MaxSize

func notManifest(d digest.Digest) *regError {
	return regErr(http.StatusNotFound, "MANIFEST_UNKNOWN", fmt.Sprintf("%s is not a manifest", d))
}

// manifestBlob reads blob d if it can be a manifest. Layer digests are
// public, so a client may ask for a layer of hundreds of megabytes as a
// manifest: its size (known once it is opened, one request) is checked
// before anything is read, and no more than MaxManifestSize bytes are
// ever read, so such requests cost no memory however many arrive at once.
func (r *Registry) manifestBlob(ctx context.Context, d digest.Digest) ([]byte, error) {
	data, err := metadata.ReadManifest(ctx, r.Storage, d)
	switch {
	case errors.Is(err, manifest.ErrNotManifest):
		return nil, notManifest(d)
	case errors.Is(err, storage.ErrNotFound):
		return nil, regErr(http.StatusNotFound, "MANIFEST_UNKNOWN", fmt.Sprintf("manifest %s is not known to this registry", d))
	}
	return data, err
}

// referrers answers GET/HEAD /v2/<name>/referrers/<digest>: the
// manifests whose subject is that digest (the image's SBOMs, provenance
// and signature bundles), filtered by artifactType if asked, which is
// then said in OCI-Filters-Applied. The spec asks for 200 whether or not
// the subject exists (a 404 would say the registry lacks the API), and
// 400 for a bad digest.
// https://github.com/opencontainers/distribution-spec/blob/main/spec.md#listing-referrers
func (r *Registry) referrers(w http.ResponseWriter, req *http.Request, _, ref string) error {
	subject, err := parseDigest(ref)
	if err != nil {
		return err
	}
	set, err := r.findReferrers(req.Context(), subject)
	if err != nil {
		return err
	}
	manifests := set.Manifests
	if req.URL.Query().Has("artifactType") {
		types := req.URL.Query()["artifactType"]
		manifests = slices.DeleteFunc(slices.Clone(manifests), func(m v1.Descriptor) bool { return !slices.Contains(types, m.ArtifactType) })
		w.Header().Set("OCI-Filters-Applied", "artifactType")
	}
	body, err := artifact.IndexOf(manifests)
	if err != nil {
		return err
	}
	return writeBody(w, req, v1.MediaTypeImageIndex, "", body)
}

// findReferrers finds the artifacts of subject; none is an empty set.
func (r *Registry) findReferrers(ctx context.Context, subject digest.Digest) (metadata.Referrers, error) {
	if r.Referrers == nil {
		return metadata.Referrers{}, nil
	}
	set, err := r.Referrers.Referrers(ctx, subject)
	if errors.Is(err, storage.ErrNotFound) {
		return metadata.Referrers{}, nil
	}
	return set, err
}

// referrersTag answers a manifest request for a tag of the referrers tag
// schema: "sha256-<hex>" is the index of the artifacts of sha256:<hex>
// (for clients without the referrers API), "sha256-<hex>.sig" and ".att"
// are cosign's signature and attestation manifests. A tag that names
// nothing is MANIFEST_UNKNOWN, like any tag that names no manifest.
// https://github.com/opencontainers/distribution-spec/blob/main/spec.md#referrers-tag-schema
func (r *Registry) referrersTag(w http.ResponseWriter, req *http.Request, tag string, subject digest.Digest, suffix string) error {
	set, err := r.findReferrers(req.Context(), subject)
	if err != nil {
		return err
	}
	unknown := regErr(http.StatusNotFound, "MANIFEST_UNKNOWN", fmt.Sprintf("no artifact of %s is tagged %q here", subject, tag))
	if suffix == "" {
		if len(set.Manifests) == 0 {
			return unknown
		}
		body, err := artifact.IndexOf(set.Manifests)
		if err != nil {
			return err
		}
		return writeBody(w, req, v1.MediaTypeImageIndex, digest.FromBytes(body), body)
	}
	d, ok := set.Tags[tag]
	if !ok {
		return unknown
	}
	data, err := r.manifestBlob(req.Context(), d)
	if err != nil {
		return err
	}
	return writeBody(w, req, manifest.MediaType(data), d, data)
}

// tags answers GET /v2/<name>/tags/list. Every image exists under
// "latest" (it is built on demand); other tags select revisions of a git
// package source, which are not enumerated here.
// https://github.com/opencontainers/distribution-spec/blob/main/spec.md#listing-tags
func (r *Registry) tags(w http.ResponseWriter, req *http.Request, name, _ string) error {
	tags := []string{"latest"}
	if last := req.URL.Query().Get("last"); last != "" && last >= "latest" {
		tags = []string{}
	}
	if n := req.URL.Query().Get("n"); n == "0" {
		tags = []string{}
	}
	body, err := json.Marshal(map[string]any{"name": name, "tags": tags})
	if err != nil {
		return err
	}
	return writeBody(w, req, "application/json", "", body)
}

// blob answers GET/HEAD /v2/<name>/blobs/<digest>, with Range support.
// https://github.com/opencontainers/distribution-spec/blob/main/spec.md#pulling-blobs
func (r *Registry) blob(w http.ResponseWriter, req *http.Request, name, ref string) error {
	d, err := parseDigest(ref)
	if err != nil {
		return err
	}
	// A bucket backend may send the client to the bucket instead: a
	// short-lived signed URL, so blobs do not flow through Nixery.
	if url, ok, err := storage.RedirectURL(req.Context(), r.Storage, d); err != nil {
		return err
	} else if ok {
		size, err := r.Storage.Stat(req.Context(), d)
		if errors.Is(err, storage.ErrNotFound) {
			return blobUnknown(d)
		}
		if err != nil {
			return err
		}
		h := w.Header()
		h.Set("Docker-Content-Digest", d.String())
		if req.Method == http.MethodHead {
			// HEAD answers here, with the size, rather than redirecting.
			h.Set("Content-Type", "application/octet-stream")
			h.Set("Content-Length", strconv.FormatInt(size, 10))
			w.WriteHeader(http.StatusOK)
			return nil
		}
		h.Set("Content-Length", "0")
		h.Set("Location", url)
		w.WriteHeader(http.StatusTemporaryRedirect)
		return nil
	}
	blob, err := r.Storage.Open(req.Context(), d)
	if errors.Is(err, storage.ErrNotFound) {
		return blobUnknown(d)
	}
	if err != nil {
		return err
	}
	defer blob.Close()
	h := w.Header()
	h.Set("Content-Type", "application/octet-stream")
	h.Set("Docker-Content-Digest", d.String())
	h.Set("Cache-Control", "max-age=31536000, immutable")
	h.Set("Etag", `"`+d.String()+`"`)
	if rg := req.Header.Get("Range"); strings.Count(rg, ",") >= maxRanges {
		// Each range is a part of its own with its own headers: very
		// many tiny ones cost far more than the bytes they ask for, and
		// no client needs them (a pull resumes with one). RFC 9110
		// §14.2 lets a server ignore such a Range; the answer is the
		// whole blob, as for a plain GET.
		req.Header.Del("Range")
	}
	// ServeContent handles Range, If-Range, HEAD and Content-Length.
	http.ServeContent(w, req, "", zeroTime, blob)
	return nil
}

// maxRanges is the most ranges one Range header of a blob request may
// ask for (as Apache's MaxRanges and nginx's max_ranges bound them).
const maxRanges = 16

func parseDigest(s string) (digest.Digest, error) {
	d, err := digest.Parse(s)
	if err != nil {
		return "", regErr(http.StatusBadRequest, "DIGEST_INVALID", fmt.Sprintf("invalid digest %q: %v", s, err))
	}
	if d.Algorithm() != digest.SHA256 {
		return "", regErr(http.StatusBadRequest, "DIGEST_INVALID", fmt.Sprintf("unsupported digest algorithm %q: this registry uses sha256", d.Algorithm()))
	}
	return d, nil
}

// writeBody sends a complete answer with the headers every success needs.
func writeBody(w http.ResponseWriter, req *http.Request, contentType string, d digest.Digest, body []byte) error {
	h := w.Header()
	h.Set("Content-Type", contentType)
	h.Set("Content-Length", strconv.Itoa(len(body)))
	if d != "" {
		h.Set("Docker-Content-Digest", d.String())
		h.Set("Etag", `"`+d.String()+`"`)
	}
	w.WriteHeader(http.StatusOK)
	if req.Method != http.MethodHead {
		w.Write(body)
	}
	return nil
}

// writeError is the one place that turns an error into an answer: a spec
// error body (https://github.com/opencontainers/distribution-spec/blob/main/spec.md#error-codes).
func (r *Registry) writeError(w http.ResponseWriter, req *http.Request, err error) {
	re := classify(err)
	logger := r.Logger
	if logger == nil {
		logger = slog.Default()
	}
	level := slog.LevelInfo
	logged := any(err)
	if re.Status >= 500 {
		level = slog.LevelError
	} else {
		// A client error is about the client's input, which its message
		// may quote: only so much of it is repeated, in the answer and
		// in the log.
		re = &regError{Status: re.Status, Code: re.Code, Message: Cut(re.Message, maxEcho), RetryAfter: re.RetryAfter}
		logged = re.Error()
	}
	logger.Log(req.Context(), level, "request failed", "method", req.Method, "path", Cut(req.URL.Path, MaxLoggedPath),
		"status", re.Status, "code", re.Code, "error", logged)
	body := encodeError(re)
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("Content-Length", strconv.Itoa(len(body)))
	if re.RetryAfter > 0 {
		h.Set("Retry-After", strconv.Itoa(re.RetryAfter))
	}
	w.WriteHeader(re.Status)
	if req.Method != http.MethodHead {
		w.Write(body)
	}
}

// What an answer or a log line repeats of a request: a client chooses
// its path (up to the 64 KiB of the server's header limit), so that log
// lines and error answers have a bounded length whatever it sends.
const (
	// maxEcho is how much of a client error's message is sent and
	// logged.
	maxEcho = 2 << 10
	// MaxLoggedPath is how much of a path a log line shows, here and in
	// the request log (slog's quoting makes at most four bytes of each:
	// \x00).
	MaxLoggedPath = 256
)

// Cut returns s cut to at most n bytes, at a character boundary, marked
// with how long it was.
func Cut(s string, n int) string {
	if len(s) <= n {
		return s
	}
	i := n
	for i > 0 && !utf8.RuneStart(s[i]) {
		i--
	}
	return s[:i] + fmt.Sprintf("… [%d bytes]", len(s))
}

// classify maps an error to a registry error: the registry's own carry
// their code; any other says its kind (package fault), and the kind
// decides the status, the Retry-After and the spec code.
// https://github.com/opencontainers/distribution-spec/blob/main/spec.md#error-codes
func classify(err error) *regError {
	var re *regError
	if errors.As(err, &re) {
		return re
	}
	f := fault.Of(err)
	return &regError{Status: f.Kind.Status(), Code: specCode(f.Kind), Message: fault.Message(err), RetryAfter: f.RetrySeconds()}
}

// specCode is the spec's error code of a kind. Only a manifest request
// meets errors of other packages (image.Parse, Builder.Manifest): what it
// does not find is a manifest and what is invalid is the name, while the
// registry's own errors say BLOB_UNKNOWN, DIGEST_INVALID, UNSUPPORTED.
func specCode(k fault.Kind) string {
	switch k {
	case fault.NotFound:
		// An unknown package, a tag that names no revision (or a
		// commit Nix found missing), an invalid tag.
		return "MANIFEST_UNKNOWN"
	case fault.Invalid:
		return "NAME_INVALID"
	case fault.TooMany:
		// A client over its build rate (images already built are still
		// served), too many logins or build streams, a full build queue.
		return "TOOMANYREQUESTS"
	case fault.Unavailable:
		// Retryable: a replica shutting down, storage down, a package
		// set this Nix cannot evaluate. UNAVAILABLE is CNCF
		// distribution's code for it.
		return "UNAVAILABLE"
	case fault.Denied:
		// No client certificate (NIXERY_TLS_CLIENT_CA): the spec's
		// "requested access to the resource is denied".
		return "DENIED"
	}
	// Internal, and a client gone away (its status is for the log only).
	return "UNKNOWN"
}
