package certs_test

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/nixery/nixery/internal/certs"
	"github.com/nixery/nixery/internal/certs/certstest"
)

// newLog is a log the test reads (Check logs in the caller's goroutine).
func newLog() (*bytes.Buffer, *slog.Logger) {
	b := new(bytes.Buffer)
	return b, slog.New(slog.NewTextHandler(b, nil))
}

func serving(t *testing.T, p *certs.Pair) *x509.Certificate {
	t.Helper()
	c, err := p.GetCertificate(nil)
	if err != nil {
		t.Fatal(err)
	}
	return c.Leaf
}

func TestLoadNamesTheFile(t *testing.T) {
	dir := t.TempDir()
	ca := certstest.NewCA(t, "test CA")
	pair := ca.Issue(t, certstest.Leaf{Name: "server", Hosts: []string{"127.0.0.1"}})
	certFile, keyFile := pair.Write(t, dir, "tls.crt", "tls.key")
	other := ca.Issue(t, certstest.Leaf{Name: "other", Hosts: []string{"127.0.0.1"}})
	_, otherKey := other.Write(t, dir, "other.crt", "other.key")
	garbage := filepath.Join(dir, "garbage")
	os.WriteFile(garbage, []byte("not PEM"), 0o600)
	unreadable := filepath.Join(dir, "dir.key")
	os.Mkdir(unreadable, 0o700)

	for _, tt := range []struct {
		name, cert, key string
		want            []string
	}{
		{"missing certificate", filepath.Join(dir, "missing.crt"), keyFile, []string{"certificate: open " + filepath.Join(dir, "missing.crt"), "no such file"}},
		{"missing key", certFile, filepath.Join(dir, "missing.key"), []string{"key: open " + filepath.Join(dir, "missing.key")}},
		{"key unreadable", certFile, unreadable, []string{"key: reading " + unreadable}},
		{"not a certificate", garbage, keyFile, []string{"certificate " + garbage + " and key " + keyFile}},
		{"key of another certificate", certFile, otherKey, []string{"certificate " + certFile + " and key " + otherKey, "private key does not match"}},
	} {
		_, err := certs.Load(tt.cert, tt.key, nil)
		if err == nil {
			t.Errorf("%s: loaded", tt.name)
			continue
		}
		for _, w := range tt.want {
			if !strings.Contains(err.Error(), w) {
				t.Errorf("%s: %q does not say %q", tt.name, err, w)
			}
		}
		if strings.Contains(err.Error(), "PRIVATE KEY") || strings.Contains(err.Error(), string(other.KeyPEM[40:60])) {
			t.Errorf("%s: the error shows the key: %v", tt.name, err)
		}
	}
	p, err := certs.Load(certFile, keyFile, nil)
	if err != nil {
		t.Fatal(err)
	}
	if got := serving(t, p); !got.Equal(pair.Cert) {
		t.Errorf("serving %s", got.Subject)
	}
}

// A renewal replaces both files: the new pair is served from the next
// check; a pair that does not fit keeps the old one, logged once and
// reported by Problem, until the files are right again.
func TestReload(t *testing.T) {
	dir := t.TempDir()
	ca := certstest.NewCA(t, "test CA")
	first := ca.Issue(t, certstest.Leaf{Name: "first", Hosts: []string{"127.0.0.1"}})
	certFile, keyFile := first.Write(t, dir, "tls.crt", "tls.key")
	logs, log := newLog()
	p, err := certs.Load(certFile, keyFile, log)
	if err != nil {
		t.Fatal(err)
	}

	p.Check() // unchanged
	if logs.String() != "" || p.Problem() != nil || !serving(t, p).Equal(first.Cert) {
		t.Fatalf("unchanged files: problem %v, log %s", p.Problem(), logs)
	}

	// Half a renewal: the new certificate beside the old key.
	second := ca.Issue(t, certstest.Leaf{Name: "second", Hosts: []string{"127.0.0.1"}})
	os.WriteFile(certFile, second.CertPEM, 0o600)
	p.Check()
	p.Check()
	if !serving(t, p).Equal(first.Cert) {
		t.Errorf("a broken pair replaced the certificate in use")
	}
	if err := p.Problem(); err == nil || !strings.Contains(err.Error(), "private key does not match") {
		t.Errorf("problem %v", err)
	}
	if n := strings.Count(logs.String(), "not usable"); n != 1 || !strings.Contains(logs.String(), "CN=first") {
		t.Errorf("logged %d times:\n%s", n, logs)
	}

	// The key follows: the new pair is served.
	os.WriteFile(keyFile, second.KeyPEM, 0o600)
	p.Check()
	if !serving(t, p).Equal(second.Cert) || p.Problem() != nil {
		t.Errorf("serving %s, problem %v", serving(t, p).Subject, p.Problem())
	}
	if !strings.Contains(logs.String(), "TLS certificate loaded") || !strings.Contains(logs.String(), "CN=second") {
		t.Errorf("log:\n%s", logs)
	}

	// Gone for a moment (a file moved aside), then back as it was.
	os.Rename(keyFile, keyFile+".old")
	p.Check()
	if err := p.Problem(); err == nil || !strings.Contains(err.Error(), keyFile) || !serving(t, p).Equal(second.Cert) {
		t.Errorf("missing key: problem %v, serving %s", err, serving(t, p).Subject)
	}
	os.Rename(keyFile+".old", keyFile)
	p.Check()
	if p.Problem() != nil || !serving(t, p).Equal(second.Cert) {
		t.Errorf("key back: problem %v", p.Problem())
	}
	for _, key := range [][]byte{first.KeyPEM, second.KeyPEM} {
		if strings.Contains(logs.String(), string(key[30:60])) {
			t.Errorf("the log shows a key:\n%s", logs)
		}
	}
}

// A Kubernetes Secret volume: the files are symlinks through "..data",
// which the kubelet points at a new directory in one rename.
func TestReloadSecretVolume(t *testing.T) {
	dir := t.TempDir()
	ca := certstest.NewCA(t, "test CA")
	first := ca.Issue(t, certstest.Leaf{Name: "first", Hosts: []string{"127.0.0.1"}})
	second := ca.Issue(t, certstest.Leaf{Name: "second", Hosts: []string{"127.0.0.1"}})
	for _, v := range []struct {
		name string
		pair certstest.Pair
	}{{"..2026_12_07_01_00_00.1", first}, {"..2026_12_07_02_00_00.2", second}} {
		os.Mkdir(filepath.Join(dir, v.name), 0o755)
		v.pair.Write(t, filepath.Join(dir, v.name), "tls.crt", "tls.key")
	}
	os.Symlink("..2026_12_07_01_00_00.1", filepath.Join(dir, "..data"))
	os.Symlink("..data/tls.crt", filepath.Join(dir, "tls.crt"))
	os.Symlink("..data/tls.key", filepath.Join(dir, "tls.key"))
	p, err := certs.Load(filepath.Join(dir, "tls.crt"), filepath.Join(dir, "tls.key"), slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	os.Symlink("..2026_12_07_02_00_00.2", filepath.Join(dir, "..data_tmp"))
	if err := os.Rename(filepath.Join(dir, "..data_tmp"), filepath.Join(dir, "..data")); err != nil {
		t.Fatal(err)
	}
	p.Check()
	if !serving(t, p).Equal(second.Cert) {
		t.Errorf("serving %s after the swap", serving(t, p).Subject)
	}
}

// handshake connects to addr as a client trusting ca, with cert as its
// client certificate (none if nil), and sends one HTTP request over it.
func handshake(addr string, ca *certstest.CA, cert *certstest.Pair, maxVersion uint16) (*http.Response, error) {
	roots := x509.NewCertPool()
	roots.AddCert(ca.Cert)
	cfg := &tls.Config{RootCAs: roots, MaxVersion: maxVersion, NextProtos: []string{"h2", "http/1.1"}}
	if cert != nil {
		c, err := tls.X509KeyPair(cert.CertPEM, cert.KeyPEM)
		if err != nil {
			return nil, err
		}
		// Sent whatever CAs the server names: Go's client would send
		// none that another CA signed.
		cfg.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return &c, nil }
	}
	client := &http.Client{Transport: &http.Transport{TLSClientConfig: cfg, ForceAttemptHTTP2: true}}
	defer client.CloseIdleConnections()
	resp, err := client.Get("https://" + addr + "/")
	if err != nil {
		return nil, err
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp, nil
}

// serveTLS serves h with cfg on 127.0.0.1 until the test ends.
func serveTLS(t *testing.T, cfg *tls.Config, h http.Handler) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: h, TLSConfig: cfg, ErrorLog: nil}
	srv.ErrorLog = slog.NewLogLogger(slog.DiscardHandler, slog.LevelError)
	done := make(chan struct{})
	go func() { srv.ServeTLS(ln, "", ""); close(done) }()
	t.Cleanup(func() { srv.Close(); <-done })
	return ln.Addr().String()
}

// The server's TLS: HTTP/2, TLS 1.2 at least, the renewed certificate for
// new connections; with a client CA, a client certificate signed by it is
// accepted, one of another CA refused, and none refused in the handshake
// only when required there.
func TestServerConfig(t *testing.T) {
	dir := t.TempDir()
	ca, clientCA, otherCA := certstest.NewCA(t, "server CA"), certstest.NewCA(t, "client CA"), certstest.NewCA(t, "another CA")
	first := ca.Issue(t, certstest.Leaf{Name: "first", Hosts: []string{"127.0.0.1"}})
	certFile, keyFile := first.Write(t, dir, "tls.crt", "tls.key")
	p, err := certs.Load(certFile, keyFile, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(dir, "clients.crt"), clientCA.PEM, 0o600)
	pool, err := certs.Bundle(filepath.Join(dir, "clients.crt"))
	if err != nil {
		t.Fatal(err)
	}
	alice := clientCA.Issue(t, certstest.Leaf{Name: "alice"})
	mallory := otherCA.Issue(t, certstest.Leaf{Name: "mallory"})

	var peers []int // client certificates verified, by request
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		peers = append(peers, len(r.TLS.VerifiedChains))
	})

	t.Run("no client CA", func(t *testing.T) {
		addr := serveTLS(t, p.ServerConfig(nil, false), h)
		resp, err := handshake(addr, ca, nil, 0)
		if err != nil || resp.ProtoMajor != 2 || resp.TLS.PeerCertificates[0].Subject.CommonName != "first" {
			t.Fatalf("%v %+v", err, resp)
		}
		if _, err := handshake(addr, ca, nil, tls.VersionTLS11); err == nil {
			t.Errorf("TLS 1.1 accepted")
		}
		if resp, err := handshake(addr, ca, nil, tls.VersionTLS12); err != nil || resp.TLS.Version != tls.VersionTLS12 {
			t.Errorf("TLS 1.2: %v", err)
		}
		// A renewal is served to the next connection.
		second := ca.Issue(t, certstest.Leaf{Name: "second", Hosts: []string{"127.0.0.1"}})
		second.Write(t, dir, "tls.crt", "tls.key")
		p.Check()
		if resp, err := handshake(addr, ca, nil, 0); err != nil || resp.TLS.PeerCertificates[0].Subject.CommonName != "second" {
			t.Errorf("after the renewal: %v %+v", err, resp)
		}
	})

	t.Run("required in the handshake", func(t *testing.T) {
		addr := serveTLS(t, p.ServerConfig(pool, true), h)
		peers = nil
		if _, err := handshake(addr, ca, &alice, 0); err != nil || len(peers) != 1 || peers[0] != 1 {
			t.Errorf("alice: %v, %v", err, peers)
		}
		// Refused in the handshake (how the client learns of it, an
		// alert or a reset, varies).
		if _, err := handshake(addr, ca, nil, 0); err == nil {
			t.Errorf("without a certificate: let in")
		}
		if _, err := handshake(addr, ca, &mallory, 0); err == nil {
			t.Errorf("another CA's certificate: let in")
		}
		if len(peers) != 1 {
			t.Errorf("refused clients reached the handler: %v", peers)
		}
	})

	t.Run("verified if given", func(t *testing.T) {
		addr := serveTLS(t, p.ServerConfig(pool, false), h)
		peers = nil
		if _, err := handshake(addr, ca, &alice, 0); err != nil {
			t.Errorf("alice: %v", err)
		}
		if _, err := handshake(addr, ca, nil, 0); err != nil {
			t.Errorf("without a certificate: %v", err)
		}
		if _, err := handshake(addr, ca, &mallory, 0); err == nil {
			t.Errorf("another CA's certificate accepted")
		}
		// The HTTP side tells them apart (access.Guard).
		if len(peers) != 2 || peers[0] != 1 || peers[1] != 0 {
			t.Errorf("verified chains by request: %v", peers)
		}
	})
}

func TestBundle(t *testing.T) {
	dir := t.TempDir()
	ca := certstest.NewCA(t, "client CA")
	pair := ca.Issue(t, certstest.Leaf{Name: "alice"})
	bundle := filepath.Join(dir, "bundle.crt")
	os.WriteFile(bundle, append(certstest.NewCA(t, "another").PEM, ca.PEM...), 0o600)
	if _, err := certs.Bundle(bundle); err != nil {
		t.Errorf("a bundle of two: %v", err)
	}
	withKey := filepath.Join(dir, "with-key.pem")
	os.WriteFile(withKey, append(append([]byte{}, ca.PEM...), pair.KeyPEM...), 0o600)
	empty := filepath.Join(dir, "empty.crt")
	os.WriteFile(empty, []byte("nothing\n"), 0o600)
	for file, want := range map[string]string{
		filepath.Join(dir, "missing.crt"): "open " + filepath.Join(dir, "missing.crt"),
		empty:                             empty + " holds no PEM certificate",
		withKey:                           withKey + " holds a private key",
	} {
		if _, err := certs.Bundle(file); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: %v, want %q", file, err, want)
		}
	}
}
