package search

import (
	"bytes"
	"compress/gzip"
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/nixery/nixery/internal/metadata"
	"github.com/nixery/nixery/internal/nix"
	"github.com/nixery/nixery/internal/storage"
)

func TestSearchRanking(t *testing.T) {
	x := newIndex("test", "", []nix.Package{
		{Attr: "python3Packages.requests", Description: "HTTP library for Python"},
		{Attr: "python3", Version: "3.11", Description: "A programming language"},
		{Attr: "python311", Version: "3.11"},
		{Attr: "xorg.xev", Description: "Print contents of X events"},
		{Attr: "libxev"},
		{Attr: "bashInteractive", Description: "The GNU Bourne Again shell"},
		{Attr: "curl", Description: "transferring files with URL syntax"},
	})
	for _, tt := range []struct {
		q    string
		want []string
	}{
		{"python3", []string{"python3", "python311", "python3Packages.requests"}},
		{"xev", []string{"xorg.xev", "libxev"}},
		{"requests", []string{"python3Packages.requests"}},
		{"INTERACTIVE", []string{"bashInteractive"}},
		{"url files", []string{"curl"}},
		{"3.11", []string{"python3", "python311"}},
		{"", nil},
	} {
		res, total := x.search(mustQuery(t, tt.q), 10)
		var got []string
		for _, r := range res {
			got = append(got, r.Attr)
		}
		if !slices.Equal(got, tt.want) || total != len(tt.want) {
			t.Errorf("search %q = %q (%d), want %q", tt.q, got, total, tt.want)
		}
	}
	if res, total := x.search(mustQuery(t, "p"), 2); len(res) != 2 || total != 4 {
		t.Errorf("limit: %d results of %d", len(res), total)
	}
}

func mustQuery(t testing.TB, s string) query {
	t.Helper()
	q, err := parseQuery(s)
	if err != nil {
		t.Fatal(err)
	}
	return q
}

// Queries are bounded in bytes and distinct words; repeated and empty
// words do not count.
func TestParseQuery(t *testing.T) {
	long := strings.Repeat("a", maxQueryBytes)
	for _, tt := range []struct {
		raw   string
		words []string
		err   string
	}{
		{"", nil, ""},
		{"   ", nil, ""},
		{"Python", []string{"python"}, ""},
		{"  url \t  files  ", []string{"url", "files"}, ""},
		{"python PYTHON python", []string{"python"}, ""},
		{"a b c d e f g h", []string{"a", "b", "c", "d", "e", "f", "g", "h"}, ""},
		{"a b c d e f g h a b c d", []string{"a", "b", "c", "d", "e", "f", "g", "h"}, ""},
		{"a b c d e f g h i", nil, "too many words: 9, at most 8"},
		{strings.Repeat("x ", 1000), []string{"x"}, "too long: 1999 bytes, at most 200"},
		{long, []string{long}, ""},
		{" " + long + " ", []string{long}, ""},
		{long + "a", nil, "too long: 201 bytes"},
	} {
		q, err := parseQuery(tt.raw)
		if tt.err != "" {
			var qe *QueryError
			if !errors.As(err, &qe) || !strings.Contains(err.Error(), tt.err) {
				t.Errorf("parseQuery(%.20q…) = %v, want an error with %q", tt.raw, err, tt.err)
			}
			continue
		}
		if err != nil || !slices.Equal(q.words, tt.words) || q.text != strings.Join(tt.words, " ") {
			t.Errorf("parseQuery(%.20q…) = %q %q, %v; want %q", tt.raw, q.text, q.words, err, tt.words)
		}
	}
}

func TestSearchLimit(t *testing.T) {
	for _, tt := range []struct {
		v    string
		want int
	}{
		{"", defaultLimit}, {"10", 10}, {"0", defaultLimit}, {"-5", defaultLimit}, {"x", defaultLimit},
		{"500", maxLimit}, {"501", maxLimit}, {"99999999999999999999999", defaultLimit},
	} {
		if got := Limit(tt.v); got != tt.want {
			t.Errorf("Limit(%q) = %d, want %d", tt.v, got, tt.want)
		}
	}
}

// nixpkgsSized is a package list shaped like nixpkgs': 100,000 packages.
func nixpkgsSized() []nix.Package {
	pkgs := make([]nix.Package, 0, 100000)
	for i := range 100000 {
		attr := fmt.Sprintf("pkg%dname", i)
		if i%10 == 0 {
			attr = fmt.Sprintf("python3Packages.mod%d", i)
		}
		pkgs = append(pkgs, nix.Package{Attr: attr, Version: fmt.Sprintf("1.%d", i%97),
			Description: fmt.Sprintf("A package of the test set, number %d, with a description of ordinary length", i)})
	}
	return pkgs
}

// How fast a search is, is BenchmarkSearch's to say (figures in docs/operating.md).
func TestSearchNixpkgsSized(t *testing.T) {
	x := newIndex("test", "", nixpkgsSized())
	res, total := x.search(mustQuery(t, "mod99"), 50)
	if len(res) == 0 || res[0].Attr != "python3Packages.mod990" || total == 0 {
		t.Errorf("first result %+v of %d", res, total)
	}
}

func BenchmarkSearch(b *testing.B) {
	x := newIndex("test", "", nixpkgsSized())
	q := mustQuery(b, "description python")
	for b.Loop() {
		x.search(q, 50)
	}
}

// A stored package list that unpacks beyond maxStoredList (damaged, or
// planted in the bucket) is refused after reading a bounded amount, and
// the packages are listed again; a list as store writes it is read back.
func TestStoredListBounded(t *testing.T) {
	defer func(max int) { maxStoredList = max }(maxStoredList)
	maxStoredList = 4 << 20 // the mechanism, without packing 256 MiB
	store, err := storage.NewFilesystem(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	s := &Searcher{Metadata: metadata.New(store, nil)}
	ctx := context.Background()
	pkgs := []nix.Package{{Attr: "hello", Version: "2.12.1"}}
	if err := s.store(ctx, "id-good", pkgs); err != nil {
		t.Fatal(err)
	}
	if got, err := s.loadStored(ctx, "id-good"); err != nil || len(got) != 1 || got[0] != pkgs[0] {
		t.Fatalf("loadStored of a stored list: %v, %v", got, err)
	}
	var bomb bytes.Buffer
	zw, _ := gzip.NewWriterLevel(&bomb, gzip.BestCompression)
	zeros := make([]byte, 1<<20)
	for range maxStoredList>>20 + 1 {
		zw.Write(zeros)
	}
	zw.Close()
	if err := s.Metadata.PutSearchList(ctx, "id-bomb", bomb.Bytes()); err != nil {
		t.Fatal(err)
	}
	if _, err := s.loadStored(ctx, "id-bomb"); err == nil || !strings.Contains(err.Error(), "more than 4 MiB") {
		t.Errorf("a %d KiB list unpacking to over 4 MiB: %v", bomb.Len()>>10, err)
	}
}
