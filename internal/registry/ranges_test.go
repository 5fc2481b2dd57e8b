package registry_test

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/opencontainers/go-digest"

	"github.com/nixery/nixery/internal/registry"
	"github.com/nixery/nixery/internal/storage"
)

// A Range of a few ranges is answered as RFC 9110 says (206, multipart
// for several); one of very many small ranges, which costs a part each
// and helps no client, is ignored as RFC 9110 §14.2 allows: the whole
// blob, as for a plain GET.
func TestManyRanges(t *testing.T) {
	store, err := storage.NewFilesystem(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	data := bytes.Repeat([]byte("0123456789abcdef"), 1<<16) // 1 MiB
	w, err := store.Create(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	w.Write(data)
	d := digest.FromBytes(data)
	if err := w.Commit(d); err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(&registry.Registry{Storage: store})
	defer srv.Close()
	many := make([]string, 5000)
	for i := range many {
		many[i] = fmt.Sprintf("%d-%d", 2*i, 2*i)
	}
	for _, tt := range []struct {
		ranges      string
		status      int
		contentType string
		length      int64
	}{
		{"bytes=0-9", 206, "application/octet-stream", 10},
		{"bytes=0-9,100-109", 206, "multipart/byteranges", -1},
		{"bytes=" + strings.Join(many[:16], ","), 206, "multipart/byteranges", -1},
		{"bytes=" + strings.Join(many[:17], ","), 200, "application/octet-stream", int64(len(data))},
		{"bytes=" + strings.Join(many, ","), 200, "application/octet-stream", int64(len(data))},
	} {
		req, _ := http.NewRequest("GET", srv.URL+"/v2/hello/blobs/"+d.String(), nil)
		req.Header.Set("Range", tt.ranges)
		resp, err := srv.Client().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		n, _ := io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != tt.status || !strings.HasPrefix(resp.Header.Get("Content-Type"), tt.contentType) || (tt.length >= 0 && n != tt.length) {
			t.Errorf("%d ranges: %d %s, %d bytes; want %d %s, %d bytes", strings.Count(tt.ranges, ",")+1, resp.StatusCode, resp.Header.Get("Content-Type"), n, tt.status, tt.contentType, tt.length)
		}
	}
}
