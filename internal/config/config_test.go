package config

import (
	"crypto/ed25519"
	"encoding/base64"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nixery/nixery/internal/nix"
	"github.com/nixery/nixery/internal/source"
)

func TestLoad(t *testing.T) {
	pkgs := t.TempDir()
	os.WriteFile(filepath.Join(pkgs, "default.nix"), []byte("{...}: {}"), 0o644)
	empty := t.TempDir()
	// A key pair in Nix's format: name, then base64 of the ed25519 key
	// (the private key is the seed followed by the public key).
	pub, priv, _ := ed25519.GenerateKey(nil)
	secretKey := filepath.Join(t.TempDir(), "cache.sec")
	os.WriteFile(secretKey, []byte("fleet-1:"+base64.StdEncoding.EncodeToString(priv)+"\n"), 0o600)
	publicKey := "fleet-1:" + base64.StdEncoding.EncodeToString(pub)

	tests := []struct {
		name    string
		args    []string
		env     map[string]string
		check   func(*testing.T, *Config)
		wantErr string
	}{
		{name: "defaults", env: map[string]string{"HOME": "/home/u"}, check: func(t *testing.T, c *Config) {
			if c.Port != 8080 || c.Source != nil || c.Backend != "filesystem" || c.NixTimeout != 60*time.Second || c.LayerBudget != 100 {
				t.Errorf("defaults: %+v", c)
			}
			if c.StoragePath != "/home/u/.cache/nixery/storage" {
				t.Errorf("storage path %q", c.StoragePath)
			}
		}},
		{name: "env", env: map[string]string{"PORT": "9000", "NIX_TIMEOUT": "5", "NIXERY_PKGS_PATH": pkgs, "STORAGE_PATH": "/srv/x"}, check: func(t *testing.T, c *Config) {
			if c.Port != 9000 || c.NixTimeout != 5*time.Second || c.StoragePath != "/srv/x" {
				t.Errorf("env: %+v", c)
			}
			if ps, ok := c.Source.(source.PathSource); !ok || ps.Path != pkgs {
				t.Errorf("source %#v", c.Source)
			}
		}},
		{name: "flag wins", args: []string{"--port", "9001", "--channel", "nixos-unstable"}, env: map[string]string{"PORT": "9000"}, check: func(t *testing.T, c *Config) {
			if c.Port != 9001 || c.Source != (source.ChannelSource{Channel: "nixos-unstable"}) {
				t.Errorf("flags: %+v", c)
			}
		}},
		{name: "repo", env: map[string]string{"NIXERY_PKGS_REPO": "https://example.org/pkgs.git"}, check: func(t *testing.T, c *Config) {
			if gs, ok := c.Source.(*source.GitSource); !ok || gs.Repository != "https://example.org/pkgs.git" || gs.TTL != 300*time.Second {
				t.Errorf("source %#v", c.Source)
			}
		}},
		{name: "source check", args: []string{"--source-check-interval", "5"}, check: func(t *testing.T, c *Config) {
			if c.SourceCheck != 5*time.Second {
				t.Errorf("source check %s", c.SourceCheck)
			}
		}},
		{name: "source check default", check: func(t *testing.T, c *Config) {
			if c.SourceCheck != time.Minute {
				t.Errorf("source check %s, want 1m", c.SourceCheck)
			}
		}},
		{name: "source check zero", env: map[string]string{"NIXERY_SOURCE_CHECK_INTERVAL": "0"}, wantErr: "NIXERY_SOURCE_CHECK_INTERVAL / --source-check-interval must be a whole number from 1 to 3600"},
		{name: "source check duration", env: map[string]string{"NIXERY_SOURCE_CHECK_INTERVAL": "1m"}, wantErr: "NIXERY_SOURCE_CHECK_INTERVAL"},
		{name: "source check too long", args: []string{"--source-check-interval=3601"}, wantErr: "source-check-interval"},
		{name: "bad port", env: map[string]string{"PORT": "http"}, wantErr: "PORT"},
		{name: "port range", args: []string{"--port=70000"}, wantErr: "PORT"},
		{name: "bad timeout", env: map[string]string{"NIX_TIMEOUT": "1m"}, wantErr: "NIX_TIMEOUT"},
		{name: "build lease beyond the collector's bound", env: map[string]string{"NIXERY_BUILD_LEASE_TTL": "601"}, wantErr: "from 1 to 600"},
		{name: "zero timeout", env: map[string]string{"NIX_TIMEOUT": "0"}, wantErr: "NIX_TIMEOUT"},
		{name: "two sources", env: map[string]string{"NIXERY_CHANNEL": "x", "NIXERY_PKGS_PATH": pkgs}, wantErr: "only one package source"},
		{name: "path without default.nix", env: map[string]string{"NIXERY_PKGS_PATH": empty}, wantErr: "default.nix"},
		{name: "flake", args: []string{"--pkgs-flake", "github:org/pkgs"}, check: func(t *testing.T, c *Config) {
			if fs, ok := c.Source.(*source.FlakeSource); !ok || fs.Ref != "github:org/pkgs" || fs.TTL != 300*time.Second {
				t.Errorf("source %#v", c.Source)
			}
		}},
		{name: "flake and repo", env: map[string]string{"NIXERY_PKGS_FLAKE": "github:org/pkgs", "NIXERY_PKGS_REPO": "https://example.org/pkgs.git"}, wantErr: "only one package source, not pkgs-repo and pkgs-flake"},
		{name: "flake and path", args: []string{"--pkgs-flake=github:org/pkgs", "--pkgs-path", pkgs}, wantErr: "NIXERY_PKGS_FLAKE (--pkgs-flake)"},
		{name: "flake without type", env: map[string]string{"NIXERY_PKGS_FLAKE": pkgs}, wantErr: "NIXERY_PKGS_FLAKE / --pkgs-flake: flake reference"},
		{name: "path flake without flake.nix", env: map[string]string{"NIXERY_PKGS_FLAKE": "path:" + empty}, wantErr: "flake.nix"},
		{name: "unknown backend", env: map[string]string{"NIXERY_STORAGE_BACKEND": "tape"}, wantErr: "must be filesystem"},
		{name: "gcs without bucket", env: map[string]string{"NIXERY_STORAGE_BACKEND": "gcs"}, wantErr: "GCS_BUCKET"},
		{name: "s3 without bucket", env: map[string]string{"NIXERY_STORAGE_BACKEND": "s3"}, wantErr: "NIXERY_S3_BUCKET"},
		{name: "half a signing key", env: map[string]string{"NIXERY_STORAGE_BACKEND": "gcs", "GCS_BUCKET": "b", "GCS_SIGNING_ACCOUNT": "a@b"}, wantErr: "both"},
		{name: "bad redirect", env: map[string]string{"NIXERY_BLOB_REDIRECT": "maybe"}, wantErr: "NIXERY_BLOB_REDIRECT"},
		{name: "gcs", env: map[string]string{"NIXERY_STORAGE_BACKEND": "gcs", "GCS_BUCKET": "imgs", "NIXERY_BLOB_REDIRECT": "false"}, check: func(t *testing.T, c *Config) {
			if c.GCS.Bucket != "imgs" || !c.GCS.DisableRedirect || c.GCS.RedirectTTL != 10*time.Minute || c.GCS.Timeout != 10*time.Second {
				t.Errorf("%+v", c.GCS)
			}
		}},
		{name: "s3", args: []string{"--s3-path-style", "--s3-endpoint", "http://127.0.0.1:9000"}, env: map[string]string{"NIXERY_STORAGE_BACKEND": "s3", "NIXERY_S3_BUCKET": "imgs", "NIXERY_STORAGE_TIMEOUT": "3"}, check: func(t *testing.T, c *Config) {
			if c.S3.Bucket != "imgs" || !c.S3.PathStyle || c.S3.Endpoint != "http://127.0.0.1:9000" || c.S3.DisableRedirect || c.S3.Timeout != 3*time.Second {
				t.Errorf("%+v", c.S3)
			}
		}},
		{name: "private", args: []string{"--htpasswd", "/etc/nixery/htpasswd", "--trust-proxy"}, env: map[string]string{"NIXERY_BUILD_RATE": "0.5", "NIXERY_BUILD_BURST": "3", "NIXERY_METRICS_PUBLIC": "true"}, check: func(t *testing.T, c *Config) {
			if c.Htpasswd != "/etc/nixery/htpasswd" || !c.TrustProxy || !c.MetricsPublic || c.BuildRate != 0.5 || c.BuildBurst != 3 {
				t.Errorf("%+v", c)
			}
		}},
		{name: "public by default", check: func(t *testing.T, c *Config) {
			if c.Htpasswd != "" || c.TrustProxy || c.MetricsPublic || c.BuildRate != 0 || c.BuildBurst != 0 {
				t.Errorf("%+v", c)
			}
		}},
		{name: "signed", args: []string{"--signing-key", "/etc/nixery/cosign.key"}, env: map[string]string{"NIXERY_SIGNING_PASSWORD_FILE": "/run/secrets/cosign-password", "NIXERY_PUBLIC_URL": "https://nixery.example.com"}, check: func(t *testing.T, c *Config) {
			if c.SigningKey != "/etc/nixery/cosign.key" || c.SigningPasswordFile != "/run/secrets/cosign-password" || c.PublicURL != "https://nixery.example.com" {
				t.Errorf("%+v", c)
			}
		}},
		{name: "a password without a key", env: map[string]string{"NIXERY_SIGNING_PASSWORD_FILE": "/run/secrets/cosign-password"}, wantErr: "needs NIXERY_SIGNING_KEY"},
		{name: "public URL without a scheme", env: map[string]string{"NIXERY_PUBLIC_URL": "nixery.example.com"}, wantErr: "NIXERY_PUBLIC_URL / --public-url"},
		{name: "public URL with credentials", env: map[string]string{"NIXERY_PUBLIC_URL": "https://alice:hunter2@nixery.example.com"}, wantErr: "without credentials"},
		{name: "bad rate", env: map[string]string{"NIXERY_BUILD_RATE": "-1"}, wantErr: "NIXERY_BUILD_RATE / --build-rate"},
		{name: "rate unit", env: map[string]string{"NIXERY_BUILD_RATE": "2/m"}, wantErr: "NIXERY_BUILD_RATE"},
		{name: "infinite rate", env: map[string]string{"NIXERY_BUILD_RATE": "Inf"}, wantErr: "NIXERY_BUILD_RATE"},
		{name: "bad burst", env: map[string]string{"NIXERY_BUILD_BURST": "0"}, wantErr: "NIXERY_BUILD_BURST / --build-burst"},
		{name: "bad trust", env: map[string]string{"NIXERY_TRUST_PROXY": "yes please"}, wantErr: "NIXERY_TRUST_PROXY"},
		{name: "unknown flag", args: []string{"--colour"}, wantErr: "colour"},
		{name: "store bounds", args: []string{"--nix-max-free", "20g"}, env: map[string]string{"NIXERY_NIX_MIN_FREE": "512M"}, check: func(t *testing.T, c *Config) {
			if c.NixMinFree != 512<<20 || c.NixMaxFree != 20<<30 {
				t.Errorf("min-free %d, max-free %d", c.NixMinFree, c.NixMaxFree)
			}
		}},
		{name: "store bounds in bytes", env: map[string]string{"NIXERY_NIX_MIN_FREE": "1000", "NIXERY_NIX_MAX_FREE": "1000"}, check: func(t *testing.T, c *Config) {
			if c.NixMinFree != 1000 || c.NixMaxFree != 1000 {
				t.Errorf("min-free %d, max-free %d", c.NixMinFree, c.NixMaxFree)
			}
		}},
		{name: "store bounds default", check: func(t *testing.T, c *Config) {
			if c.NixMinFree != 0 || c.NixMaxFree != 0 {
				t.Errorf("min-free %d, max-free %d, want Nix's own (0)", c.NixMinFree, c.NixMaxFree)
			}
		}},
		{name: "store bound with T", env: map[string]string{"NIXERY_NIX_MAX_FREE": "1T"}, check: func(t *testing.T, c *Config) {
			if c.NixMaxFree != 1<<40 {
				t.Errorf("max-free %d", c.NixMaxFree)
			}
		}},
		{name: "store bound fraction", env: map[string]string{"NIXERY_NIX_MIN_FREE": "1.5G"}, wantErr: "NIXERY_NIX_MIN_FREE"},
		{name: "store bound zero", args: []string{"--nix-min-free=0"}, wantErr: "nix-min-free"},
		{name: "store bound unit", env: map[string]string{"NIXERY_NIX_MAX_FREE": "10GB"}, wantErr: "NIXERY_NIX_MAX_FREE"},
		{name: "store bound suffix only", env: map[string]string{"NIXERY_NIX_MAX_FREE": "G"}, wantErr: "NIXERY_NIX_MAX_FREE"},
		{name: "store bound negative", env: map[string]string{"NIXERY_NIX_MAX_FREE": "-1"}, wantErr: "NIXERY_NIX_MAX_FREE"},
		{name: "store bound overflow", env: map[string]string{"NIXERY_NIX_MAX_FREE": "9000000000G"}, wantErr: "NIXERY_NIX_MAX_FREE"},
		{name: "max below min", env: map[string]string{"NIXERY_NIX_MIN_FREE": "2G", "NIXERY_NIX_MAX_FREE": "1G"}, wantErr: "must not be below"},
		{name: "no nix cache by default", check: func(t *testing.T, c *Config) {
			if c.NixCache != (nix.Cache{}) || c.NixOptions != nil {
				t.Errorf("cache %+v, options %q", c.NixCache, c.NixOptions)
			}
		}},
		{name: "unsigned nix cache", env: map[string]string{"NIXERY_NIX_CACHE": "file:///srv/nix-cache"}, check: func(t *testing.T, c *Config) {
			if c.NixCache != (nix.Cache{URL: "file:///srv/nix-cache"}) {
				t.Errorf("cache %+v", c.NixCache)
			}
		}},
		{name: "signed nix cache", args: []string{"--nix-cache", "s3://nix-cache?region=eu-west-1", "--nix-cache-key", secretKey}, env: map[string]string{"NIXERY_NIX_CACHE_PUBLIC_KEY": publicKey}, check: func(t *testing.T, c *Config) {
			if c.NixCache != (nix.Cache{URL: "s3://nix-cache?region=eu-west-1", SecretKeyFile: secretKey, PublicKey: publicKey}) {
				t.Errorf("cache %+v", c.NixCache)
			}
		}},
		{name: "nix cache not a cache", env: map[string]string{"NIXERY_NIX_CACHE": "ssh://builder"}, wantErr: "NIXERY_NIX_CACHE / --nix-cache"},
		{name: "nix cache key alone", env: map[string]string{"NIXERY_NIX_CACHE": "file:///c", "NIXERY_NIX_CACHE_KEY": secretKey}, wantErr: "NIXERY_NIX_CACHE_PUBLIC_KEY"},
		{name: "nix cache keys without cache", env: map[string]string{"NIXERY_NIX_CACHE_KEY": secretKey, "NIXERY_NIX_CACHE_PUBLIC_KEY": publicKey}, wantErr: "need NIXERY_NIX_CACHE"},
		{name: "nix cache wrong public key", env: map[string]string{"NIXERY_NIX_CACHE": "file:///c", "NIXERY_NIX_CACHE_KEY": secretKey, "NIXERY_NIX_CACHE_PUBLIC_KEY": "fleet-1:" + base64.StdEncoding.EncodeToString(make([]byte, 32))}, wantErr: "is not the public key"},
		{name: "nix options", env: map[string]string{"NIXERY_NIX_OPTIONS": "builders = ssh://builder x86_64-linux; max-jobs = 0\nbuilders-use-substitutes = true"}, check: func(t *testing.T, c *Config) {
			want := []nix.Option{{Name: "builders", Value: "ssh://builder x86_64-linux"}, {Name: "max-jobs", Value: "0"}, {Name: "builders-use-substitutes", Value: "true"}}
			if !slices.Equal(c.NixOptions, want) {
				t.Errorf("options %q", c.NixOptions)
			}
		}},
		{name: "nix options injected", args: []string{"--nix-options", "max-jobs = 0; --store = /tmp/x"}, wantErr: "NIXERY_NIX_OPTIONS"},
		{name: "budget", args: []string{"--layer-budget=1"}, wantErr: "layer-budget"},
		{name: "format", env: map[string]string{"NIXERY_LAYER_FORMAT": "xz"}, wantErr: "gzip or zstd"},
		{name: "gzip level", env: map[string]string{"NIXERY_COMPRESSION_LEVEL": "12"}, wantErr: "1 to 9"},
		{name: "tls", args: []string{"--tls-cert", "/etc/nixery/tls.crt", "--tls-probes-public"}, env: map[string]string{"NIXERY_TLS_KEY": "/etc/nixery/tls.key", "NIXERY_TLS_CLIENT_CA": "/etc/nixery/ca.crt"}, check: func(t *testing.T, c *Config) {
			if c.TLSCert != "/etc/nixery/tls.crt" || c.TLSKey != "/etc/nixery/tls.key" || c.TLSClientCA != "/etc/nixery/ca.crt" || !c.TLSProbesPublic || c.TLSReload != 30*time.Second {
				t.Errorf("tls: %+v", c)
			}
		}},
		{name: "plain http by default", check: func(t *testing.T, c *Config) {
			if c.TLSCert != "" || c.TLSKey != "" || c.TLSClientCA != "" || c.TLSProbesPublic {
				t.Errorf("tls: %+v", c)
			}
		}},
		{name: "tls cert alone", env: map[string]string{"NIXERY_TLS_CERT": "/etc/nixery/tls.crt"}, wantErr: "set both NIXERY_TLS_CERT / --tls-cert and NIXERY_TLS_KEY / --tls-key"},
		{name: "tls key alone", args: []string{"--tls-key", "/etc/nixery/tls.key"}, wantErr: "set both NIXERY_TLS_CERT / --tls-cert and NIXERY_TLS_KEY / --tls-key"},
		{name: "client ca without tls", env: map[string]string{"NIXERY_TLS_CLIENT_CA": "/etc/nixery/ca.crt"}, wantErr: "NIXERY_TLS_CLIENT_CA / --tls-client-ca needs NIXERY_TLS_CERT"},
		{name: "tls reload interval", env: map[string]string{"NIXERY_TLS_RELOAD_INTERVAL": "0"}, wantErr: "NIXERY_TLS_RELOAD_INTERVAL / --tls-reload-interval must be a whole number from 1 to 3600"},
		{name: "zstd level", env: map[string]string{"NIXERY_LAYER_FORMAT": "zstd", "NIXERY_COMPRESSION_LEVEL": "12", "NIX_POPULARITY_URL": "/p.json"}, check: func(t *testing.T, c *Config) {
			if c.LayerFormat != "zstd" || c.Compression != 12 || c.Popularity != "/p.json" {
				t.Errorf("%+v", c)
			}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := Load(tt.args, func(k string) string { return tt.env[k] })
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want one mentioning %q", err, tt.wantErr)
				}
				if strings.Contains(err.Error(), "hunter2") {
					t.Errorf("the error repeats a password: %v", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			tt.check(t, c)
		})
	}
}
