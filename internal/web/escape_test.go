package web

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/nixery/nixery/internal/builder"
	"github.com/nixery/nixery/internal/image"
)

// Hostile input, as an attacker would put it in a link: tags that run a
// script and quotes that leave an attribute.
const (
	hostileTags  = `"'><script>alert(1337)</script><img src=x onerror=alert(1337)>`
	hostileQuote = `x" autofocus onfocus="alert(1337)`
)

// raw are what must never appear in an answer: the markup of the hostile
// input, unescaped.
var raw = []string{"<script>alert(1337)", "<img src=x", `onfocus="alert(1337)`, `'><`}

// Every page and API that echoes a name, tag, query, host or path escapes
// it: HTML-escaped in pages (and in their scripts, JSON with <, > and &
// escaped), JSON-escaped in the APIs.
func TestHostileInputIsEscaped(t *testing.T) {
	s := newSite(t)
	s.TrustProxy = true // so that X-Forwarded-Host is shown
	tags, quote := url.PathEscape(hostileTags), url.PathEscape(hostileQuote)
	for _, tt := range []struct {
		path   string
		host   string // X-Forwarded-Host, which the pull commands show
		status int
		echo   string // the escaped input that shows it was echoed
	}{
		{"/image/" + tags, "", 400, "&lt;script&gt;alert(1337)"},
		{"/image/" + quote, "", 400, "onfocus=\\&#34;alert(1337)"},
		{"/image/hello:" + tags, "", 404, "&lt;script&gt;alert(1337)"},
		{"/build/" + tags, "", 400, "&lt;script&gt;alert(1337)"},
		{"/build/hello:" + quote, "", 404, "onfocus=\\&#34;alert(1337)"},
		{"/api/image/" + tags, "", 400, `\u003cscript\u003ealert(1337)`},
		{"/api/build/" + tags + "/events", "", 400, `\u003cscript\u003ealert(1337)`},
		{"/search?q=" + url.QueryEscape(hostileTags), "", 200, "&lt;script&gt;alert(1337)"},
		{"/search?q=" + url.QueryEscape(hostileQuote), "", 200, "onfocus=&#34;alert(1337)"},
		{"/api/search?q=" + url.QueryEscape(hostileTags), "", 200, `\u003cscript\u003ealert(1337)`},
		{"/nope/" + tags, "", 404, "&lt;script&gt;alert(1337)"},
		{"/api/nope/" + tags, "", 404, `\u003cscript\u003ealert(1337)`},
		{"/", hostileTags, 200, "&lt;script&gt;alert(1337)"},
		{"/", hostileQuote, 200, "onfocus=&#34;alert(1337)"},
		{"/image/hello", hostileTags, 200, "&lt;script&gt;alert(1337)"},
		// The build page hands the pull commands to its script as JSON.
		{"/build/hello", hostileTags, 200, `\u003cscript\u003ealert(1337)`},
		{"/build/hello", hostileQuote, 200, `onfocus=\"alert(1337)`},
	} {
		req := httptest.NewRequest("GET", tt.path, nil)
		if tt.host != "" {
			req.Header.Set("X-Forwarded-Host", tt.host)
		}
		rec := httptest.NewRecorder()
		s.ServeHTTP(rec, req)
		body := rec.Body.String()
		if rec.Code != tt.status {
			t.Errorf("GET %s = %d, want %d: %s", tt.path, rec.Code, tt.status, body)
		}
		if !strings.Contains(body, tt.echo) {
			t.Errorf("GET %s (host %q) does not echo %q:\n%s", tt.path, tt.host, tt.echo, body)
		}
		for _, r := range raw {
			if strings.Contains(body, r) {
				t.Errorf("GET %s (host %q): answer has %q unescaped:\n%s", tt.path, tt.host, r, body)
			}
		}
		if strings.HasPrefix(tt.path, "/api/") && !json.Valid(rec.Body.Bytes()) {
			t.Errorf("GET %s: not JSON: %s", tt.path, body)
		}
		if rec.Header().Get("X-Content-Type-Options") != "nosniff" {
			t.Errorf("GET %s: no X-Content-Type-Options: nosniff", tt.path)
		}
	}

	// A built image compared with a hostile name: refused, escaped.
	hello, _ := image.ParseRef("hello")
	events, err := s.Builder.Watch(context.Background(), hello)
	if err != nil {
		t.Fatal(err)
	}
	for range events {
	}
	for _, other := range []string{hostileTags, hostileQuote, "hello:" + hostileTags} {
		rec := get(t, s, "GET", "/image/hello?compare="+url.QueryEscape(other))
		body := rec.Body.String()
		if rec.Code != 400 || !strings.Contains(body, `id="compare-error"`) {
			t.Errorf("compared with %q: %d\n%s", other, rec.Code, body)
		}
		for _, r := range raw {
			if strings.Contains(body, r) {
				t.Errorf("compared with %q: %q unescaped", other, r)
			}
		}
	}

	// The "open an image" form redirects within this site; the image page
	// then refuses the name, escaped.
	rec := get(t, s, "GET", "/image?name="+url.QueryEscape("//evil.example/"+hostileTags))
	if loc := rec.Header().Get("Location"); rec.Code != 303 || !strings.HasPrefix(loc, "/image/") || strings.HasPrefix(loc, "//") {
		t.Errorf("open form: %d to %q", rec.Code, loc)
	}
	for _, r := range raw {
		if strings.Contains(rec.Body.String(), r) {
			t.Errorf("open form: redirect body has %q unescaped: %s", r, rec.Body)
		}
	}
}

// An event carries any text (Nix's log lines, error messages) in one data
// line: line breaks and markup inside it cannot end the event or forge
// another.
func TestWriteEventHostile(t *testing.T) {
	e := builder.Event{Time: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC), Kind: "log",
		Message: "one\n\ndata: {\"kind\":\"done\"}\r\n\r\nevent: x\r" + hostileTags + "\u2028"}
	var buf bytes.Buffer
	if err := writeEvent(&buf, e); err != nil {
		t.Fatal(err)
	}
	out := buf.String()
	if !strings.HasPrefix(out, "data: ") || !strings.HasSuffix(out, "\n\n") || strings.ContainsAny(strings.TrimSuffix(out, "\n\n"), "\r\n") {
		t.Fatalf("event is not one data line: %q", out)
	}
	for _, r := range raw {
		if strings.Contains(out, r) {
			t.Errorf("event has %q unescaped: %q", r, out)
		}
	}
	events := readSSE(t, &buf)
	if len(events) != 1 || events[0].Message != e.Message || events[0].Kind != "log" || !events[0].Time.Equal(e.Time) {
		t.Errorf("read back %+v, want %+v", events, e)
	}
}

// X-Forwarded-Host and X-Forwarded-Proto change the pull commands only
// behind a trusted proxy (NIXERY_TRUST_PROXY): otherwise a client could
// have a cache in front of Nixery keep a page naming its own registry.
func TestForwardedHostOnlyFromATrustedProxy(t *testing.T) {
	for _, trust := range []bool{false, true} {
		s := newSite(t)
		s.TrustProxy = trust
		req := httptest.NewRequest("GET", "/image/hello", nil)
		req.Host = "nixery.example"
		req.Header.Set("X-Forwarded-Host", "evil.example")
		req.Header.Set("X-Forwarded-Proto", "https")
		rec := httptest.NewRecorder()
		s.ServeHTTP(rec, req)
		body := rec.Body.String()
		want, not := "nixery.example/hello", "evil.example"
		if trust {
			want, not = "evil.example/hello", "nixery.example"
		}
		if !strings.Contains(body, want) || strings.Contains(body, not) {
			t.Errorf("trusted proxy %v: the page does not name %q alone:\n%s", trust, want, body)
		}
		if got := strings.Contains(body, "tls-verify=false"); got == trust {
			t.Errorf("trusted proxy %v: --tls-verify=false shown: %v", trust, got)
		}
	}
}
