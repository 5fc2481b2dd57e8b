package web

import (
	"context"
	"log/slog"
	"strings"
	"testing"

	"github.com/nixery/nixery/internal/nix"
	"github.com/nixery/nixery/internal/search"
)

// fakeSearch answers every query with one package, or fails with err; it
// records the limit it was asked for.
type fakeSearch struct {
	err   error
	limit int
}

func (f *fakeSearch) Search(_ context.Context, q string, limit int) (*search.Answer, error) {
	f.limit = limit
	if f.err != nil {
		return nil, f.err
	}
	return &search.Answer{Query: q, Total: 1, Packages: 3, Revision: "abc123", Results: []search.Result{
		{Package: nix.Package{Attr: "hello", Version: "2.12.1", Description: "A program that produces a familiar, friendly greeting"}, Image: "hello"},
	}}, nil
}

// The search page and API render what the search answers, and its
// errors with their status, without Nix: web asks search.Searcher
// through an interface (TestPages asks a real one).
func TestSearchPagesFake(t *testing.T) {
	for _, tt := range []struct {
		path      string
		err       error
		status    int
		retry     string
		limit     int
		contains  []string
		wantsJSON bool
	}{
		{"/search?q=hello", nil, 200, "", 50, []string{`href="/image/hello"`, "2.12.1", "familiar, friendly greeting"}, false},
		{"/api/search?q=hello&limit=7", nil, 200, "", 7, []string{`"query":"hello"`, `"total":1`, `"packages":3`, `"revision":"abc123"`, `"attr":"hello"`, `"image":"hello"`}, true},
		{"/api/search?q=x&limit=9999", nil, 200, "", 500, []string{`"attr":"hello"`}, true},
		{"/api/search?q=x", &search.QueryError{Message: "search query too long: 201 bytes, at most 200"}, 400, "", 50, []string{`"error":"search query too long: 201 bytes, at most 200"`}, true},
		{"/search?q=x", &search.QueryError{Message: "search query too long: 201 bytes, at most 200"}, 400, "", 50, []string{"search query too long", "Package search"}, false},
		{"/api/search?q=x", search.ErrIndexing, 503, "5", 50, []string{"the package list is being made"}, true},
		{"/search?q=x", search.ErrResolving, 503, "5", 50, []string{"the package source is being resolved"}, false},
	} {
		f := &fakeSearch{err: tt.err}
		s := &Site{Version: "test", Search: f, Logger: slog.New(slog.DiscardHandler)}
		rec := get(t, s, "GET", tt.path)
		body := rec.Body.String()
		if rec.Code != tt.status || rec.Header().Get("Retry-After") != tt.retry {
			t.Errorf("%s = %d, Retry-After %q; want %d, %q: %s", tt.path, rec.Code, rec.Header().Get("Retry-After"), tt.status, tt.retry, body)
		}
		if ct := rec.Header().Get("Content-Type"); strings.HasPrefix(ct, "application/json") != tt.wantsJSON {
			t.Errorf("%s: Content-Type %q", tt.path, ct)
		}
		if f.limit != tt.limit {
			t.Errorf("%s: asked for %d results, want %d", tt.path, f.limit, tt.limit)
		}
		for _, want := range tt.contains {
			if !strings.Contains(body, want) {
				t.Errorf("%s: body lacks %q:\n%s", tt.path, want, body)
			}
		}
	}
}
