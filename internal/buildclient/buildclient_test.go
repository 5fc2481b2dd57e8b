package buildclient

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nixery/nixery/internal/builder"
	"github.com/nixery/nixery/internal/certs/certstest"
)

// eventServer answers every request with the given status and, for 200,
// a text/event-stream of the given events (with a retry field and a
// comment that the reader skips); other statuses get body.
func eventServer(t *testing.T, status int, body string, events ...string) string {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Accept") != "text/event-stream" {
			http.Error(w, "want Accept: text/event-stream", http.StatusBadRequest)
			return
		}
		if status != http.StatusOK {
			http.Error(w, body, status)
			return
		}
		w.Header().Set("Content-Type", "text/event-stream")
		fmt.Fprint(w, "retry: 2000\n\n: a comment\n\n")
		for _, e := range events {
			fmt.Fprintf(w, "data: %s\n\n", e)
		}
	}))
	t.Cleanup(srv.Close)
	return srv.URL + "/api/build/shell/hello/events"
}

func TestFollow(t *testing.T) {
	for _, tt := range []struct {
		name   string
		url    string
		final  builder.Event
		shown  string
		errMsg string
	}{
		{"a build", eventServer(t, 200, "",
			`{"kind":"queued","message":"shell/hello:latest"}`,
			`{"kind":"phase","phase":"realise"}`,
			`{"kind":"log","phase":"realise","message":"building '/nix/store/…-hello.drv'..."}`,
			`{"kind":"phase","phase":"pack"}`,
			`{"kind":"done","message":"image ready","digest":"sha256:abc"}`,
			`{"kind":"log","message":"after the end: not read"}`),
			builder.Event{Kind: "done", Message: "image ready", Digest: "sha256:abc"},
			"queued shell/hello:latest\nphase realise \n  building '/nix/store/…-hello.drv'...\nphase pack \ndone image ready\n", ""},
		{"a failed build", eventServer(t, 200, "", `{"kind":"queued"}`, `{"kind":"error","message":"unknown package(s): nosuch"}`),
			builder.Event{Kind: "error", Message: "unknown package(s): nosuch"}, "queued \nerror\n", ""},
		{"a stream that ends early", eventServer(t, 200, "", `{"kind":"queued"}`),
			builder.Event{}, "queued \n", "closed the event stream before the build ended"},
		{"a bad event", eventServer(t, 200, "", `{"kind":`), builder.Event{}, "", "bad event"},
		{"a refusal with a JSON error", eventServer(t, 400, `{"error":"invalid repository name"}`),
			builder.Event{}, "", "invalid repository name"},
		{"a refusal in plain text", eventServer(t, 503, "busy"), builder.Event{}, "", "503 Service Unavailable: busy"},
	} {
		var out bytes.Buffer
		final, err := Follow(context.Background(), nil, tt.url, NewView(&out, false))
		if final.Kind != tt.final.Kind || final.Message != tt.final.Message || final.Digest != tt.final.Digest ||
			out.String() != tt.shown || (err == nil) != (tt.errMsg == "") || err != nil && !strings.Contains(err.Error(), tt.errMsg) {
			t.Errorf("%s: %+v, %v, shown %q; want %+v, %q, shown %q", tt.name, final, err, out.String(), tt.final, tt.errMsg, tt.shown)
		}
	}
}

func TestNewView(t *testing.T) {
	var out bytes.Buffer
	if _, ok := NewView(&out, true).(nopView); !ok {
		t.Error("quiet: want no output")
	}
	if _, ok := NewView(&out, false).(*plainView); !ok {
		t.Error("not a terminal: want one line per event")
	}
}

func TestBarView(t *testing.T) {
	var out bytes.Buffer
	v := &barView{w: &out}
	for _, e := range []string{"realise", "layers"} {
		v.Event(builder.Event{Kind: "phase", Phase: e})
	}
	v.Event(builder.Event{Kind: "done"})
	v.End()
	s := out.String()
	if !strings.Contains(s, "1/5 realise") || !strings.Contains(s, "3/5 layers") || !strings.Contains(s, "[####################] done") {
		t.Errorf("bar output: %q", s)
	}
}

func TestTerminalAndCut(t *testing.T) {
	devnull, err := os.OpenFile(os.DevNull, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer devnull.Close()
	if isTerminal(devnull) {
		t.Error("/dev/null counts as a terminal")
	}
	for _, tt := range []struct {
		s    string
		n    int
		want string
	}{
		{"abc", 5, "abc"},
		{"abcdef", 3, "abc"},
		{"aé", 2, "a"}, // é is two bytes: not cut in half
		{"日本", 4, "日"},
	} {
		if got := cutRunes(tt.s, tt.n); got != tt.want {
			t.Errorf("cutRunes(%q, %d) = %q, want %q", tt.s, tt.n, got, tt.want)
		}
	}
}

// packEvents are a pack of 4 MiB in 4 s, by the server's clock, as the
// stream carries it.
func packEvents() []builder.Event {
	t0 := time.Date(2026, 12, 7, 3, 0, 0, 0, time.UTC)
	at := func(s float64) time.Time { return t0.Add(time.Duration(s * float64(time.Second))) }
	const mib = 1 << 20
	return []builder.Event{
		{Time: at(0), Kind: "phase", Phase: "pack"},
		{Time: at(1), Kind: "progress", Phase: "pack", Bytes: 1 * mib, Total: 4 * mib},
		{Time: at(1.25), Kind: "progress", Phase: "pack", Bytes: mib + mib/4, Total: 4 * mib},
		{Time: at(2), Kind: "progress", Phase: "pack", Bytes: 2 * mib, Total: 4 * mib},
		{Time: at(6.5), Kind: "progress", Phase: "pack", Bytes: 3 * mib, Total: 4 * mib},
		{Time: at(7), Kind: "progress", Phase: "pack", Bytes: 4 * mib, Total: 4 * mib},
		{Time: at(7.5), Kind: "phase", Phase: "manifest"},
	}
}

// The plain view: a progress line every five seconds at most (by the
// events' times), with the time left at the rate so far, and the last.
func TestPlainViewProgress(t *testing.T) {
	var out bytes.Buffer
	v := &plainView{w: &out}
	for _, e := range packEvents() {
		v.Event(e)
	}
	want := "phase pack \n" +
		"  packed 1.0 of 4.0 MiB (25%), about 3s left\n" +
		"  packed 3.0 of 4.0 MiB (75%), about 2s left\n" +
		"  packed 4.0 MiB in 7.0s\n" +
		"phase manifest \n"
	if out.String() != want {
		t.Errorf("plain output:\n%s\nwant:\n%s", out.String(), want)
	}
}

// The bar: the pack phase fills as it packs, the line says how much and
// the time left.
func TestBarViewProgress(t *testing.T) {
	var out bytes.Buffer
	events := packEvents()
	start := events[0].Time.Add(-10 * time.Second)
	now := start
	v := &barView{w: &out, start: start, started: true, phase: -1, stop: make(chan struct{}), now: func() time.Time { return now }}
	var lines []string
	for _, e := range events[:4] {
		now = e.Time
		out.Reset()
		v.Event(e)
		lines = append(lines, out.String())
	}
	want := []string{
		"\r\x1b[2K[############--------] 4/5 pack        10.0s  ",
		"\r\x1b[2K[#############-------] 4/5 pack        11.0s  packed 1.0 of 4.0 MiB (25%), about 3s left",
		"\r\x1b[2K[#############-------] 4/5 pack        11.2s  packed 1.2 of 4.0 MiB (31%), about 3s left",
		"\r\x1b[2K[##############------] 4/5 pack        12.0s  packed 2.0 of 4.0 MiB (50%), about 2s left",
	}
	if !slices.Equal(lines, want) {
		t.Errorf("bar lines:\n%q\nwant:\n%q", lines, want)
	}
}

// Over TLS (HTTP/2), with the server's certificate from a CA of its own
// (--ca), a client certificate (--cert, --key) and a user's password in
// the URL: the events arrive; without the CA the server is not trusted.
func TestFollowTLS(t *testing.T) {
	dir := t.TempDir()
	serverCA, clientCA := certstest.NewCA(t, "server CA"), certstest.NewCA(t, "client CA")
	serverPair := serverCA.Issue(t, certstest.Leaf{Name: "nixery", Hosts: []string{"127.0.0.1"}})
	cert, err := tls.X509KeyPair(serverPair.CertPEM, serverPair.KeyPEM)
	if err != nil {
		t.Fatal(err)
	}
	clients := x509.NewCertPool()
	clients.AddCert(clientCA.Cert)
	var proto, user string
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		proto = r.Proto
		user, _, _ = r.BasicAuth()
		w.Header().Set("Content-Type", "text/event-stream")
		fmt.Fprint(w, "data: {\"kind\":\"queued\"}\n\n")
		w.(http.Flusher).Flush()
		fmt.Fprint(w, "data: {\"kind\":\"done\",\"digest\":\"sha256:abc\"}\n\n")
	}))
	srv.EnableHTTP2 = true
	srv.TLS = &tls.Config{Certificates: []tls.Certificate{cert}, ClientCAs: clients, ClientAuth: tls.RequireAndVerifyClientCert}
	srv.StartTLS()
	t.Cleanup(srv.Close)
	caFile := filepath.Join(dir, "ca.crt")
	os.WriteFile(caFile, serverCA.PEM, 0o600)
	certFile, keyFile := clientCA.Issue(t, certstest.Leaf{Name: "ci"}).Write(t, dir, "client.crt", "client.key")
	url := strings.Replace(srv.URL, "https://", "https://alice:pw@", 1) + "/api/build/shell/hello/events"

	client, err := Client(caFile, certFile, keyFile)
	if err != nil {
		t.Fatal(err)
	}
	final, err := Follow(context.Background(), client, url, NewView(io.Discard, true))
	if err != nil || final.Digest != "sha256:abc" || proto != "HTTP/2.0" || user != "alice" {
		t.Errorf("Follow over TLS: %+v %v, %s, user %q", final, err, proto, user)
	}
	client, _ = Client("", certFile, keyFile)
	if _, err := Follow(context.Background(), client, url, NewView(io.Discard, true)); err == nil || !strings.Contains(err.Error(), "certificate") || strings.Contains(err.Error(), "pw") {
		t.Errorf("without the CA: %v", err)
	}
	if _, err := Client(caFile, certFile, ""); err == nil {
		t.Errorf("a certificate without its key")
	}
	if _, err := Client(filepath.Join(dir, "missing.crt"), "", ""); err == nil || !strings.Contains(err.Error(), "missing.crt") {
		t.Errorf("a missing CA file: %v", err)
	}
}
