package registry

import (
	"encoding/json"
	"fmt"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/nixery/nixery/internal/access"
	"github.com/nixery/nixery/internal/fault"
	"github.com/nixery/nixery/internal/nix"
	"github.com/nixery/nixery/internal/sourcehealth"
)

// TestRateLimited: a client over its build rate gets 429 TOOMANYREQUESTS
// with Retry-After in whole seconds, rounded up, at least 1.
func TestRateLimited(t *testing.T) {
	r := &Registry{}
	for _, tt := range []struct {
		wait  time.Duration
		retry string
	}{{1500 * time.Millisecond, "2"}, {10 * time.Millisecond, "1"}, {0, "1"}, {time.Minute, "60"}} {
		rec := httptest.NewRecorder()
		err := fmt.Errorf("building shell/git: %w", &access.RateLimitedError{RetryAfter: tt.wait})
		r.writeError(rec, httptest.NewRequest("GET", "/v2/shell/git/manifests/latest", nil), err)
		var body struct {
			Errors []struct{ Code, Message string }
		}
		json.Unmarshal(rec.Body.Bytes(), &body)
		if rec.Code != 429 || len(body.Errors) != 1 || body.Errors[0].Code != "TOOMANYREQUESTS" {
			t.Errorf("%v: %d %s", tt.wait, rec.Code, rec.Body)
		}
		if got := rec.Header().Get("Retry-After"); got != tt.retry {
			t.Errorf("%v: Retry-After %q, want %q", tt.wait, got, tt.retry)
		}
	}
}

func TestUnauthorized(t *testing.T) {
	rec := httptest.NewRecorder()
	(&Registry{}).Unauthorized(rec, httptest.NewRequest("GET", "/v2/", nil))
	if rec.Code != 401 || rec.Header().Get("Content-Type") != "application/json" ||
		rec.Body.String() != `{"errors":[{"code":"UNAUTHORIZED","message":"authentication required: log in with a user of this Nixery"}]}` {
		t.Errorf("%d %v %s", rec.Code, rec.Header(), rec.Body)
	}
}

// A login refused unchecked (too many failures from the client) is the
// spec's TOOMANYREQUESTS, with the Retry-After the guard set.
func TestRefusedLogin(t *testing.T) {
	rec := httptest.NewRecorder()
	(&Registry{}).Refused(rec, httptest.NewRequest("GET", "/v2/", nil), &access.LoginLimitedError{RetryAfter: 5500 * time.Millisecond})
	var body struct {
		Errors []struct{ Code, Message string }
	}
	json.Unmarshal(rec.Body.Bytes(), &body)
	if rec.Code != 429 || len(body.Errors) != 1 || body.Errors[0].Code != "TOOMANYREQUESTS" || rec.Header().Get("Retry-After") != "6" ||
		rec.Header().Get("Docker-Distribution-API-Version") != "registry/2.0" {
		t.Errorf("%d %v %s", rec.Code, rec.Header(), rec.Body)
	}
	rec = httptest.NewRecorder()
	(&Registry{}).Refused(rec, httptest.NewRequest("GET", "/v2/", nil), nil)
	if rec.Code != 401 {
		t.Errorf("no error: %d, want 401", rec.Code)
	}
}

// A package set this Nix cannot evaluate is the server's fault, which
// its operator can fix while it runs: 503 UNAVAILABLE with Retry-After,
// the message naming Nix's reason.
func TestSourceFault(t *testing.T) {
	rec := httptest.NewRecorder()
	err := fmt.Errorf("building shell/git: %w", &sourcehealth.FaultError{Source: "local path /srv/pkgs", Nix: "Nix 2.8.0",
		Reason: "This version of Nixpkgs requires Nix >= 2.18.0, please upgrade", RetryAfter: time.Minute})
	(&Registry{}).writeError(rec, httptest.NewRequest("GET", "/v2/shell/git/manifests/latest", nil), err)
	var body struct {
		Errors []struct{ Code, Message string }
	}
	json.Unmarshal(rec.Body.Bytes(), &body)
	want := "the package source (local path /srv/pkgs) cannot be evaluated by Nix 2.8.0: This version of Nixpkgs requires Nix >= 2.18.0, please upgrade"
	if rec.Code != 503 || len(body.Errors) != 1 || body.Errors[0].Code != "UNAVAILABLE" || body.Errors[0].Message != want ||
		rec.Header().Get("Retry-After") != "60" {
		t.Errorf("%d %v %s", rec.Code, rec.Header(), rec.Body)
	}
}

// The registry renders an error from the kind it reports, whatever its
// package: the kind gives the status, Retry-After and spec code.
func TestKinds(t *testing.T) {
	for _, tt := range []struct {
		f      fault.Fault
		status int
		code   string
		retry  string
	}{
		{fault.Fault{Kind: fault.NotFound}, 404, "MANIFEST_UNKNOWN", ""},
		{fault.Fault{Kind: fault.Invalid}, 400, "NAME_INVALID", ""},
		{fault.Fault{Kind: fault.TooMany, RetryAfter: 2500 * time.Millisecond}, 429, "TOOMANYREQUESTS", "3"},
		{fault.Fault{Kind: fault.Unavailable, RetryAfter: time.Second}, 503, "UNAVAILABLE", "1"},
		{fault.Fault{Kind: fault.Denied}, 403, "DENIED", ""},
		{fault.Fault{Kind: fault.Internal}, 500, "UNKNOWN", ""},
	} {
		rec := httptest.NewRecorder()
		err := fmt.Errorf("somewhere: %w", fault.New("it failed", tt.f))
		(&Registry{}).writeError(rec, httptest.NewRequest("GET", "/v2/hello/manifests/latest", nil), err)
		var body struct {
			Errors []struct{ Code, Message string }
		}
		json.Unmarshal(rec.Body.Bytes(), &body)
		if rec.Code != tt.status || len(body.Errors) != 1 || body.Errors[0].Code != tt.code || body.Errors[0].Message != "somewhere: it failed" ||
			rec.Header().Get("Retry-After") != tt.retry {
			t.Errorf("%+v: %d %v %s", tt.f, rec.Code, rec.Header(), rec.Body)
		}
	}
}

// An unknown package's close names (builder.Builder.Suggest) are in the
// MANIFEST_UNKNOWN message a client shows.
func TestUnknownPackageSuggestions(t *testing.T) {
	rec := httptest.NewRecorder()
	err := (&nix.UnknownPackagesError{Packages: []string{"helo"}}).WithSuggestions(map[string][]string{"helo": {"hello", "help"}})
	(&Registry{}).writeError(rec, httptest.NewRequest("GET", "/v2/shell/helo/manifests/latest", nil), err)
	var body struct {
		Errors []struct{ Code, Message string }
	}
	json.Unmarshal(rec.Body.Bytes(), &body)
	if rec.Code != 404 || len(body.Errors) != 1 || body.Errors[0].Code != "MANIFEST_UNKNOWN" ||
		body.Errors[0].Message != "unknown package(s): helo (did you mean hello or help?)" {
		t.Errorf("%d %s", rec.Code, rec.Body)
	}
}
