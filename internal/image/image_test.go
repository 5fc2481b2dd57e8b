package image

import (
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"testing"
)

func TestParse(t *testing.T) {
	shell := []string{"bashInteractive", "coreutils", "moreutils", "nano"}
	with := func(extra ...string) []string {
		p := append(slices.Clone(shell), extra...)
		slices.Sort(p)
		return p
	}
	tests := []struct {
		name, tag string
		packages  []string
		arch      Arch
		nonRoot   bool
		errCode   string
	}{
		{name: "hello", tag: "latest", packages: []string{"hello"}, arch: AMD64},
		{name: "shell/hello", tag: "latest", packages: with("hello"), arch: AMD64},
		{name: "arm64/shell/hello", tag: "latest", packages: with("hello"), arch: ARM64},
		{name: "shell/arm64/hello", tag: "latest", packages: with("hello"), arch: ARM64},
		// Only leading components are meta-packages.
		{name: "hello/shell", tag: "latest", packages: []string{"hello", "shell"}, arch: AMD64},
		{name: "hello/arm64", tag: "latest", packages: []string{"arm64", "hello"}, arch: AMD64},
		// Order and repetition do not matter.
		{name: "jq/git/jq", tag: "v1", packages: []string{"git", "jq"}, arch: AMD64},
		{name: "git/jq", tag: "v1", packages: []string{"git", "jq"}, arch: AMD64},
		// Nested attributes.
		{name: "xorg.xev/python3", tag: "latest", packages: []string{"python3", "xorg.xev"}, arch: AMD64},
		{name: "a-b/c__d/e_f", tag: "latest", packages: []string{"a-b", "c__d", "e_f"}, arch: AMD64},
		{name: "shell", tag: "latest", packages: shell, arch: AMD64},
		// nonroot leads with shell and arm64, in any order, repeated or not.
		{name: "nonroot/hello", tag: "latest", packages: []string{"hello"}, arch: AMD64, nonRoot: true},
		{name: "nonroot/shell/hello", tag: "latest", packages: with("hello"), arch: AMD64, nonRoot: true},
		{name: "shell/nonroot/hello", tag: "latest", packages: with("hello"), arch: AMD64, nonRoot: true},
		{name: "arm64/nonroot/shell/hello", tag: "latest", packages: with("hello"), arch: ARM64, nonRoot: true},
		{name: "shell/arm64/nonroot/hello", tag: "latest", packages: with("hello"), arch: ARM64, nonRoot: true},
		{name: "nonroot/nonroot/hello", tag: "latest", packages: []string{"hello"}, arch: AMD64, nonRoot: true},
		{name: "nonroot/shell", tag: "latest", packages: shell, arch: AMD64, nonRoot: true},
		// Further on, "nonroot" is a package name like any other.
		{name: "hello/nonroot", tag: "latest", packages: []string{"hello", "nonroot"}, arch: AMD64},
		{name: "nonroot", tag: "latest", errCode: "NAME_INVALID"},
		{name: "nonroot/arm64", tag: "latest", errCode: "NAME_INVALID"},
		{name: "NonRoot/hello", tag: "latest", errCode: "NAME_INVALID"},
		{name: "non-root/hello", tag: "latest", packages: []string{"hello", "non-root"}, arch: AMD64},
		// Language environments: the listed packages in any order and
		// repetition are the same environment.
		{name: "shell/python3.withpackages.numpy.requests", tag: "latest", packages: with("python3.withpackages.numpy.requests"), arch: AMD64},
		{name: "python3.withpackages.requests.numpy.requests", tag: "latest", packages: []string{"python3.withpackages.numpy.requests"}, arch: AMD64},
		{name: "python3.withpackages.numpy/python3.withpackages.numpy", tag: "latest", packages: []string{"python3.withpackages.numpy"}, arch: AMD64},
		{name: "python3.withpackages.numpy/python3", tag: "latest", packages: []string{"python3", "python3.withpackages.numpy"}, arch: AMD64},
		{name: "xorg.perl.withpackages.b.a", tag: "latest", packages: []string{"xorg.perl.withpackages.a.b"}, arch: AMD64},
		// Only a whole attribute name counts.
		{name: "python3.withpackagesx.b.a", tag: "latest", packages: []string{"python3.withpackagesx.b.a"}, arch: AMD64},
		{name: "python3.withpackages", tag: "latest", errCode: "NAME_INVALID"},
		{name: "withpackages.numpy", tag: "latest", errCode: "NAME_INVALID"},
		{name: "python3.withpackages.numpy.withpackages.x", tag: "latest", errCode: "NAME_INVALID"},
		{name: "shell/python3.withpackages", tag: "latest", errCode: "NAME_INVALID"},

		{name: "Hello", tag: "latest", errCode: "NAME_INVALID"},
		{name: "hello/", tag: "latest", errCode: "NAME_INVALID"},
		{name: "/hello", tag: "latest", errCode: "NAME_INVALID"},
		{name: "a//b", tag: "latest", errCode: "NAME_INVALID"},
		{name: "-hello", tag: "latest", errCode: "NAME_INVALID"},
		{name: "hello.", tag: "latest", errCode: "NAME_INVALID"},
		{name: "a..b", tag: "latest", errCode: "NAME_INVALID"},
		{name: "hel lo", tag: "latest", errCode: "NAME_INVALID"},
		{name: "", tag: "latest", errCode: "NAME_INVALID"},
		{name: strings.Repeat("a/", 200) + "a", tag: "latest", errCode: "NAME_INVALID"},
		{name: "arm64", tag: "latest", errCode: "NAME_INVALID"},
		{name: "shell/arm64", tag: "latest", packages: shell, arch: ARM64},
		{name: "hello", tag: "", errCode: "MANIFEST_UNKNOWN"},
		{name: "hello", tag: "-rf", errCode: "MANIFEST_UNKNOWN"},
		{name: "hello", tag: ".hidden", errCode: "MANIFEST_UNKNOWN"},
		{name: "hello", tag: "a/b", errCode: "MANIFEST_UNKNOWN"},
		{name: "hello", tag: strings.Repeat("x", 129), errCode: "MANIFEST_UNKNOWN"},
		{name: "hello", tag: strings.Repeat("x", 128), packages: []string{"hello"}, arch: AMD64},
		{name: "hello", tag: "v1..2", errCode: "MANIFEST_UNKNOWN"},
		{name: "hello", tag: "v1.", errCode: "MANIFEST_UNKNOWN"},
		{name: "hello", tag: "main.lock", errCode: "MANIFEST_UNKNOWN"},
		{name: "hello", tag: "V1.2_rc-3", packages: []string{"hello"}, arch: AMD64},
	}
	for _, tt := range tests {
		t.Run(tt.name+":"+tt.tag, func(t *testing.T) {
			req, err := Parse(tt.name, tt.tag)
			if tt.errCode != "" {
				var ie *Error
				if !errors.As(err, &ie) || ie.Code != tt.errCode {
					t.Fatalf("Parse(%q, %q) = %v, %v; want error %s", tt.name, tt.tag, req, err, tt.errCode)
				}
				// A bad tag is named in the answer, so the user sees which.
				if tt.errCode == "MANIFEST_UNKNOWN" && !strings.Contains(ie.Message, fmt.Sprintf("tag %q", tt.tag)) {
					t.Errorf("message %q does not name the tag %q", ie.Message, tt.tag)
				}
				// A misused withpackages is explained with an example.
				if strings.Contains(tt.name, "withpackages") && !strings.Contains(ie.Message, "python3.withpackages.numpy") {
					t.Errorf("message %q shows no example", ie.Message)
				}
				return
			}
			if err != nil {
				t.Fatalf("Parse(%q, %q): %v", tt.name, tt.tag, err)
			}
			if !slices.Equal(req.Packages, tt.packages) || req.Arch != tt.arch || req.NonRoot != tt.nonRoot || req.Tag != tt.tag || req.Name != tt.name {
				t.Errorf("Parse(%q, %q) = %+v; want packages %v arch %v nonroot %v", tt.name, tt.tag, req, tt.packages, tt.arch, tt.nonRoot)
			}
		})
	}
}

// Options feed the builder's cache keys: a nonroot image must never be
// served for a root one or the other way round, and default images keep
// the keys they had before options existed (nil, not an empty map).
func TestOptions(t *testing.T) {
	for _, tt := range []struct {
		name string
		want map[string]string
	}{
		{"hello", nil},
		{"shell/arm64/hello", nil},
		{"nonroot/hello", map[string]string{"user": "nonroot"}},
		{"arm64/shell/nonroot/hello", map[string]string{"user": "nonroot"}},
	} {
		req, err := Parse(tt.name, "latest")
		if err != nil {
			t.Fatal(err)
		}
		if got := req.Options(); !maps.Equal(got, tt.want) || (got == nil) != (tt.want == nil) {
			t.Errorf("%s: Options() = %#v, want %#v", tt.name, got, tt.want)
		}
	}
}

func TestParseRef(t *testing.T) {
	for _, tt := range []struct {
		ref, name, tag, back string
		ok                   bool
	}{
		{"shell/hello", "shell/hello", "latest", "shell/hello", true},
		{"shell/hello:latest", "shell/hello", "latest", "shell/hello", true},
		{"hello:v1", "hello", "v1", "hello:v1", true},
		{"Hello", "", "", "", false},
		{"hello:..", "", "", "", false},
	} {
		req, err := ParseRef(tt.ref)
		if (err == nil) != tt.ok {
			t.Errorf("ParseRef(%q): %v", tt.ref, err)
			continue
		}
		if err == nil && (req.Name != tt.name || req.Tag != tt.tag || req.Ref() != tt.back) {
			t.Errorf("ParseRef(%q) = %s:%s (%s)", tt.ref, req.Name, req.Tag, req.Ref())
		}
	}
}

// Tags of the referrers tag schema are reserved: Parse refuses every tag
// that begins "sha256-" (none reaches a package source), and
// ReferrersTag reads the subject and suffix of the well-formed ones.
func TestReferrersTags(t *testing.T) {
	hex := strings.Repeat("ab", 32)
	subject := "sha256:" + hex
	for _, tt := range []struct {
		tag     string
		subject string
		suffix  string
		ok      bool
	}{
		{"sha256-" + hex, subject, "", true},
		{"sha256-" + hex + ".sig", subject, "sig", true},
		{"sha256-" + hex + ".att", subject, "att", true},
		{"sha256-" + hex + ".sbom", subject, "sbom", true},
		{"sha256-" + hex + ".", "", "", false},
		{"sha256-" + hex + "x", "", "", false},
		{"sha256-" + strings.ToUpper(hex), "", "", false},
		{"sha256-abc", "", "", false},
		{"sha512-" + hex, "", "", false},
		{"latest", "", "", false},
	} {
		d, suffix, ok := ReferrersTag(tt.tag)
		if ok != tt.ok || string(d) != tt.subject || suffix != tt.suffix {
			t.Errorf("ReferrersTag(%q) = %q, %q, %v; want %q, %q, %v", tt.tag, d, suffix, ok, tt.subject, tt.suffix, tt.ok)
		}
	}
	for _, tag := range []string{"sha256-" + hex, "sha256-" + hex + ".sig", "sha256-abc", "sha256-"} {
		_, err := Parse("hello", tag)
		var e *Error
		if !errors.As(err, &e) || e.Code != "MANIFEST_UNKNOWN" || !strings.Contains(e.Message, "reserved") {
			t.Errorf("Parse(hello, %q) = %v, want MANIFEST_UNKNOWN: reserved", tag, err)
		}
	}
	if _, err := Parse("hello", "sha512-x"); err != nil {
		t.Errorf("a tag outside the schema: %v", err)
	}
}

// The image a suggestion selects: the unknown component replaced, the
// meta-packages and the tag kept.
func TestReplacing(t *testing.T) {
	for _, tt := range []struct {
		ref, old, new, want string
		ok                  bool
	}{
		{"shell/helo", "helo", "hello", "shell/hello", true},
		{"arm64/helo/git:v2", "helo", "hello", "arm64/hello/git:v2", true},
		{"requests", "requests", "python3packages.requests", "python3packages.requests", true},
		{"helo/helo", "helo", "hello", "hello/hello", true},
		{"python3.withpackages.numpi", "numpi", "numpy", "", false}, // inside an environment
		{"shell/helo", "nosuch", "x", "", false},                    // no such component
		{"helo", "helo", "Hello", "", false},                        // no image name
	} {
		req, err := ParseRef(tt.ref)
		if err != nil {
			t.Fatal(err)
		}
		if got, ok := req.Replacing(tt.old, tt.new); got != tt.want || ok != tt.ok {
			t.Errorf("%s: Replacing(%q, %q) = %q, %v; want %q, %v", tt.ref, tt.old, tt.new, got, ok, tt.want, tt.ok)
		}
	}
}
