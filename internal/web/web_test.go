package web

import (
	"bufio"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nixery/nixery/internal/builder"
	"github.com/nixery/nixery/internal/builder/buildertest"
	"github.com/nixery/nixery/internal/search"
)

// newSite returns a site over a real Builder and the demo package set
// (as build's tests do), with a real search over them, skipping when Nix
// is missing.
func newSite(t *testing.T) *Site {
	t.Helper()
	b := buildertest.New(t)
	return &Site{Builder: b, Version: "test", Search: &search.Searcher{Nix: b.Nix, Source: b.Source, Metadata: b.Metadata()}}
}

// get serves one request and returns the answer.
func get(t *testing.T, h http.Handler, method, path string) *httptest.ResponseRecorder {
	t.Helper()
	req := httptest.NewRequest(method, path, nil)
	req.Host = "registry.example:5000"
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	return rec
}

func TestPages(t *testing.T) {
	s := newSite(t)
	for _, tt := range []struct {
		method, path string
		status       int
		contentType  string
		contains     []string
	}{
		{"GET", "/", 200, "text/html", []string{"registry.example:5000/shell/git/htop", "demo set", "--tls-verify=false", "bashInteractive, coreutils", `action="/search"`, "/shell/python3.withpackages.numpy.requests"}},
		{"HEAD", "/", 200, "text/html", nil},
		{"GET", "/search?q=hello", 200, "text/html", []string{`href="/image/hello"`, "2.12.1", "familiar, friendly greeting"}},
		{"GET", "/search?q=", 200, "text/html", []string{"Package search"}},
		{"GET", "/api/search?q=xe", 200, "application/json", []string{`"attr":"xorg.xev"`, `"image":"xorg.xev"`}},
		{"GET", "/api/search?q=zzznothing", 200, "application/json", []string{`"total":0`, `"results":[]`}},
		{"GET", "/api/search?q=hello+hello++hello", 200, "application/json", []string{`"attr":"hello"`}},
		{"GET", "/api/search?q=a+b+c+d+e+f+g+h+i", 400, "application/json", []string{`"error":"search query has too many words: 9, at most 8"`}},
		{"GET", "/api/search?q=" + strings.Repeat("x", 201), 400, "application/json", []string{`"error":"search query too long: 201 bytes, at most 200"`}},
		{"GET", "/search?q=" + strings.Repeat("x", 201), 400, "text/html", []string{"search query too long: 201 bytes, at most 200", "Package search"}},
		{"GET", "/image/hello", 200, "text/html", []string{"not built yet", `href="/build/hello" rel="nofollow"`, "docker pull registry.example:5000/hello"}},
		{"GET", "/image/shell/hello:latest", 200, "text/html", []string{"registry.example:5000/shell/hello", `href="/build/shell/hello" rel="nofollow"`}},
		{"GET", "/image/shell/hello:v1", 404, "text/html", []string{"a local package set has only the tag latest"}},
		{"GET", "/image?name=shell/hello", 303, "", nil},
		{"GET", "/image/Hello", 400, "text/html", []string{"invalid repository name"}},
		{"GET", "/api/image/hello", 404, "application/json", []string{"not built yet"}},
		{"GET", "/api/image/a..b", 400, "application/json", []string{`"error"`}},
		{"GET", "/api/build/BAD/events", 400, "application/json", []string{"invalid repository name"}},
		{"GET", "/build/bad:..", 404, "text/html", []string{"invalid tag"}},
		{"GET", "/nope", 404, "text/html", []string{"no such page"}},
		{"POST", "/", 405, "text/html", nil},
		{"POST", "/image/hello", 405, "text/html", nil},
		{"POST", "/api/build/hello/events", 405, "application/json", nil},
		{"PUT", "/build/hello", 405, "text/html", nil},
		{"DELETE", "/api/search", 405, "application/json", nil},
		{"GET", "/robots.txt", 200, "text/plain", []string{"Disallow: /build/", "Disallow: /api/"}},
		{"GET", "/build/hello", 200, "text/html", []string{`<meta name="robots" content="noindex, nofollow">`, `action="/build/hello"`}},
		{"HEAD", "/build/hello", 200, "text/html", nil},
	} {
		rec := get(t, s, tt.method, tt.path)
		body := rec.Body.String()
		if rec.Code != tt.status {
			t.Errorf("%s %s = %d, want %d: %s", tt.method, tt.path, rec.Code, tt.status, body)
			continue
		}
		if ct := rec.Header().Get("Content-Type"); !strings.HasPrefix(ct, tt.contentType) {
			t.Errorf("%s %s: Content-Type %q, want %q", tt.method, tt.path, ct, tt.contentType)
		}
		for _, c := range tt.contains {
			if !strings.Contains(body, c) {
				t.Errorf("%s %s: body lacks %q:\n%s", tt.method, tt.path, c, body)
			}
		}
		if tt.method == "HEAD" && body != "" {
			t.Errorf("HEAD %s has a body", tt.path)
		}
		if tt.status == 405 {
			want := "GET, HEAD"
			if strings.HasPrefix(tt.path, "/build/") {
				want = "GET, HEAD, POST"
			}
			if got := rec.Header().Get("Allow"); got != want {
				t.Errorf("%s %s: Allow %q, want %q", tt.method, tt.path, got, want)
			}
		}
		if robots := rec.Header().Get("X-Robots-Tag"); strings.Contains(tt.path, "build/") != (robots != "") {
			t.Errorf("%s %s: X-Robots-Tag %q", tt.method, tt.path, robots)
		}
	}
	if rec := get(t, s, "GET", "/image?name=shell/hello"); rec.Header().Get("Location") != "/image/shell/hello" {
		t.Errorf("open form redirects to %q", rec.Header().Get("Location"))
	}
}

// readSSE reads every event of a text/event-stream answer.
func readSSE(t *testing.T, r io.Reader) []builder.Event {
	t.Helper()
	var events []builder.Event
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		data, ok := strings.CutPrefix(sc.Text(), "data: ")
		if !ok {
			continue
		}
		var e builder.Event
		if err := json.Unmarshal([]byte(data), &e); err != nil {
			t.Fatalf("event %q: %v", data, err)
		}
		events = append(events, e)
	}
	return events
}

func stream(t *testing.T, srv *httptest.Server, ref string) []builder.Event {
	t.Helper()
	resp, err := http.Get(srv.URL + EventsPath(ref))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "text/event-stream" {
		t.Fatalf("events of %s: %d %s", ref, resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	return readSSE(t, resp.Body)
}

// The progress stream of a build has its phases in order and ends with
// the result; the image page then shows what was built.
func TestBuildProgressStream(t *testing.T) {
	s := newSite(t)
	srv := httptest.NewServer(s)
	defer srv.Close()

	events := stream(t, srv, "shell/hello")
	var phases []string
	for _, e := range events {
		if e.Kind == "phase" {
			phases = append(phases, e.Phase)
		}
	}
	if !slices.Equal(phases, builder.Phases) {
		t.Errorf("phases %q, want %q", phases, builder.Phases)
	}
	if len(events) == 0 || events[0].Kind != "queued" {
		t.Errorf("first event: %+v", events)
	}
	// The pack's progress: in the pack phase, the last one complete.
	var packed []builder.Event
	phase := ""
	for _, e := range events {
		if e.Kind == "phase" {
			phase = e.Phase
		}
		if e.Kind == "progress" {
			if phase != "pack" || e.Phase != "pack" || e.Bytes > e.Total {
				t.Errorf("progress event %+v in phase %s", e, phase)
			}
			packed = append(packed, e)
		}
	}
	if len(packed) == 0 || packed[len(packed)-1].Bytes != packed[len(packed)-1].Total || packed[len(packed)-1].Total == 0 {
		t.Errorf("progress events %+v", packed)
	}
	last := events[len(events)-1]
	if last.Kind != "done" || !strings.HasPrefix(string(last.Digest), "sha256:") {
		t.Fatalf("last event %+v", last)
	}

	// Built now: a second stream is the cached result alone.
	again := stream(t, srv, "shell/hello")
	if len(again) != 1 || again[0].Kind != "done" || again[0].Digest != last.Digest {
		t.Errorf("second stream: %+v", again)
	}

	page := get(t, s, "GET", "/image/shell/hello").Body.String()
	for _, want := range []string{"hello-2.12.1", "customisation layer", "Closure", "docker pull registry.example:5000/shell/hello", string(last.Digest)} {
		if !strings.Contains(page, want) {
			t.Errorf("image page lacks %q", want)
		}
	}
	rec := get(t, s, "GET", "/api/image/shell/hello")
	var v ImageView
	if err := json.Unmarshal(rec.Body.Bytes(), &v); err != nil || rec.Code != 200 {
		t.Fatalf("api/image: %d %v", rec.Code, err)
	}
	if v.ClosureSize <= 0 || v.ImageSize <= 0 || len(v.Layers) < 2 || !v.Layers[len(v.Layers)-1].Customisation {
		t.Errorf("image view: closure %d, image %d, %d layers", v.ClosureSize, v.ImageSize, len(v.Layers))
	}

	// A second image shares layers (libcommon, busybox) with the first.
	if ev := stream(t, srv, "hello"); ev[len(ev)-1].Kind != "done" {
		t.Fatalf("hello: %+v", ev[len(ev)-1])
	}
	page = get(t, s, "GET", "/image/hello").Body.String()
	if !strings.Contains(page, `shared with <a href="/image/shell/hello">shell/hello</a>`) {
		t.Errorf("image page of hello shows no layer shared with shell/hello:\n%s", page)
	}
	// Its picture: hello's own path, its licence, why it is there.
	for _, want := range []string{`class="picture"`, "hello-2.12.1 · ", "licence: GPL-3.0-or-later", "why: hello-2.12.1 → libcommon-2.38"} {
		if !strings.Contains(page, want) {
			t.Errorf("the picture of hello lacks %q", want)
		}
	}
	// Compared: with shell/hello (built), with jq (not built: no build
	// starts, a link to it).
	page = get(t, s, "GET", "/image/hello?compare=shell/hello").Body.String()
	if !strings.Contains(page, `Compared with <a href="/image/shell/hello">shell/hello</a>`) || !strings.Contains(page, "<code>hello</code> alone") {
		t.Errorf("hello compared with shell/hello:\n%s", page)
	}
	rec = get(t, s, "GET", "/image/hello?compare=jq")
	if rec.Code != 200 || !strings.Contains(rec.Body.String(), `id="compare-missing"`) || !strings.Contains(rec.Body.String(), `href="/build/jq"`) {
		t.Errorf("hello compared with jq, not built: %d\n%s", rec.Code, rec.Body.String())
	}
	if len(s.Builder.Builds().Running) != 0 {
		t.Errorf("a comparison started a build")
	}
	// The index lists both as recently built.
	index := get(t, s, "GET", "/").Body.String()
	if !strings.Contains(index, `href="/image/hello"`) || !strings.Contains(index, `href="/image/shell/hello"`) {
		t.Errorf("index lacks the recent images")
	}
}

func TestBuildProgressStreamError(t *testing.T) {
	s := newSite(t)
	srv := httptest.NewServer(s)
	defer srv.Close()
	events := stream(t, srv, "hello/nosuchpkg")
	last := events[len(events)-1]
	if last.Kind != "error" || !strings.Contains(last.Message, "nosuchpkg") {
		t.Errorf("last event %+v", last)
	}
}

// A GET or HEAD of a build page (what a crawler or a link preview does)
// starts nothing, nor does the image page; the event stream, which the
// page's script opens, starts the build.
func TestBuildPageGetStartsNothing(t *testing.T) {
	s := newSite(t)
	for _, tt := range []struct{ method, path string }{
		{"GET", "/build/jq"},
		{"HEAD", "/build/jq"},
		{"GET", "/build/jq?started=1"},
		{"GET", "/image/jq"},
		{"HEAD", "/image/jq"},
		{"GET", "/api/image/jq"},
		{"HEAD", "/api/build/jq/events"},
	} {
		rec := get(t, s, tt.method, tt.path)
		if rec.Code >= 500 {
			t.Fatalf("%s %s = %d: %s", tt.method, tt.path, rec.Code, rec.Body)
		}
	}
	page := get(t, s, "GET", "/build/jq").Body.String()
	for _, want := range []string{"/api/build/", `data-phase="pack"`, `<meta name="robots" content="noindex, nofollow">`,
		`<form method="post" action="/build/jq">`} {
		if !strings.Contains(page, want) {
			t.Errorf("build page lacks %q:\n%s", want, page)
		}
	}
	if n := s.Builder.Stats().NixBuilds.Load(); n != 0 {
		t.Fatalf("%d Nix builds after GET and HEAD requests, want 0", n)
	}

	// Had any request above started the build, the stream would find it
	// cached or join it and replay events from before it was opened.
	srv := httptest.NewServer(s)
	defer srv.Close()
	opened := time.Now()
	events := stream(t, srv, "jq")
	if first, last := events[0], events[len(events)-1]; last.Kind != "done" || last.Message == "cached" || first.Time.Before(opened) {
		t.Errorf("events of jq, opened at %s: first %+v, last %+v", opened, first, last)
	}
	if n := s.Builder.Stats().NixBuilds.Load(); n != 1 {
		t.Errorf("%d Nix builds after the event stream, want 1", n)
	}
}

// Without JavaScript, the page's form POSTs: that starts the build and
// answers 303 See Other to the page.
func TestBuildPagePostStartsBuild(t *testing.T) {
	s := newSite(t)
	srv := httptest.NewServer(s)
	defer srv.Close()
	before := time.Now()
	rec := get(t, s, "POST", "/build/jq")
	if rec.Code != http.StatusSeeOther || rec.Header().Get("Location") != "/build/jq?started=1" {
		t.Fatalf("POST /build/jq = %d, Location %q: %s", rec.Code, rec.Header().Get("Location"), rec.Body)
	}
	// The POST started the build: the stream finds it done or in flight,
	// with events from before the stream was opened.
	opened := time.Now()
	events := stream(t, srv, "jq")
	first, last := events[0], events[len(events)-1]
	if last.Kind != "done" || (last.Message != "cached" && (first.Time.Before(before) || !first.Time.Before(opened))) {
		t.Errorf("events after the POST: first %+v, last %+v", first, last)
	}
	if n := s.Builder.Stats().NixBuilds.Load(); n != 1 {
		t.Errorf("%d Nix builds after POST and stream, want 1", n)
	}
	page := get(t, s, "GET", "/build/jq?started=1").Body.String()
	if !strings.Contains(page, "The build has started") {
		t.Errorf("page after the POST:\n%s", page)
	}
	if rec := get(t, s, "POST", "/build/Bad"); rec.Code != http.StatusBadRequest {
		t.Errorf("POST of an invalid name = %d", rec.Code)
	}
}
