package access_test

import (
	"crypto/tls"
	"crypto/x509"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/nixery/nixery/internal/access"
)

func TestRequire(t *testing.T) {
	u, _, _ := newUsers(t, "alice:"+hash(t, "wonderland")+"\n")
	g := &access.Guard{Users: u}
	reached := 0
	h := g.Identify(g.Require(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		reached++
		io.WriteString(w, "client "+access.Client(r.Context()))
	}), nil))
	tests := []struct {
		name           string
		user, password string
		basic          bool
		status         int
		body           string
	}{
		{"right", "alice", "wonderland", true, 200, "client alice"},
		{"wrong password", "alice", "alice", true, 401, "401 Unauthorized"},
		{"unknown user", "bob", "wonderland", true, 401, "401 Unauthorized"},
		{"empty", "", "", true, 401, "401 Unauthorized"},
		{"anonymous", "", "", false, 401, "401 Unauthorized"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			reached = 0
			req := httptest.NewRequest("GET", "/x", nil)
			if tt.basic {
				req.SetBasicAuth(tt.user, tt.password)
			}
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, req)
			if rec.Code != tt.status || rec.Body.String()[:len(tt.body)] != tt.body {
				t.Fatalf("%d %q, want %d %q", rec.Code, rec.Body, tt.status, tt.body)
			}
			if tt.status == 401 {
				if got := rec.Header().Get("WWW-Authenticate"); got != `Basic realm="Nixery"` {
					t.Errorf("WWW-Authenticate = %q", got)
				}
				if reached != 0 {
					t.Errorf("the handler behind the guard ran")
				}
			}
		})
	}
	// A custom answer for the denied, e.g. the registry's error body.
	h = g.Require(http.NotFoundHandler(), func(w http.ResponseWriter, r *http.Request, err error) {
		w.WriteHeader(499)
	})
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest("GET", "/", nil))
	if rec.Code != 499 || rec.Header().Get("WWW-Authenticate") == "" {
		t.Errorf("deny: %d %v", rec.Code, rec.Header())
	}
	// Without users nothing is required.
	open := (&access.Guard{}).Require(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}), nil)
	rec = httptest.NewRecorder()
	open.ServeHTTP(rec, httptest.NewRequest("GET", "/", nil))
	if rec.Code != 200 {
		t.Errorf("no users: %d", rec.Code)
	}
}

func TestClient(t *testing.T) {
	tests := []struct {
		remote     string
		xff        []string
		trustProxy bool
		want       string
	}{
		{"192.0.2.1:5000", nil, false, "192.0.2.1"},
		{"[2001:db8::1]:5000", nil, false, "2001:db8::1"},
		{"[::ffff:192.0.2.1]:5000", nil, false, "192.0.2.1"},
		// Not trusted: the header is the client's own say.
		{"192.0.2.1:5000", []string{"203.0.113.9"}, false, "192.0.2.1"},
		// Trusted: the proxy's entry is the last one.
		{"10.0.0.2:5000", []string{"203.0.113.9"}, true, "203.0.113.9"},
		{"10.0.0.2:5000", []string{"198.51.100.7, 203.0.113.9"}, true, "203.0.113.9"},
		{"10.0.0.2:5000", []string{"198.51.100.7", "203.0.113.9"}, true, "203.0.113.9"},
		{"10.0.0.2:5000", []string{"203.0.113.9:4711"}, true, "203.0.113.9"},
		{"10.0.0.2:5000", []string{"not-an-address"}, true, "10.0.0.2"},
		{"10.0.0.2:5000", nil, true, "10.0.0.2"},
	}
	for _, tt := range tests {
		g := &access.Guard{TrustProxy: tt.trustProxy}
		var got string
		h := g.Identify(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { got = access.Client(r.Context()) }))
		req := httptest.NewRequest("GET", "/", nil)
		req.RemoteAddr = tt.remote
		for _, v := range tt.xff {
			req.Header.Add("X-Forwarded-For", v)
		}
		h.ServeHTTP(httptest.NewRecorder(), req)
		if got != tt.want {
			t.Errorf("%s %v trust=%v: Client = %q, want %q", tt.remote, tt.xff, tt.trustProxy, got, tt.want)
		}
	}
}

// With ClientCertificates, a request passes only over a connection whose
// client certificate the handshake verified, and with Users only with a
// user's credentials too: both must pass. Without a certificate it is
// 403, whatever it sends.
func TestRequireClientCertificate(t *testing.T) {
	u, _, _ := newUsers(t, "alice:"+hash(t, "wonderland")+"\n")
	verified := &tls.ConnectionState{VerifiedChains: [][]*x509.Certificate{{{}}}}
	for _, tt := range []struct {
		name   string
		users  *access.Users
		tls    *tls.ConnectionState
		basic  bool
		status int
		body   string
	}{
		{"certificate", nil, verified, false, 200, "reached"},
		{"plain HTTP", nil, nil, false, 403, "403 Forbidden: a client certificate signed by this registry's client CA is required"},
		{"TLS without a certificate", nil, &tls.ConnectionState{}, false, 403, "403 Forbidden"},
		{"certificate and user", u, verified, true, 200, "reached"},
		{"certificate, no user", u, verified, false, 401, "401 Unauthorized"},
		{"user, no certificate", u, &tls.ConnectionState{}, true, 403, "403 Forbidden"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			g := &access.Guard{Users: tt.users, ClientCertificates: true}
			h := g.Identify(g.Require(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				io.WriteString(w, "reached")
			}), nil))
			req := httptest.NewRequest("GET", "/x", nil)
			req.TLS = tt.tls
			if tt.basic {
				req.SetBasicAuth("alice", "wonderland")
			}
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, req)
			if rec.Code != tt.status || !strings.HasPrefix(rec.Body.String(), tt.body) {
				t.Errorf("%d %q, want %d %q", rec.Code, rec.Body, tt.status, tt.body)
			}
		})
	}
}
