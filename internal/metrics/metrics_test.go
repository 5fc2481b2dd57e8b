package metrics

import (
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/nixery/nixery/internal/certs"
	"github.com/nixery/nixery/internal/certs/certstest"
	"github.com/nixery/nixery/internal/route"
)

func TestInstrument(t *testing.T) {
	reg := prometheus.NewRegistry()
	m := NewHTTP(reg)
	var logged strings.Builder
	log := slog.New(slog.NewTextHandler(&logged, nil))
	// The handler names the route of what it serves; a request it does
	// not name counts as web.
	h := Instrument(log, m, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/v2/x/blobs/sha256:00":
			route.Name(r, route.V2Blob)
			io.Copy(w, strings.NewReader("twelve bytes")) // through ReadFrom
		case "/api/build/x/events":
			route.Name(r, route.APIEvents)
			w.Write([]byte("data: {}\n\n"))
			if err := http.NewResponseController(w).Flush(); err != nil {
				t.Errorf("flush through the recorder: %v", err)
			}
		default:
			http.NotFound(w, r)
		}
	}))
	for _, p := range []string{"/v2/x/blobs/sha256:00", "/api/build/x/events", "/nope"} {
		h.ServeHTTP(httptest.NewRecorder(), httptest.NewRequest("GET", p, nil))
	}
	rec := httptest.NewRecorder()
	Handler(reg).ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	out := rec.Body
	for _, want := range []string{
		`nixery_http_requests_total{code="2xx",route="v2_blob"} 1`,
		`nixery_http_requests_total{code="4xx",route="web"} 1`,
		`nixery_http_response_bytes_total{route="v2_blob"} 12`,
		`nixery_http_request_duration_seconds_bucket{route="api_events",le="+Inf"} 1`,
		`nixery_http_request_duration_seconds_count{route="web"} 1`,
	} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("metrics lack %s:\n%s", want, out.String())
		}
	}
	if !strings.Contains(logged.String(), "route=v2_blob path=/v2/x/blobs/sha256:00 status=200 bytes=12") {
		t.Errorf("request log: %s", logged.String())
	}
}

// The certificate's expiry, and whether its files are the pair in use;
// nothing without TLS.
func TestCertificate(t *testing.T) {
	dir := t.TempDir()
	ca := certstest.NewCA(t, "test CA")
	pair := ca.Issue(t, certstest.Leaf{Name: "nixery", Hosts: []string{"127.0.0.1"}})
	certFile, keyFile := pair.Write(t, dir, "tls.crt", "tls.key")
	p, err := certs.Load(certFile, keyFile, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	gather := func(c prometheus.Collector) map[string]float64 {
		reg := prometheus.NewRegistry()
		reg.MustRegister(c)
		families, err := reg.Gather()
		if err != nil {
			t.Fatal(err)
		}
		got := map[string]float64{}
		for _, f := range families {
			got[f.GetName()] = f.GetMetric()[0].GetGauge().GetValue()
		}
		return got
	}
	expiry := float64(pair.Cert.NotAfter.Unix())
	if got := gather(Certificate(p)); len(got) != 2 || got["nixery_tls_certificate_expiry_timestamp_seconds"] != expiry || got["nixery_tls_certificate_files_unusable"] != 0 {
		t.Errorf("metrics %v, want expiry %v and files usable", got, expiry)
	}
	os.WriteFile(keyFile, ca.Issue(t, certstest.Leaf{Name: "other", Hosts: []string{"127.0.0.1"}}).KeyPEM, 0o600)
	p.Check()
	if got := gather(Certificate(p)); got["nixery_tls_certificate_expiry_timestamp_seconds"] != expiry || got["nixery_tls_certificate_files_unusable"] != 1 {
		t.Errorf("metrics with a broken pair %v", got)
	}
	if got := gather(Certificate(nil)); len(got) != 0 {
		t.Errorf("without TLS: %v", got)
	}
}
