package web

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http/httptest"
	"strconv"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/nixery/nixery/internal/access"
	"github.com/nixery/nixery/internal/builder"
	"github.com/nixery/nixery/internal/image"
	"github.com/nixery/nixery/internal/nix"
	"github.com/nixery/nixery/internal/registry"
	"github.com/nixery/nixery/internal/search"
	"github.com/nixery/nixery/internal/sourcehealth"
	"github.com/nixery/nixery/internal/storage"
)

// failingBuilder is a registry.Builder whose every manifest fails with
// err: it lets the registry's own error writer answer each error kind.
type failingBuilder struct{ err error }

func (f failingBuilder) Manifest(context.Context, *image.Request, string) ([]byte, digest.Digest, error) {
	return nil, "", f.err
}

// Every error kind gets the same status (and Retry-After) from a page or
// API of the web as from the registry API, so that a page and a pull of
// the same image fail alike.
func TestErrorStatusAgreesWithRegistry(t *testing.T) {
	for _, tt := range []struct {
		name       string
		err        error
		status     int
		retryAfter int
		webOnly    bool // an error of the web's own, which no pull meets
	}{
		{"invalid name", &image.Error{Code: "NAME_INVALID", Message: `invalid repository name "A"`}, 400, 0, false},
		{"unknown package", fmt.Errorf("build: %w", &nix.UnknownPackagesError{Packages: []string{"nosuchpkg"}}), 404, 0, false},
		{"unknown revision", &nix.UnknownRevisionError{Source: "git repo", Tag: "v9"}, 404, 0, false},
		{"unknown commit", fmt.Errorf("build: %w", &nix.UnknownRevisionError{Rev: "0123456789abcdef0123456789abcdef01234567"}), 404, 0, false},
		{"busy", fmt.Errorf("queue: %w", builder.ErrBusy), 429, 10, false},
		{"draining", builder.ErrDraining, 503, 2, false},
		{"rate limited", fmt.Errorf("admit: %w", &access.RateLimitedError{RetryAfter: 2500 * time.Millisecond}), 429, 3, false},
		{"storage outage", fmt.Errorf("manifest cache: %w", storage.ErrUnavailable), 503, 5, false},
		{"nix timeout", fmt.Errorf("realise: %w", nix.ErrTimeout), 500, 0, false},
		{"nix failed", &nix.BuildError{Tail: []string{"error: builder failed"}, Err: errors.New("exit status 1")}, 500, 0, false},
		{"client gone", fmt.Errorf("resolve: %w", context.Canceled), 499, 0, false},
		{"anything else", errors.New("disk on fire"), 500, 0, false},
		{"query too long", &search.QueryError{Message: "search query too long"}, 400, 0, true},
		{"package list in the making", search.ErrIndexing, 503, 5, true},
		{"source being resolved", search.ErrResolving, 503, 5, true},
		{"source Nix cannot evaluate", fmt.Errorf("build: %w", &sourcehealth.FaultError{Nix: "Nix 2.8.0", Reason: "too old", RetryAfter: 30 * time.Second}), 503, 30, false},
	} {
		status, retryAfter := errorStatus(tt.err)
		if status != tt.status || retryAfter != tt.retryAfter {
			t.Errorf("%s: web gives %d (Retry-After %d), want %d (%d)", tt.name, status, retryAfter, tt.status, tt.retryAfter)
		}

		// What the web writes: the status, Retry-After and a JSON error
		// for the API.
		s := &Site{}
		rec := httptest.NewRecorder()
		s.failErr(rec, httptest.NewRequest("GET", "/api/image/hello", nil), tt.err)
		var body map[string]string
		if err := json.Unmarshal(rec.Body.Bytes(), &body); err != nil || body["error"] == "" {
			t.Errorf("%s: web API error body %q: %v", tt.name, rec.Body, err)
		}
		if rec.Code != tt.status || rec.Header().Get("Retry-After") != retryHeader(tt.retryAfter) {
			t.Errorf("%s: web writes %d, Retry-After %q", tt.name, rec.Code, rec.Header().Get("Retry-After"))
		}
		if tt.webOnly {
			continue
		}

		// What the registry writes for the same error.
		reg := &registry.Registry{Builder: failingBuilder{tt.err}}
		rec = httptest.NewRecorder()
		reg.ServeHTTP(rec, httptest.NewRequest("GET", "/v2/hello/manifests/latest", nil))
		if rec.Code != tt.status || rec.Header().Get("Retry-After") != retryHeader(tt.retryAfter) {
			t.Errorf("%s: registry writes %d, Retry-After %q; want %d, %q", tt.name, rec.Code, rec.Header().Get("Retry-After"), tt.status, retryHeader(tt.retryAfter))
		}
	}
}

func retryHeader(seconds int) string {
	if seconds == 0 {
		return ""
	}
	return strconv.Itoa(seconds)
}
