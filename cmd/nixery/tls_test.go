package main

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nixery/nixery/internal/access"
	"github.com/nixery/nixery/internal/certs/certstest"
	"github.com/nixery/nixery/internal/config"
	"github.com/nixery/nixery/internal/server"
)

// tlsFiles writes a server certificate for 127.0.0.1 and a client CA
// into dir: the settings of serve that name them, and the CAs.
func tlsFiles(t *testing.T, dir string) (args []string, serverCA, clientCA *certstest.CA) {
	t.Helper()
	serverCA, clientCA = certstest.NewCA(t, "server CA"), certstest.NewCA(t, "client CA")
	certFile, keyFile := serverCA.Issue(t, certstest.Leaf{Name: "nixery", Hosts: []string{"127.0.0.1"}}).Write(t, dir, "tls.crt", "tls.key")
	caFile := filepath.Join(dir, "clients.crt")
	if err := os.WriteFile(caFile, clientCA.PEM, 0o600); err != nil {
		t.Fatal(err)
	}
	return []string{"--tls-cert", certFile, "--tls-key", keyFile, "--tls-client-ca", caFile}, serverCA, clientCA
}

// TestTLSStartup: serve does not start with a file it cannot use, and
// names it.
func TestTLSStartup(t *testing.T) {
	dir := t.TempDir()
	args, _, _ := tlsFiles(t, dir)
	missing := filepath.Join(dir, "missing.pem")
	for _, tt := range []struct {
		args []string
		want []string
	}{
		{[]string{"--tls-cert", missing, "--tls-key", args[3]}, []string{"NIXERY_TLS_CERT / --tls-cert", "certificate: open " + missing, "no such file"}},
		{[]string{"--tls-cert", args[1], "--tls-key", missing}, []string{"NIXERY_TLS_KEY / --tls-key", "key: open " + missing}},
		{[]string{"--tls-cert", args[1], "--tls-key", args[1]}, []string{"certificate " + args[1] + " and key " + args[1]}},
		{[]string{"--tls-cert", args[1], "--tls-key", args[3], "--tls-client-ca", missing}, []string{"NIXERY_TLS_CLIENT_CA / --tls-client-ca", "open " + missing}},
		{[]string{"--tls-cert", args[1]}, []string{"set both NIXERY_TLS_CERT / --tls-cert and NIXERY_TLS_KEY / --tls-key"}},
	} {
		var stdout, stderr strings.Builder
		if code := run(append([]string{"serve", "--port", "1"}, tt.args...), &stdout, &stderr); code != 1 {
			t.Errorf("%v: exit %d, want 1", tt.args, code)
		}
		for _, w := range tt.want {
			if !strings.Contains(stderr.String(), w) {
				t.Errorf("%v: %q does not say %q", tt.args, stderr.String(), w)
			}
		}
		if strings.Contains(stderr.String(), "PRIVATE KEY") {
			t.Errorf("%v: the key is shown: %q", tt.args, stderr.String())
		}
	}
}

// TestClientCertificates serves the whole HTTP side over TLS as serve
// wires it, with a client CA: a client certificate of that CA gets in,
// one of another CA is refused in the handshake, and a client without
// one is refused in the handshake, or, with NIXERY_TLS_PROBES_PUBLIC,
// gets the probes and a 403 (the registry's DENIED) for everything else.
// With htpasswd too, both must pass.
func TestClientCertificates(t *testing.T) {
	dir := t.TempDir()
	args, serverCA, clientCA := tlsFiles(t, dir)
	alice := clientCA.Issue(t, certstest.Leaf{Name: "alice"})
	mallory := certstest.NewCA(t, "another CA").Issue(t, certstest.Leaf{Name: "mallory"})

	// serveWith serves with the settings args, the guard's users users.
	serveWith := func(t *testing.T, users *access.Users, args ...string) string {
		t.Helper()
		cfg, err := config.Load(args, func(string) string { return "" })
		if err != nil {
			t.Fatal(err)
		}
		guard := &access.Guard{Users: users}
		log := slog.New(slog.DiscardHandler)
		_, tlsConfig, err := loadTLS(cfg, guard, log)
		if err != nil {
			t.Fatal(err)
		}
		h, _ := testHandler(t, guard, false)
		srv := server.New(h)
		srv.TLSConfig, srv.ErrorLog = tlsConfig, slog.NewLogLogger(log.Handler(), slog.LevelWarn)
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		done := make(chan struct{})
		go func() { srv.ServeTLS(ln, "", ""); close(done) }()
		t.Cleanup(func() { srv.Close(); <-done })
		return ln.Addr().String()
	}
	// get requests path as a client trusting the server's CA, with cert
	// (if any) and alice's password (if basic).
	get := func(t *testing.T, addr, path string, cert *certstest.Pair, basic bool) (*http.Response, string, error) {
		t.Helper()
		roots := x509.NewCertPool()
		roots.AddCert(serverCA.Cert)
		cfg := &tls.Config{RootCAs: roots}
		if cert != nil {
			c, err := tls.X509KeyPair(cert.CertPEM, cert.KeyPEM)
			if err != nil {
				t.Fatal(err)
			}
			cfg.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return &c, nil }
		}
		client := &http.Client{Timeout: 2 * time.Minute, Transport: &http.Transport{TLSClientConfig: cfg, ForceAttemptHTTP2: true}}
		defer client.CloseIdleConnections()
		req, _ := http.NewRequest("GET", "https://"+addr+path, nil)
		if basic {
			req.SetBasicAuth("alice", "s3cret-pw")
		}
		resp, err := client.Do(req)
		if err != nil {
			return nil, "", err
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		return resp, string(body), nil
	}
	guarded := []string{"/v2/", "/", "/metrics", "/api/search?q=hello"}
	probes := []string{"/healthz", "/readyz"}

	t.Run("probes public", func(t *testing.T) {
		addr := serveWith(t, nil, append(args, "--tls-probes-public")...)
		for _, p := range append(guarded, probes...) {
			if resp, body, err := get(t, addr, p, &alice, false); err != nil || resp.StatusCode != 200 || resp.ProtoMajor != 2 {
				t.Errorf("alice %s: %v %v %q", p, err, resp, body)
			}
			// Refused in the handshake (how the client learns of it,
			// an alert or a reset, varies).
			if _, _, err := get(t, addr, p, &mallory, false); err == nil {
				t.Errorf("mallory %s: let in", p)
			}
		}
		for _, p := range probes {
			if resp, body, err := get(t, addr, p, nil, false); err != nil || resp.StatusCode != 200 {
				t.Errorf("no certificate, %s: %v %v %q", p, err, resp, body)
			}
		}
		for _, p := range guarded {
			resp, body, err := get(t, addr, p, nil, true)
			if err != nil || resp.StatusCode != 403 {
				t.Errorf("no certificate, %s: %v %v %q", p, err, resp, body)
				continue
			}
			if p == "/v2/" {
				var e struct {
					Errors []struct{ Code, Message string }
				}
				if json.Unmarshal([]byte(body), &e) != nil || len(e.Errors) != 1 || e.Errors[0].Code != "DENIED" ||
					resp.Header.Get("Docker-Distribution-API-Version") != "registry/2.0" {
					t.Errorf("no certificate, /v2/: %q", body)
				}
			} else if !strings.Contains(body, "403 Forbidden: a client certificate signed by this registry's client CA is required") {
				t.Errorf("no certificate, %s: %q", p, body)
			}
		}
	})

	t.Run("required in the handshake", func(t *testing.T) {
		addr := serveWith(t, nil, args...)
		for _, p := range append(guarded, probes...) {
			if resp, body, err := get(t, addr, p, &alice, false); err != nil || resp.StatusCode != 200 {
				t.Errorf("alice %s: %v %v %q", p, err, resp, body)
			}
			if _, _, err := get(t, addr, p, nil, true); err == nil {
				t.Errorf("no certificate, %s: let in", p)
			}
			if _, _, err := get(t, addr, p, &mallory, false); err == nil {
				t.Errorf("mallory %s: let in", p)
			}
		}
	})

	t.Run("with htpasswd", func(t *testing.T) {
		addr := serveWith(t, testUsers(t), append(args, "--tls-probes-public")...)
		for _, tt := range []struct {
			cert   *certstest.Pair
			basic  bool
			status int
		}{{&alice, true, 200}, {&alice, false, 401}, {nil, true, 403}, {nil, false, 403}} {
			if resp, body, err := get(t, addr, "/v2/", tt.cert, tt.basic); err != nil || resp.StatusCode != tt.status {
				t.Errorf("certificate %v, password %v: %v %v %q, want %d", tt.cert != nil, tt.basic, err, resp, body, tt.status)
			}
		}
	})
}
