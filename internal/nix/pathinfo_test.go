package nix

import (
	"context"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

const (
	hello  = "/nix/store/8qyfm5jcpsxbwvn4ld0pcyzcnlsx9a14-hello-2.12.1"
	libc   = "/nix/store/zh41ml36qdyyhkcgjh6asjpyahd1nw72-libcommon-2.38"
	bb     = "/nix/store/ibsrwda8sbch2k6rzalh1c71pq3hsxkm-bootstrap-busybox"
	helloB = "8qyfm5jcpsxbwvn4ld0pcyzcnlsx9a14-hello-2.12.1"
	libcB  = "zh41ml36qdyyhkcgjh6asjpyahd1nw72-libcommon-2.38"
	bbB    = "ibsrwda8sbch2k6rzalh1c71pq3hsxkm-bootstrap-busybox"
)

// want is the closure of hello in every shape below: sorted by path
// (8qy… < ibs… < zh4…), references sorted, without the path itself.
var want = []StorePath{
	{Path: hello, NarSize: 1728, References: []string{bb, libc}},
	{Path: bb, NarSize: 1982568},
	{Path: libc, NarSize: 921128, References: []string{bb}},
}

func TestParsePathInfo(t *testing.T) {
	tests := []struct {
		name, json string
		want       []StorePath
		err        string
	}{{
		// Nix 2.8 (Debian 12), as seen: an array, references include the
		// path itself.
		name: "array (Nix < 2.19)",
		json: `[{"path":"` + hello + `","narHash":"sha256-8Pcc","narSize":1728,"references":["` + hello + `","` + bb + `","` + libc + `"],"deriver":"/nix/store/s2l6-hello-2.12.1.drv","registrationTime":1795612472,"ultimate":true},
			{"path":"` + bb + `","narHash":"sha256-9CPb","narSize":1982568,"references":[],"ca":"fixed:r:sha256:08f8"},
			{"path":"` + libc + `","narSize":921128,"references":["` + bb + `"]}]`,
		want: want,
	}, {
		name: "object keyed by path (Nix 2.19+)",
		json: `{"` + libc + `":{"narSize":921128,"references":["` + bb + `"],"ca":null,"deriver":null},
			"` + hello + `":{"narHash":"sha256-8Pcc","narSize":1728,"references":["` + bb + `","` + hello + `","` + libc + `"],"signatures":[]},
			"` + bb + `":{"narSize":1982568,"references":[]}}`,
		want: want,
	}, {
		name: "object with base-name references",
		json: `{"` + hello + `":{"narSize":1728,"references":["` + helloB + `","` + libcB + `","` + bbB + `"]},
			"` + libc + `":{"narSize":921128,"references":["` + bbB + `"]},
			"` + bb + `":{"narSize":1982568,"references":[]}}`,
		want: want,
	}, {
		name: "base names only, with storeDir",
		json: `{"` + helloB + `":{"narSize":1728,"references":["` + libcB + `","` + bbB + `"],"storeDir":"/nix/store"},
			"` + libcB + `":{"narSize":921128,"references":["` + bbB + `"],"storeDir":"/nix/store"},
			"` + bbB + `":{"narSize":1982568,"references":[],"storeDir":"/nix/store"}}`,
		want: want,
	}, {
		name: "wrapped, base names only",
		json: `{"version":2,"storeDir":"/nix/store","info":{"` + helloB + `":{"narSize":1728,"references":["` + libcB + `","` + bbB + `"]},
			"` + libcB + `":{"narSize":921128,"references":["` + bbB + `"]},
			"` + bbB + `":{"narSize":1982568,"references":[]}}}`,
		want: want,
	}, {
		name: "another store directory",
		json: `[{"path":"/opt/store/abc-x","narSize":8,"references":["/opt/store/def-y"]},{"path":"/opt/store/def-y","narSize":9,"references":[]}]`,
		want: []StorePath{{Path: "/opt/store/abc-x", NarSize: 8, References: []string{"/opt/store/def-y"}}, {Path: "/opt/store/def-y", NarSize: 9}},
	}, {
		name: "empty array",
		json: "[]\n",
		want: []StorePath{},
	}, {
		name: "invalid path, array",
		json: `[{"path":"` + hello + `","valid":false}]`,
		err:  "not valid",
	}, {
		name: "invalid path, object",
		json: `{"` + hello + `":null}`,
		err:  "not valid",
	}, {
		name: "not JSON",
		json: "error: something",
		err:  "not a JSON",
	}, {
		name: "truncated",
		json: `[{"path":"` + hello,
		err:  "unexpected end",
	}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := parsePathInfo([]byte(tt.json))
			if tt.err != "" {
				if err == nil || !strings.Contains(err.Error(), tt.err) {
					t.Fatalf("got error %v, want one containing %q", err, tt.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("got  %+v\nwant %+v", got, tt.want)
			}
		})
	}
}

func TestUnknownErrorLine(t *testing.T) {
	tests := []struct {
		line string
		want *UnknownPackagesError
	}{
		// Nix 2.8
		{`error: nixery-unknown-packages: [{"candidates":["FooBar","fooBar"],"name":"foobar"},{"name":"nosuchpkg"}]`,
			&UnknownPackagesError{Packages: []string{"foobar", "nosuchpkg"}, Details: map[string]string{"foobar": "ambiguous: FooBar, fooBar"}}},
		// newer Nix: indented inside a trace, after colour codes are removed
		{`       error: nixery-unknown-packages: [{"name":"xorg","reason":"not a package"}]`,
			&UnknownPackagesError{Packages: []string{"xorg"}, Details: map[string]string{"xorg": "not a package"}}},
		{`error: builder for '/nix/store/x.drv' failed with exit code 1`, nil},
		{`error: nixery-unknown-packages: [oops`, nil},
	}
	for _, tt := range tests {
		if got := unknownError(tt.line); !reflect.DeepEqual(got, tt.want) {
			t.Errorf("unknownError(%q) = %+v, want %+v", tt.line, got, tt.want)
		}
	}

	var w lineWriter
	w.Write([]byte("\x1b[31;1merror:\x1b[0m nixery-unknown-packages: [{\"name\":\"a\"},"))
	w.Write([]byte("{\"name\":\"b\"}]"))
	w.flush()
	if w.unknown == nil || w.unknown.Error() != "unknown package(s): a, b" {
		t.Errorf("lineWriter: unknown = %v", w.unknown)
	}
}

// Each file of testdata/pathinfo is what a real Nix printed for the
// closure of one path (appx → libx → bootstrap-busybox), in its default
// shape or the --json-format named, or for a path that is not valid.
// The message names every unknown package with what explains it and
// the close names found for it; adding suggestions copies the error.
func TestUnknownPackagesMessage(t *testing.T) {
	e := &UnknownPackagesError{Packages: []string{"helo", "xorg", "zzz", "requests"},
		Details: map[string]string{"xorg": "not a package"}}
	s := e.WithSuggestions(map[string][]string{"helo": {"hello"}, "xorg": {"xorg.xev", "xorg.xauth"},
		"requests": {"python3packages.requests", "python311packages.requests", "python312packages.requests"}})
	want := "unknown package(s): helo (did you mean hello?), xorg (not a package; did you mean xorg.xev or xorg.xauth?), zzz, " +
		"requests (did you mean python3packages.requests, python311packages.requests or python312packages.requests?)"
	if got := s.Error(); got != want {
		t.Errorf("got  %s\nwant %s", got, want)
	}
	if e.Suggestions != nil || e.Error() != "unknown package(s): helo, xorg (not a package), zzz, requests" {
		t.Errorf("WithSuggestions changed the original: %v", e)
	}
}

func TestParsePathInfoCaptured(t *testing.T) {
	const (
		appx = "/nix/store/a0qriw4fvxjwhahj2cqq05xa25fg42jg-appx"
		libx = "/nix/store/1qfan52v5w9jcxhigpslqv4l54awrc3d-libx"
	)
	want := []StorePath{
		{Path: libx, NarSize: 344, References: []string{bb}, NarHash: "sha256:17fadf54b2ca7db233c37fe93af42e3e729a8c775069c908d24b89b38e794bea"},
		{Path: appx, NarSize: 336, References: []string{libx}, NarHash: "sha256:83e460a5e6187b658524e0639f351c919bc085f1f8f260a327c01da4841dc1ce"},
		{Path: bb, NarSize: 1982568, NarHash: "sha256:f423dbc7e23e836f1a7c931276aa73ca771692d5ba68174b34c72b9f216ac821"},
	}
	files, _ := filepath.Glob("testdata/pathinfo/*.json")
	if len(files) < 6 {
		t.Fatalf("only %d files in testdata/pathinfo", len(files))
	}
	for _, f := range files {
		t.Run(filepath.Base(f), func(t *testing.T) {
			data, err := os.ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			got, err := parsePathInfo(data)
			if strings.Contains(f, "invalid") {
				if err == nil || !strings.Contains(err.Error(), "00000000000000000000000000000000-gone is not valid") {
					t.Errorf("got %v, %v; want the invalid path named", got, err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, want) {
				t.Errorf("got  %+v\nwant %+v", got, want)
			}
		})
	}
}

// Which Nix gets --json-format: Nix 2.33 and later, not Lix, whose 2.9x
// versions continue from Nix 2.18 and which rejects the option.
func TestNixVersion(t *testing.T) {
	for _, tt := range []struct {
		out    string
		want   nixVersion
		format bool
	}{
		{"nix (Nix) 2.8.0\n", nixVersion{Major: 2, Minor: 8, Known: true}, false},
		{"nix (Nix) 2.26.3", nixVersion{Major: 2, Minor: 26, Known: true}, false},
		{"nix (Nix) 2.32.9", nixVersion{Major: 2, Minor: 32, Known: true}, false},
		{"nix (Nix) 2.33.0", nixVersion{Major: 2, Minor: 33, Known: true}, true},
		{"nix (Nix) 2.34.8", nixVersion{Major: 2, Minor: 34, Known: true}, true},
		{"nix (Nix) 2.40pre20270101_abcdef", nixVersion{Major: 2, Minor: 40, Known: true}, true},
		{"nix (Nix) 3.0.0", nixVersion{Major: 3, Known: true}, true},
		// Lix's own words (its 2.91 release).
		{"nix (Lix, like Nix) 2.91.1", nixVersion{Major: 2, Minor: 91, Known: true, Lix: true}, false},
		{"nix (Lix, like Nix) 2.93.0\nSystem type: x86_64-linux\n", nixVersion{Major: 2, Minor: 93, Known: true, Lix: true}, false},
		{"nix (Determinate Nix 3.6.2) 2.29.0", nixVersion{Major: 2, Minor: 29, Known: true}, false},
		{"", nixVersion{}, false},
		{"something else 2.40", nixVersion{}, false},
	} {
		got := parseNixVersion(tt.out)
		if got != tt.want {
			t.Errorf("parseNixVersion(%q) = %+v, want %+v", tt.out, got, tt.want)
		}
		if format := slices.Contains(got.pathInfoArgs(), "--json-format"); format != tt.format {
			t.Errorf("%q: path-info %q, want --json-format: %v", tt.out, got.pathInfoArgs(), tt.format)
		}
	}
}

// The real closure query on this machine's Nix: its output parses, no
// deprecation warning reaches the log (Nix 2.33 and later warn of --json
// without --json-format), and however many builds run at once, the
// Runner asks for Nix's version once.
func TestClosureQuery(t *testing.T) {
	req := demoSource(t, "hello")
	var rec recorder
	r := rec.runner(&Runner{Timeout: time.Minute})
	var wg sync.WaitGroup
	errs := make([]error, 3)
	for i := range errs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, errs[i] = r.Build(context.Background(), req)
		}()
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	rec.mu.Lock()
	defer rec.mu.Unlock()
	var probes, queries int
	for _, a := range rec.args {
		switch {
		case a[0] == "nix" && slices.Contains(a, "--version"):
			probes++
		case a[0] == "nix" && slices.Contains(a, "path-info"):
			queries++
			if r.version.version.atLeast(2, 33) != slices.Contains(a, "--json-format") {
				t.Errorf("nix %+v: %q", r.version.version, a)
			}
		}
	}
	if probes != 1 || queries != len(errs) {
		t.Errorf("%d version probes and %d closure queries, want 1 and %d", probes, queries, len(errs))
	}
	for _, l := range rec.lines {
		if strings.Contains(l, "deprecated") || strings.Contains(l, "json-format") {
			t.Errorf("the log has %q", l)
		}
	}
	t.Logf("%+v", r.version.version)
}

func TestDescribe(t *testing.T) {
	for in, want := range map[string]string{
		"nix-build (Nix) 2.8.0":            "Nix 2.8.0",
		"nix-build (Nix) 2.34.8":           "Nix 2.34.8",
		"nix (Nix) 2.33pre20251201_abcdef": "Nix 2.33pre20251201_abcdef",
		"nix-build (Lix, like Nix) 2.91.1": "Lix 2.91.1",
		"":                                 "Nix",
		"command not found":                "Nix",
	} {
		if got := Describe(in); got != want {
			t.Errorf("Describe(%q) = %q, want %q", in, got, want)
		}
	}
}
