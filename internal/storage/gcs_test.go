package storage_test

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nixery/nixery/internal/storage"
	"github.com/nixery/nixery/internal/storage/storagetest"
)

// newGCS returns a GCS backend on the emulator srv with a prefix of its
// own, so each test sees an empty store.
func newGCS(t *testing.T, srv *storagetest.Server, edit func(*storage.GCSConfig)) *storage.GCS {
	cfg := storage.GCSConfig{
		Bucket:   srv.Bucket,
		Prefix:   fmt.Sprintf("t%d/", prefixes.Add(1)),
		Endpoint: srv.Endpoint,
		PartSize: 5 << 20,
	}
	if edit != nil {
		edit(&cfg)
	}
	b, err := storage.NewGCS(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close() })
	return b
}

func TestGCSSuite(t *testing.T) {
	srv := storagetest.StartGCS(t)
	storagetest.Run(t, func(t *testing.T) storage.Backend { return newGCS(t, srv, nil) })
}

func TestGCSDamaged(t *testing.T) {
	srv := storagetest.StartGCS(t)
	storagetest.RunDamaged(t, func(t *testing.T) storage.Backend { return newGCS(t, srv, nil) }, storagetest.Unchecked{Blob: storage.PutUnverified, Object: storage.PutObjectUnchecked})
}

func TestGCSTemporaries(t *testing.T) {
	srv := storagetest.StartGCS(t)
	storagetest.RunTemporaries(t, func(t *testing.T) storagetest.Shared {
		prefix := fmt.Sprintf("t%d/", prefixes.Add(1))
		open := func() *storage.GCS {
			return newGCS(t, srv, func(c *storage.GCSConfig) { c.Prefix = prefix })
		}
		b := open()
		return storagetest.Shared{
			Backend: b,
			Open:    func() storage.Backend { return open() },
			Abandon: func(t *testing.T) {
				if err := storage.LeaveGCSTemporary(context.Background(), b, storagetest.Data(12, storagetest.LargeSize)); err != nil {
					t.Fatal(err)
				}
			},
		}
	})
}

func TestGCSRedirect(t *testing.T) {
	srv := storagetest.StartGCS(t)
	ctx := context.Background()

	// A signing key as in GCS_SIGNING_KEY / GCS_SIGNING_ACCOUNT.
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	keyFile := filepath.Join(t.TempDir(), "key.pem")
	pemKey := pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(key)})
	if err := os.WriteFile(keyFile, pemKey, 0o600); err != nil {
		t.Fatal(err)
	}

	for _, tc := range []struct {
		name   string
		edit   func(*storage.GCSConfig)
		signed bool
	}{
		{"unsigned", nil, false},
		{"signed", func(c *storage.GCSConfig) {
			c.SigningAccount, c.SigningKeyFile = "nixery@example.iam.gserviceaccount.com", keyFile
		}, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b := newGCS(t, srv, tc.edit)
			d, err := storage.Put(ctx, b, []byte("redirect me"))
			if err != nil {
				t.Fatal(err)
			}
			url, ok, err := storage.RedirectURL(ctx, b, d)
			if err != nil || !ok {
				t.Fatalf("RedirectURL = %q, %v, %v", url, ok, err)
			}
			if !strings.HasPrefix(url, srv.Endpoint+"/"+srv.Bucket+"/") || strings.Contains(url, "X-Goog-Signature") != tc.signed {
				t.Fatalf("RedirectURL = %s", url)
			}
			// The emulator serves the object's public URL (it does not
			// check signatures).
			resp, err := http.Get(url)
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != 200 || string(body) != "redirect me" {
				t.Fatalf("GET %s: %d %q", url, resp.StatusCode, body)
			}
		})
	}

	proxied := newGCS(t, srv, func(c *storage.GCSConfig) { c.DisableRedirect = true })
	d, _ := storage.Put(ctx, proxied, []byte("x"))
	if url, ok, err := storage.RedirectURL(ctx, proxied, d); ok || err != nil {
		t.Fatalf("RedirectURL with redirects disabled = %q, %v, %v", url, ok, err)
	}
}

func TestGCSOutage(t *testing.T) {
	srv := storagetest.StartGCS(t)
	storagetest.RunOutage(t, srv, newGCS(t, srv, nil))
}

func TestGCSHang(t *testing.T) {
	srv := storagetest.StartGCS(t)
	storagetest.RunHang(t, srv, newGCS(t, srv, func(c *storage.GCSConfig) {
		c.Timeout, c.TransferTimeout = time.Second, 2*time.Second
	}))
}
