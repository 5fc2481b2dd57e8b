package config

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestLoad(t *testing.T) {
	pkgs := t.TempDir()
	os.WriteFile(filepath.Join(pkgs, "default.nix"), []byte("{...}: {}"), 0o644)
	empty := t.TempDir()

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
			if ps, ok := c.Source.(PathSource); !ok || ps.Path != pkgs {
				t.Errorf("source %#v", c.Source)
			}
		}},
		{name: "flag wins", args: []string{"--port", "9001", "--channel", "nixos-unstable"}, env: map[string]string{"PORT": "9000"}, check: func(t *testing.T, c *Config) {
			if c.Port != 9001 || c.Source != (ChannelSource{Channel: "nixos-unstable"}) {
				t.Errorf("flags: %+v", c)
			}
		}},
		{name: "repo", env: map[string]string{"NIXERY_PKGS_REPO": "https://example.org/pkgs.git"}, check: func(t *testing.T, c *Config) {
			if c.Source != (GitSource{Repository: "https://example.org/pkgs.git"}) {
				t.Errorf("source %#v", c.Source)
			}
		}},
		{name: "bad port", env: map[string]string{"PORT": "http"}, wantErr: "PORT"},
		{name: "port range", args: []string{"--port=70000"}, wantErr: "PORT"},
		{name: "bad timeout", env: map[string]string{"NIX_TIMEOUT": "1m"}, wantErr: "NIX_TIMEOUT"},
		{name: "zero timeout", env: map[string]string{"NIX_TIMEOUT": "0"}, wantErr: "NIX_TIMEOUT"},
		{name: "two sources", env: map[string]string{"NIXERY_CHANNEL": "x", "NIXERY_PKGS_PATH": pkgs}, wantErr: "only one package source"},
		{name: "path without default.nix", env: map[string]string{"NIXERY_PKGS_PATH": empty}, wantErr: "default.nix"},
		{name: "unknown backend", env: map[string]string{"NIXERY_STORAGE_BACKEND": "tape"}, wantErr: "must be filesystem"},
		{name: "unknown flag", args: []string{"--colour"}, wantErr: "colour"},
		{name: "budget", args: []string{"--layer-budget=1"}, wantErr: "layer-budget"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := Load(tt.args, func(k string) string { return tt.env[k] })
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want one mentioning %q", err, tt.wantErr)
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

func TestGitSourceRender(t *testing.T) {
	s := GitSource{Repository: "/srv/pkgs"}
	for tag, want := range map[string]string{
		"latest": `{"url":"/srv/pkgs"}`,
		"v1":     `{"ref":"v1","url":"/srv/pkgs"}`,
		"0123456789abcdef0123456789abcdef01234567": `{"rev":"0123456789abcdef0123456789abcdef01234567","url":"/srv/pkgs"}`,
	} {
		typ, args, err := s.Render(tag)
		if err != nil || typ != "git" || args != want {
			t.Errorf("Render(%q) = %s %s %v, want %s", tag, typ, args, err, want)
		}
	}
}
