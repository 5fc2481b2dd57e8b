package web

import (
	"github.com/nixery/nixery/config"
	"net/http/httptest"
	"strings"
	"testing"
)

func TestIndex(t *testing.T) {
	p := &Page{Source: config.PathSource{Path: "/pkgs"}, Version: "test"}
	for _, tt := range []struct {
		method, path string
		status       int
		contains     string
	}{
		{"GET", "/", 200, "registry.example:5000/shell/git/htop"},
		{"GET", "/", 200, "local path /pkgs"},
		{"HEAD", "/", 200, ""},
		{"GET", "/nope", 404, ""},
		{"POST", "/", 405, ""},
	} {
		req := httptest.NewRequest(tt.method, tt.path, nil)
		req.Host = "registry.example:5000"
		rec := httptest.NewRecorder()
		p.ServeHTTP(rec, req)
		if rec.Code != tt.status || !strings.Contains(rec.Body.String(), tt.contains) {
			t.Errorf("%s %s = %d, body contains %q: %v", tt.method, tt.path, rec.Code, tt.contains, strings.Contains(rec.Body.String(), tt.contains))
		}
		if tt.status == 200 && !strings.HasPrefix(rec.Header().Get("Content-Type"), "text/html") {
			t.Errorf("Content-Type = %q", rec.Header().Get("Content-Type"))
		}
	}
}
