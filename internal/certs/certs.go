// Package certs is the server's TLS, from files: its certificate and key
// (NIXERY_TLS_CERT, NIXERY_TLS_KEY), read again when they change, the CA
// bundle that client certificates must be signed by
// (NIXERY_TLS_CLIENT_CA), and the tls.Config made of them. Bundle reads
// the CA bundle `nixery build --ca` trusts too.
//
// A renewal (cert-manager, certbot) replaces the files; Kubernetes swaps
// a Secret volume's "..data" symlink to a new directory, which inotify on
// the files would not see. So the files are read every interval and
// compared with what was read before (a few KiB): a new, usable pair is
// served to the handshakes from then on (tls.Config.GetCertificate),
// while the connections open stay as they are. A pair that is not
// usable (a key that does not match, a file missing halfway through a
// renewal) leaves the one in use, and is logged once and reported by
// Problem, for /readyz.
//
// The key's contents appear in no log line or error: only the files'
// names and what is wrong with them.
package certs

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nixery/nixery/internal/every"
)

// maxFileBytes bounds what is read of each file: a certificate chain and
// a key are a few KiB, a CA bundle (all of Mozilla's) about 220 KiB.
const maxFileBytes = 1 << 20

// Pair is the certificate and key a server presents, from two files.
type Pair struct {
	certFile, keyFile string
	logger            *slog.Logger

	current atomic.Pointer[tls.Certificate]

	mu      sync.Mutex
	seen    [sha256.Size]byte // of the files as last read
	problem error             // why the files as last read are not in use; nil if they are
}

// Load reads the certificate and key files; an error names the file
// and what is wrong with it. logger gets each change (nil:
// slog.Default()).
func Load(certFile, keyFile string, logger *slog.Logger) (*Pair, error) {
	if logger == nil {
		logger = slog.Default()
	}
	p := &Pair{certFile: certFile, keyFile: keyFile, logger: logger}
	certPEM, keyPEM, sum, err := p.read()
	if err != nil {
		return nil, err
	}
	cert, err := p.parse(certPEM, keyPEM)
	if err != nil {
		return nil, err
	}
	p.seen = sum
	p.current.Store(cert)
	return p, nil
}

// read reads both files; sum is of their contents.
func (p *Pair) read() (certPEM, keyPEM []byte, sum [sha256.Size]byte, err error) {
	if certPEM, err = readFile(p.certFile); err != nil {
		return nil, nil, sum, fmt.Errorf("certificate: %w", err)
	}
	if keyPEM, err = readFile(p.keyFile); err != nil {
		return nil, nil, sum, fmt.Errorf("key: %w", err)
	}
	h := sha256.New()
	for _, b := range [][]byte{certPEM, keyPEM} {
		binary.Write(h, binary.BigEndian, uint64(len(b)))
		h.Write(b)
	}
	h.Sum(sum[:0])
	return certPEM, keyPEM, sum, nil
}

// parse makes the pair of the files' contents.
func (p *Pair) parse(certPEM, keyPEM []byte) (*tls.Certificate, error) {
	c, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		// crypto/tls's messages name the problem, never the key.
		return nil, fmt.Errorf("certificate %s and key %s: %w", p.certFile, p.keyFile, err)
	}
	return &c, nil
}

// readFile reads at most maxFileBytes of a file; os's errors name it.
func readFile(name string) ([]byte, error) {
	f, err := os.Open(name)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, maxFileBytes+1))
	if err != nil {
		return nil, fmt.Errorf("reading %s: %w", name, err)
	}
	if len(data) > maxFileBytes {
		return nil, fmt.Errorf("%s is larger than %d KiB", name, maxFileBytes>>10)
	}
	return data, nil
}

// GetCertificate is the certificate for a handshake: the one in use
// (tls.Config.GetCertificate).
func (p *Pair) GetCertificate(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	return p.current.Load(), nil
}

// Leaf is the certificate in use.
func (p *Pair) Leaf() *x509.Certificate { return p.current.Load().Leaf }

// Problem is why the files, as last read, are not the pair in use; nil
// when they are.
func (p *Pair) Problem() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.problem
}

// Check reads the files again: a changed, usable pair is used from now
// on; one that is not usable leaves the one in use. Each change is
// logged once. Run calls it every interval; tests call it when they
// have changed the files.
func (p *Pair) Check() {
	p.mu.Lock()
	defer p.mu.Unlock()
	certPEM, keyPEM, sum, err := p.read()
	if err == nil && sum == p.seen {
		return // unchanged: in use, or known to be unusable
	}
	var cert *tls.Certificate
	if err == nil {
		cert, err = p.parse(certPEM, keyPEM)
	}
	p.seen = sum // zero if unreadable: read again until they are back
	if err != nil {
		if p.problem == nil || p.problem.Error() != err.Error() {
			leaf := p.Leaf()
			p.logger.Error("TLS certificate files are not usable; the certificate loaded before stays in use",
				"err", err, "in_use", describe(leaf), "expires", leaf.NotAfter)
		}
		p.problem = err
		return
	}
	p.current.Store(cert)
	p.problem = nil
	p.logger.Info("TLS certificate loaded", "certificate", describe(cert.Leaf), "expires", cert.Leaf.NotAfter)
}

// Run checks the files every interval until ctx ends.
func (p *Pair) Run(ctx context.Context, interval time.Duration) {
	every.Run(ctx, interval, every.Fixed(interval), func(context.Context) { p.Check() })
}

// describe names a certificate for the log: subject, issuer, serial.
func describe(c *x509.Certificate) string {
	return fmt.Sprintf("%s (issuer %s, serial %x)", c.Subject, c.Issuer, c.SerialNumber)
}

// Bundle reads a PEM bundle of CA certificates (the client CA of a
// server, the roots of `nixery build --ca`); a file without one, or
// with a private key in it, is an error.
func Bundle(file string) (*x509.CertPool, error) {
	data, err := readFile(file)
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(data) {
		return nil, errors.New(file + " holds no PEM certificate")
	}
	if bytes.Contains(data, []byte("PRIVATE KEY")) {
		return nil, errors.New(file + " holds a private key: give only the CA's certificates")
	}
	return pool, nil
}

// ServerConfig is the TLS configuration of a server presenting p: TLS
// 1.2 at least, HTTP/2 and HTTP/1.1. With clientCAs, clients present a
// certificate signed by one of them: the handshake fails without one
// when require is set; otherwise the handshake only verifies a
// certificate that is given (a wrong one fails it), and the HTTP side
// refuses requests without one (access.Guard.ClientCertificates), but
// the probes.
func (p *Pair) ServerConfig(clientCAs *x509.CertPool, require bool) *tls.Config {
	c := &tls.Config{
		MinVersion:     tls.VersionTLS12,
		GetCertificate: p.GetCertificate,
		NextProtos:     []string{"h2", "http/1.1"},
	}
	if clientCAs != nil {
		c.ClientCAs = clientCAs
		c.ClientAuth = tls.VerifyClientCertIfGiven
		if require {
			c.ClientAuth = tls.RequireAndVerifyClientCert
		}
	}
	return c
}
