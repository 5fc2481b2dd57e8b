package e2e

import (
	"bufio"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/crypto/bcrypt"

	"github.com/nixery/nixery/internal/certs/certstest"
)

// dockerHost is the name the Docker engine reaches the TLS server by:
// Docker treats every registry on 127.0.0.0/8 (and every name that
// resolves there) as insecure, and then checks no certificate at all.
// This name resolves nowhere (.test is reserved), so Docker counts it
// as secure, and reaches it through a proxy of the test's own on
// 127.0.0.1 (connectProxy), which connects it to the server.
const dockerHost = "nixery.test"

// tlsFiles are the certificates of a TLS test, made for it.
type tlsFiles struct {
	dir      string
	ca       *certstest.CA // signs the server's certificates
	caFile   string        // its certificate
	certDir  string        // a cert dir of skopeo and Docker: ca.crt
	secret   string        // a Kubernetes Secret volume: tls.crt and tls.key through ..data
	serving  certstest.Pair
	htpasswd string // alice, password "correct horse"
}

func newTLSFiles(t *testing.T) *tlsFiles {
	t.Helper()
	f := &tlsFiles{dir: t.TempDir(), ca: certstest.NewCA(t, "Nixery test CA")}
	f.caFile = filepath.Join(f.dir, "ca.crt")
	f.certDir = filepath.Join(f.dir, "certs.d")
	f.secret = filepath.Join(f.dir, "secret")
	os.MkdirAll(f.certDir, 0o755)
	os.MkdirAll(f.secret, 0o755)
	if err := os.WriteFile(f.caFile, f.ca.PEM, 0o644); err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(f.certDir, "ca.crt"), f.ca.PEM, 0o644)
	f.serving = f.ca.Issue(t, certstest.Leaf{Name: "first", Hosts: []string{"127.0.0.1", dockerHost}})
	f.swap(t, "..first", f.serving.CertPEM, f.serving.KeyPEM)
	os.Symlink("..data/tls.crt", filepath.Join(f.secret, "tls.crt"))
	os.Symlink("..data/tls.key", filepath.Join(f.secret, "tls.key"))

	hash, err := bcrypt.GenerateFromPassword([]byte("correct horse"), bcrypt.MinCost)
	if err != nil {
		t.Fatal(err)
	}
	f.htpasswd = filepath.Join(f.dir, "htpasswd")
	os.WriteFile(f.htpasswd, []byte("alice:"+string(hash)+"\n"), 0o600)
	return f
}

// swap puts a certificate and key into the Secret volume as the kubelet
// does: a new directory, then "..data" pointed at it in one rename.
func (f *tlsFiles) swap(t *testing.T, name string, certPEM, keyPEM []byte) {
	t.Helper()
	dir := filepath.Join(f.secret, name)
	os.Mkdir(dir, 0o755)
	os.WriteFile(filepath.Join(dir, "tls.crt"), certPEM, 0o644)
	os.WriteFile(filepath.Join(dir, "tls.key"), keyPEM, 0o600)
	tmp := filepath.Join(f.secret, "..data_tmp")
	if err := os.Symlink(name, tmp); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, filepath.Join(f.secret, "..data")); err != nil {
		t.Fatal(err)
	}
}

// env is the server's TLS settings.
func (f *tlsFiles) env() []string {
	return []string{"NIXERY_TLS_CERT=" + filepath.Join(f.secret, "tls.crt"), "NIXERY_TLS_KEY=" + filepath.Join(f.secret, "tls.key")}
}

// client trusts the CA, presents cert (if any) and sends alice's
// password (if basic); each of its connections is new (no keep-alive),
// so that it sees the certificate served now.
func (f *tlsFiles) client(cert *certstest.Pair, basic bool) *http.Client {
	roots := x509.NewCertPool()
	roots.AddCert(f.ca.Cert)
	cfg := &tls.Config{RootCAs: roots}
	if cert != nil {
		c, _ := tls.X509KeyPair(cert.CertPEM, cert.KeyPEM)
		cfg.Certificates = []tls.Certificate{c}
	}
	var rt http.RoundTripper = &http.Transport{TLSClientConfig: cfg, ForceAttemptHTTP2: true, DisableKeepAlives: true}
	if basic {
		rt = basicAuth{rt}
	}
	return &http.Client{Timeout: 5 * time.Minute, Transport: rt}
}

type basicAuth struct{ http.RoundTripper }

func (b basicAuth) RoundTrip(r *http.Request) (*http.Response, error) {
	r = r.Clone(r.Context())
	r.SetBasicAuth("alice", "correct horse")
	return b.RoundTripper.RoundTrip(r)
}

// fails runs a command that must fail and returns its output.
func fails(t *testing.T, name string, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, name, args...).CombinedOutput()
	if err == nil {
		t.Errorf("%s %s succeeded:\n%s", name, strings.Join(args, " "), out)
	}
	return string(out)
}

// TestTLS serves HTTPS with htpasswd from a certificate in a Kubernetes
// Secret volume, and has clients verify it with the test's CA and no
// "insecure" flag: skopeo (--cert-dir), crane (SSL_CERT_FILE), `nixery
// build` (--ca and SSL_CERT_FILE; its event stream), the pages' pull
// commands, the Docker engine (/etc/docker/certs.d); then the
// certificate is renewed on disk, first into a broken pair, then a
// good one, while a blob download is in flight.
func TestTLS(t *testing.T) {
	needServer(t)
	f := newTLSFiles(t)
	tmp := t.TempDir()
	storageDir := filepath.Join(tmp, "storage")
	s, err := startWith(tmp, storageDir, f.client(nil, true),
		append(f.env(), "NIXERY_HTPASSWD="+f.htpasswd, "NIXERY_TLS_RELOAD_INTERVAL=1")...)
	if err != nil {
		t.Fatal(err)
	}
	defer s.stop()
	ref := "docker://" + s.addr + "/shell/hello"

	t.Run("skopeo", func(t *testing.T) {
		out := run(t, "skopeo", "inspect", "--cert-dir", f.certDir, "--creds", "alice:correct horse", ref)
		if !strings.Contains(out, `"Digest": "sha256:`) {
			t.Errorf("skopeo inspect: %s", out)
		}
		// Verified: without the CA the certificate is not trusted.
		if out := fails(t, "skopeo", "inspect", "--creds", "alice:correct horse", ref); !strings.Contains(out, "certificate signed by unknown authority") {
			t.Errorf("skopeo inspect without the CA:\n%s", out)
		}
		if out := fails(t, "skopeo", "inspect", "--cert-dir", f.certDir, ref); !strings.Contains(strings.ToLower(out), "unauthorized") {
			t.Errorf("skopeo inspect without a password:\n%s", out)
		}
		dir := t.TempDir()
		layout := filepath.Join(dir, "oci")
		run(t, "skopeo", "--insecure-policy", "copy", "--src-cert-dir", f.certDir, "--src-creds", "alice:correct horse", ref, "oci:"+layout+":latest")
		run(t, "umoci", "unpack", "--image", layout+":latest", filepath.Join(dir, "bundle"))
		if out := inImage(t, filepath.Join(dir, "bundle", "rootfs"), "hello"); !strings.Contains(out, "Hello, world!") {
			t.Errorf("hello printed %q", out)
		}
	})

	t.Run("crane", func(t *testing.T) {
		bin := crane(t)
		env := append(os.Environ(), "SSL_CERT_FILE="+f.caFile, "DOCKER_CONFIG="+t.TempDir())
		login := exec.Command(bin, "auth", "login", s.addr, "-u", "alice", "--password-stdin")
		login.Env, login.Stdin = env, strings.NewReader("correct horse")
		if out, err := login.CombinedOutput(); err != nil {
			t.Fatalf("crane auth login: %v\n%s", err, out)
		}
		validate := exec.Command(bin, "validate", "--remote", s.addr+"/shell/hello")
		validate.Env = env
		if out, err := validate.CombinedOutput(); err != nil || !strings.HasPrefix(string(out), "PASS") {
			t.Errorf("crane validate over TLS: %v\n%s", err, out)
		}
	})

	t.Run("nixery build", func(t *testing.T) {
		server := "https://alice:correct%20horse@" + s.addr
		withCA := exec.Command(bin, "build", "--server", server, "--ca", f.caFile, "nonroot/hello")
		withCA.Env = os.Environ()
		withEnv := exec.Command(bin, "build", "--server", server, "shell/nonroot/hello")
		withEnv.Env = append(os.Environ(), "SSL_CERT_FILE="+f.caFile)
		for _, cmd := range []*exec.Cmd{withCA, withEnv} {
			out, err := cmd.CombinedOutput()
			want := "docker pull " + s.addr + "/" + cmd.Args[len(cmd.Args)-1] + "\n"
			if err != nil || !strings.Contains(string(out), "phase pack") || !strings.HasSuffix(string(out), want) ||
				strings.Contains(string(out), "tls-verify") || strings.Contains(string(out), "horse") {
				t.Errorf("%s: %v\n%s", strings.Join(cmd.Args[1:], " "), err, out)
			}
		}
		out, err := exec.Command(bin, "build", "--server", server, "hello").CombinedOutput()
		if err == nil || !strings.Contains(string(out), "certificate signed by unknown authority") || strings.Contains(string(out), "horse") {
			t.Errorf("nixery build without the CA: %v\n%s", err, out)
		}
	})

	t.Run("pages", func(t *testing.T) {
		resp, body := s.get(t, "GET", "/image/shell/hello", "")
		page := string(body)
		if resp.StatusCode != 200 || resp.ProtoMajor != 2 || !strings.Contains(page, "podman pull "+s.addr+"/shell/hello") ||
			!strings.Contains(page, "skopeo copy docker://"+s.addr+"/shell/hello") || strings.Contains(page, "tls-verify") ||
			strings.Contains(page, "http://") {
			t.Errorf("image page over TLS: %d %s\n%s", resp.StatusCode, resp.Proto, page)
		}
	})

	t.Run("docker", func(t *testing.T) {
		proxy := connectProxy(t, dockerHost+":"+strings.Split(s.addr, ":")[1], s.addr)
		d := startDocker(t, "HTTPS_PROXY=http://"+proxy.addr, "https_proxy=http://"+proxy.addr,
			"HTTP_PROXY=", "http_proxy=", "NO_PROXY=", "no_proxy=")
		reg := dockerHost + ":" + strings.Split(s.addr, ":")[1]
		login := func() (string, error) {
			stdout, stderr, err := d.docker(2*time.Minute, "login", "-u", "alice", "-p", "correct horse", reg)
			return stdout + stderr, err
		}
		// Without the CA in certs.d, Docker does not trust the server.
		if out, err := login(); err == nil || !strings.Contains(out, "certificate signed by unknown authority") {
			t.Fatalf("docker login without the CA (%v):\n%s", err, out)
		}
		certsDir(t, reg, f.ca.PEM)
		if out, err := login(); err != nil {
			t.Fatalf("docker login: %v\n%s\n%s", err, out, tail(d.log.String(), 20))
		}
		d.must(t, "pull", reg+"/shell/hello")
		if out := d.must(t, "run", "--rm", "--network", "none", reg+"/shell/hello", "hello"); out != "Hello, world!\n" {
			t.Errorf("docker run printed %q", out)
		}
		if proxy.connects.Load() == 0 {
			t.Errorf("Docker did not go through the proxy")
		}
	})

	t.Run("renewal", func(t *testing.T) {
		renewal(t, s, f, storageDir)
	})
}

// renewal: a certificate renewed on disk is served to new connections
// within a minute (here: within the reload interval of 1 s), while a
// download in flight on a connection of the old one completes; a broken
// pair first keeps the old one, says so in the log and /readyz.
func renewal(t *testing.T, s *nixery, f *tlsFiles, storageDir string) {
	// A 64 MiB blob, downloaded across the renewal.
	blob := make([]byte, 64<<20)
	rand.Read(blob)
	sum := sha256.Sum256(blob)
	if err := os.WriteFile(filepath.Join(storageDir, "blobs", "sha256", hex.EncodeToString(sum[:])), blob, 0o644); err != nil {
		t.Fatal(err)
	}
	resp, err := f.client(nil, true).Get(s.url("/v2/shell/hello/blobs/sha256:" + hex.EncodeToString(sum[:])))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("blob: %s", resp.Status)
	}
	h := sha256.New()
	if _, err := io.CopyN(h, resp.Body, 1<<20); err != nil {
		t.Fatal(err)
	}
	if !resp.TLS.PeerCertificates[0].Equal(f.serving.Cert) {
		t.Fatalf("the download's connection has %s", resp.TLS.PeerCertificates[0].Subject)
	}

	// served is the certificate a new connection gets.
	served := func() *x509.Certificate {
		roots := x509.NewCertPool()
		roots.AddCert(f.ca.Cert)
		conn, err := tls.Dial("tcp", s.addr, &tls.Config{RootCAs: roots})
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		return conn.ConnectionState().PeerCertificates[0]
	}

	// Half a renewal: a new certificate with another's key.
	renewed := f.ca.Issue(t, certstest.Leaf{Name: "renewed", Hosts: []string{"127.0.0.1", dockerHost}})
	other := f.ca.Issue(t, certstest.Leaf{Name: "other", Hosts: []string{"127.0.0.1"}})
	f.swap(t, "..broken", renewed.CertPEM, other.KeyPEM)
	waitFor(t, s, "the broken pair logged", time.Minute, func() bool {
		return strings.Contains(s.log.String(), "TLS certificate files are not usable")
	})
	if c := served(); !c.Equal(f.serving.Cert) {
		t.Errorf("after a broken renewal, new connections get %s", c.Subject)
	}
	resp2, body := s.get(t, "GET", "/readyz", "")
	if resp2.StatusCode != 200 || !strings.Contains(string(body), "warning: the TLS certificate files changed into a pair that is not usable") {
		t.Errorf("/readyz with a broken pair: %d %s", resp2.StatusCode, body)
	}

	// The renewal completed: served to new connections.
	f.swap(t, "..renewed", renewed.CertPEM, renewed.KeyPEM)
	swapped := time.Now()
	waitFor(t, s, "the renewed certificate served", time.Minute, func() bool { return served().Equal(renewed.Cert) })
	t.Logf("the renewed certificate was served %s after the swap", time.Since(swapped).Round(10*time.Millisecond))
	if _, body := s.get(t, "GET", "/readyz", ""); string(body) != "ready\n" {
		t.Errorf("/readyz after the renewal: %s", body)
	}
	out := run(t, "skopeo", "inspect", "--cert-dir", f.certDir, "--creds", "alice:correct horse", "docker://"+s.addr+"/shell/hello")
	if !strings.Contains(out, `"Digest": "sha256:`) {
		t.Errorf("skopeo inspect after the renewal: %s", out)
	}

	// The download in flight completes, on its old connection.
	if _, err := io.Copy(h, resp.Body); err != nil {
		t.Fatalf("the download in flight: %v", err)
	}
	if got := h.Sum(nil); string(got) != string(sum[:]) {
		t.Errorf("the download in flight has digest %x, want %x", got, sum)
	}
	if strings.Contains(s.log.String(), "PRIVATE KEY") || strings.Contains(s.log.String(), "horse") {
		t.Errorf("the server log shows a key or a password")
	}
}

// proxy is an HTTP CONNECT proxy on 127.0.0.1 that connects one name
// (host:port) to one address, and nothing else.
type proxy struct {
	addr     string
	connects atomic.Int64
}

func connectProxy(t *testing.T, name, to string) *proxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &proxy{addr: ln.Addr().String()}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	t.Cleanup(func() { cancel(); ln.Close(); <-done })
	go func() {
		defer close(done)
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go p.serve(ctx, c, name, to)
		}
	}()
	return p
}

func (p *proxy) serve(ctx context.Context, c net.Conn, name, to string) {
	defer c.Close()
	stop := context.AfterFunc(ctx, func() { c.Close() })
	defer stop()
	req, err := http.ReadRequest(bufio.NewReader(c))
	if err != nil {
		return
	}
	if req.Method != http.MethodConnect || req.Host != name {
		io.WriteString(c, "HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n")
		return
	}
	up, err := net.Dial("tcp", to)
	if err != nil {
		io.WriteString(c, "HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\n\r\n")
		return
	}
	defer up.Close()
	p.connects.Add(1)
	io.WriteString(c, "HTTP/1.1 200 Connection established\r\n\r\n")
	go func() { io.Copy(up, c); up.(*net.TCPConn).CloseWrite() }()
	io.Copy(c, up)
}

// certsDir puts the CA into /etc/docker/certs.d/<reg>/ca.crt, where the
// Docker engine looks for it (the path is fixed for an engine run as
// root), and removes what it made when the test ends.
func certsDir(t *testing.T, reg string, caPEM []byte) {
	t.Helper()
	var made []string
	for _, d := range []string{"/etc/docker", "/etc/docker/certs.d", "/etc/docker/certs.d/" + reg} {
		if _, err := os.Stat(d); errors.Is(err, os.ErrNotExist) {
			if err := os.Mkdir(d, 0o755); err != nil {
				t.Fatal(err)
			}
			made = append(made, d)
		}
	}
	if len(made) == 0 || made[len(made)-1] != "/etc/docker/certs.d/"+reg {
		t.Fatalf("/etc/docker/certs.d/%s exists already", reg)
	}
	t.Cleanup(func() {
		// The registry's directory, then the ones made for it if nothing
		// else has come into them meanwhile.
		if err := os.RemoveAll(made[len(made)-1]); err != nil {
			t.Error(err)
		}
		for i := len(made) - 2; i >= 0; i-- {
			os.Remove(made[i])
		}
	})
	if err := os.WriteFile("/etc/docker/certs.d/"+reg+"/ca.crt", caPEM, 0o644); err != nil {
		t.Fatal(err)
	}
}

// TestTLSClientCertificates serves HTTPS with a client CA, htpasswd and
// the probes open: skopeo with a client certificate of that CA (and a
// password) pulls; with none, or one of another CA, it is refused; the
// probes answer without a certificate.
func TestTLSClientCertificates(t *testing.T) {
	needServer(t)
	f := newTLSFiles(t)
	tmp := t.TempDir()
	clientCA := certstest.NewCA(t, "client CA")
	clientCAFile := filepath.Join(f.dir, "clients.crt")
	os.WriteFile(clientCAFile, clientCA.PEM, 0o644)
	alice := clientCA.Issue(t, certstest.Leaf{Name: "alice"})
	mallory := certstest.NewCA(t, "another CA").Issue(t, certstest.Leaf{Name: "mallory"})
	s, err := startWith(tmp, filepath.Join(tmp, "storage"), f.client(&alice, true),
		append(f.env(), "NIXERY_HTPASSWD="+f.htpasswd, "NIXERY_TLS_CLIENT_CA="+clientCAFile, "NIXERY_TLS_PROBES_PUBLIC=true")...)
	if err != nil {
		t.Fatal(err)
	}
	defer s.stop()
	ref := "docker://" + s.addr + "/shell/hello"

	// skopeo's cert dir: the server's CA, and a client certificate.
	certDir := func(name string, pair *certstest.Pair) string {
		dir := filepath.Join(f.dir, name)
		os.Mkdir(dir, 0o755)
		os.WriteFile(filepath.Join(dir, "ca.crt"), f.ca.PEM, 0o644)
		if pair != nil {
			pair.Write(t, dir, "client.cert", "client.key")
		}
		return dir
	}
	aliceDir, malloryDir, noneDir := certDir("alice", &alice), certDir("mallory", &mallory), certDir("none", nil)

	dir := t.TempDir()
	layout := filepath.Join(dir, "oci")
	run(t, "skopeo", "--insecure-policy", "copy", "--src-cert-dir", aliceDir, "--src-creds", "alice:correct horse", ref, "oci:"+layout+":latest")
	run(t, "umoci", "unpack", "--image", layout+":latest", filepath.Join(dir, "bundle"))
	if out := inImage(t, filepath.Join(dir, "bundle", "rootfs"), "hello"); !strings.Contains(out, "Hello, world!") {
		t.Errorf("hello printed %q", out)
	}
	// Both must pass: the certificate without the password is not enough.
	if out := fails(t, "skopeo", "inspect", "--cert-dir", aliceDir, ref); !strings.Contains(strings.ToLower(out), "unauthorized") {
		t.Errorf("a certificate without a password:\n%s", out)
	}
	// Without a certificate of the client CA: 403 DENIED, whatever the
	// password (skopeo sends no certificate the server's CA list does
	// not name, so mallory's is not even sent).
	for _, d := range []string{noneDir, malloryDir} {
		out := fails(t, "skopeo", "inspect", "--cert-dir", d, "--creds", "alice:correct horse", ref)
		if !strings.Contains(out, "denied") && !strings.Contains(out, "403") {
			t.Errorf("skopeo with %s:\n%s", filepath.Base(d), out)
		}
	}
	// Presented anyway, mallory's certificate fails the handshake.
	roots := x509.NewCertPool()
	roots.AddCert(f.ca.Cert)
	c, _ := tls.X509KeyPair(mallory.CertPEM, mallory.KeyPEM)
	conn, err := tls.Dial("tcp", s.addr, &tls.Config{RootCAs: roots,
		GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return &c, nil }})
	if err == nil {
		fmt.Fprintf(conn, "GET /v2/ HTTP/1.1\r\nHost: %s\r\n\r\n", s.addr)
		_, err = conn.Read(make([]byte, 1))
		conn.Close()
	}
	if err == nil {
		t.Errorf("a client certificate of another CA was accepted")
	}
	// The probes are open, to a client that trusts the server.
	for _, p := range []string{"/healthz", "/readyz"} {
		resp, err := f.client(nil, false).Get(s.url(p))
		if err != nil || resp.StatusCode != 200 {
			t.Errorf("%s without a certificate: %v %v", p, err, resp)
		}
		if resp != nil {
			resp.Body.Close()
		}
	}
}

// TestTLSBlobRedirect serves HTTPS on an S3 bucket: blob downloads are
// redirected to the bucket's signed URLs, which skopeo, verifying the
// registry's certificate, follows to a complete pull.
func TestTLSBlobRedirect(t *testing.T) {
	needServer(t)
	f := newTLSFiles(t)
	srv := startBucket(t, "s3")
	tmp := t.TempDir()
	s, err := startWith(tmp, filepath.Join(tmp, "unused"), f.client(nil, false), append(f.env(), bucketEnv("s3", srv)...)...)
	if err != nil {
		t.Fatal(err)
	}
	defer s.stop()
	dir := t.TempDir()
	layout := filepath.Join(dir, "oci")
	run(t, "skopeo", "--insecure-policy", "copy", "--src-cert-dir", f.certDir, "docker://"+s.addr+"/shell/hello", "oci:"+layout+":latest")
	run(t, "umoci", "unpack", "--image", layout+":latest", filepath.Join(dir, "bundle"))
	if out := inImage(t, filepath.Join(dir, "bundle", "rootfs"), "hello"); !strings.Contains(out, "Hello, world!") {
		t.Errorf("hello printed %q", out)
	}
	// The blobs came by redirect.
	config := imageConfigFrom(t, s, "shell/hello", "application/vnd.oci.image.manifest.v1+json")
	client := f.client(nil, false)
	client.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	resp, err := client.Get(s.url("/v2/shell/hello/blobs/" + config))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusTemporaryRedirect || !strings.HasPrefix(resp.Header.Get("Location"), srv.Endpoint) {
		t.Errorf("blob over TLS: %s, Location %q; want a redirect to the bucket %s", resp.Status, resp.Header.Get("Location"), srv.Endpoint)
	}
}
