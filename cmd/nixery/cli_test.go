package main

import (
	"bytes"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

// fakeServer streams fixed events for any build.
func fakeServer(t *testing.T, events ...string) *httptest.Server {
	return fakeSigningServer(t, false, events...)
}

// fakeSigningServer is a fakeServer that serves /cosign.pub if signs.
func fakeSigningServer(t *testing.T, signs bool, events ...string) *httptest.Server {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/cosign.pub" && signs {
			fmt.Fprint(w, "-----BEGIN PUBLIC KEY-----\n")
			return
		}
		if !strings.HasPrefix(r.URL.Path, "/api/build/") || !strings.HasSuffix(r.URL.Path, "/events") {
			http.NotFound(w, r)
			return
		}
		w.Header().Set("Content-Type", "text/event-stream")
		fmt.Fprint(w, "retry: 2000\n\n: a comment\n\n")
		for _, e := range events {
			fmt.Fprintf(w, "data: %s\n\n", e)
		}
	}))
	t.Cleanup(srv.Close)
	return srv
}

func TestBuildCmd(t *testing.T) {
	ok := fakeServer(t,
		`{"kind":"queued","message":"shell/hello:latest"}`,
		`{"kind":"phase","phase":"realise"}`,
		`{"kind":"log","phase":"realise","message":"building '/nix/store/…-hello.drv'..."}`,
		`{"kind":"phase","phase":"pack"}`,
		`{"kind":"done","message":"image ready","digest":"sha256:abc"}`)
	failing := fakeServer(t,
		`{"kind":"queued"}`,
		`{"kind":"error","message":"unknown package(s): nosuch"}`)
	suggested := fakeServer(t,
		`{"kind":"queued"}`,
		`{"kind":"error","message":"unknown package(s): helo (did you mean hello or help?)","suggestions":[`+
			`{"package":"helo","name":"hello","image":"shell/hello"},{"package":"helo","name":"help","image":"shell/help"}]}`)
	truncated := fakeServer(t, `{"kind":"queued"}`)
	signed := fakeSigningServer(t, true, `{"kind":"done","message":"image ready","digest":"sha256:abc"}`)
	host := strings.TrimPrefix(ok.URL, "http://")
	signedHost := strings.TrimPrefix(signed.URL, "http://")

	for _, tt := range []struct {
		args        []string
		code        int
		out, errOut string
	}{
		{[]string{"--server", ok.URL, "shell/hello"}, 0, "phase realise \n  building '/nix/store/…-hello.drv'...\nphase pack \ndone image ready\nimage ready: shell/hello (sha256:abc)\ndocker pull " + host + "/shell/hello\n", ""},
		{[]string{"shell/hello:v2", "--server", ok.URL, "--quiet"}, 0, "docker pull " + host + "/shell/hello:v2\n", ""},
		// A server that signs: the command that verifies, with the key's
		// URL but not the credentials of --server.
		{[]string{"--server", "http://alice:hunter2@" + signedHost, "shell/hello"}, 0, "docker pull " + signedHost + "/shell/hello\npodman pull --tls-verify=false " + signedHost + "/shell/hello\n" +
			"cosign verify --key http://" + signedHost + "/cosign.pub --insecure-ignore-tlog=true --allow-http-registry " + signedHost + "/shell/hello\n", ""},
		{[]string{"--server", failing.URL, "nosuch"}, 1, "", "nosuch failed:\nunknown package(s): nosuch"},
		{[]string{"--server", suggested.URL, "shell/helo"}, 1, "", "shell/helo failed:\nunknown package(s): helo (did you mean hello or help?)\n" +
			"did you mean: nixery build shell/hello\ndid you mean: nixery build shell/help\n"},
		{[]string{"--server", truncated.URL, "hello"}, 1, "", "closed the event stream before the build ended"},
		{[]string{"--server", ok.URL, "Bad"}, 2, "", "invalid repository name"},
		{[]string{"--server", "ftp://x", "hello"}, 2, "", "--server must be an http(s) URL"},
		{[]string{}, 2, "", "Usage: nixery build"},
	} {
		var stdout, stderr bytes.Buffer
		code := run(append([]string{"build"}, tt.args...), &stdout, &stderr)
		if code != tt.code || !strings.Contains(stdout.String(), tt.out) || !strings.Contains(stderr.String(), tt.errOut) {
			t.Errorf("nixery build %q = %d\nstdout:\n%s\nstderr:\n%s", tt.args, code, stdout.String(), stderr.String())
		}
		if strings.Contains(stdout.String()+stderr.String(), "hunter2") {
			t.Errorf("nixery build %q printed the password of --server", tt.args)
		}
		if !strings.Contains(strings.Join(tt.args, " "), signedHost) && strings.Contains(stdout.String(), "cosign") {
			t.Errorf("nixery build %q printed a verify command for a server that signs nothing", tt.args)
		}
	}
}

// Every subcommand that opens storage takes serve's settings as flags, and
// its --help lists them from the same table.
func TestSubcommandFlags(t *testing.T) {
	for _, cmd := range []string{"gc", "build"} {
		var out, errOut bytes.Buffer
		if code := run([]string{cmd, "--help"}, &out, &errOut); code != 0 {
			t.Errorf("nixery %s --help exited %d", cmd, code)
		}
		help := out.String() + errOut.String()
		for _, want := range []string{"-storage-path", "$STORAGE_PATH", "-s3-bucket", "$NIXERY_S3_BUCKET", "-nix-timeout"} {
			if !strings.Contains(help, want) {
				t.Errorf("nixery %s --help lacks %s", cmd, want)
			}
		}
	}

	// gc with --storage-path (a flag of serve) on an empty storage.
	dir := t.TempDir()
	var out, errOut bytes.Buffer
	if code := run([]string{"gc", "--dry-run", "--storage-path", dir}, &out, &errOut); code != 0 {
		t.Fatalf("nixery gc --dry-run --storage-path: %d %s", code, errOut.String())
	}
	if !strings.Contains(out.String(), dir) || !strings.Contains(out.String(), "would delete (dry run)") {
		t.Errorf("gc said %q", out.String())
	}
	for _, bad := range [][]string{{"gc", "--max-age", "1h"}, {"gc", "--max-age", "soon"}, {"gc", "--no-such-flag"}, {"gc", "extra"}} {
		if code := run(bad, &out, &errOut); code != 2 {
			t.Errorf("nixery %v exited %d, want 2", bad, code)
		}
	}
}
