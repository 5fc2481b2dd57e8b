package nix

import (
	"reflect"
	"strings"
	"testing"
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
