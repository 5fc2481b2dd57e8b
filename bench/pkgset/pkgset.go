// Package pkgset generates a package set shaped like nixpkgs for the
// benchmarks: 1,082 store paths (seed 1) with names, NAR sizes and
// references, the attributes that name some of them, and the workload of
// typical images pulled one after the other. A second shape (Stacks) draws
// the generated part differently, to check that a layering's gain is not a
// quirk of the first (Tower). bench/sharing simulates the
// layering of the workload on it; bench/workload writes the workload's
// closure as a real Nix package set and pulls it from a real Nixery.
//
// The output depends only on the seed: the same seed gives the same
// names, sizes, references and store paths.
package pkgset

import (
	"cmp"
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
)

// Path is one store path of the generated package set.
type Path struct {
	Name string   // without hash, e.g. "glibc-2.40-66"
	Path string   // /nix/store/<hash>-name, the hash derived from the name
	Size int64    // NAR bytes
	Refs []string // store paths (Path) it refers to
}

// Set is a generated package set shaped like nixpkgs: a few base
// libraries that almost everything uses, mid-sized libraries shared by
// groups of packages, big interpreters and toolchains, a long tail of small
// private libraries, and applications on top.
type Set struct {
	Paths map[string]*Path  // by name
	Attrs map[string]string // attribute path (e.g. "python3Packages.numpy") → name of its store path
}

const mb = 1 << 20
const kb = 1 << 10

// core is the hand-written part: name, NAR size, references (by name).
// Sizes are of the order of their nixpkgs counterparts (x86_64-linux).
var core = []struct {
	attr, name string
	size       int64
	refs       []string
}{
	{"", "libgcc-13.3.0", 180 * kb, nil},
	{"glibc", "glibc-2.40-66", 31 * mb, []string{"libgcc-13.3.0"}},
	{"", "libunistring-1.2", 2 * mb, []string{"glibc-2.40-66"}},
	{"", "libidn2-2.3.7", 400 * kb, []string{"libunistring-1.2", "glibc-2.40-66"}},
	{"", "gcc-13.3.0-lib", 8 * mb, []string{"glibc-2.40-66", "libgcc-13.3.0"}},
	{"zlib", "zlib-1.3.1", 180 * kb, []string{"glibc-2.40-66"}},
	{"bzip2", "bzip2-1.0.8", 150 * kb, []string{"glibc-2.40-66"}},
	{"xz", "xz-5.6.3", 1 * mb, []string{"glibc-2.40-66"}},
	{"zstd", "zstd-1.5.6", 1500 * kb, []string{"glibc-2.40-66", "zlib-1.3.1", "xz-5.6.3", "lz4-1.10.0"}},
	{"lz4", "lz4-1.10.0", 300 * kb, []string{"glibc-2.40-66"}},
	{"openssl", "openssl-3.3.2", 6500 * kb, []string{"glibc-2.40-66"}},
	{"ncurses", "ncurses-6.4.20221231", 3 * mb, []string{"glibc-2.40-66"}},
	{"readline", "readline-8.2p13", 1 * mb, []string{"ncurses-6.4.20221231", "glibc-2.40-66"}},
	{"", "attr-2.5.2", 200 * kb, []string{"glibc-2.40-66"}},
	{"", "acl-2.3.2", 300 * kb, []string{"attr-2.5.2", "glibc-2.40-66"}},
	{"", "gmp-6.3.0", 900 * kb, []string{"glibc-2.40-66"}},
	{"", "libcap-2.70-lib", 100 * kb, []string{"glibc-2.40-66"}},
	{"bash", "bash-5.2p37", 1700 * kb, []string{"glibc-2.40-66"}},
	{"bashInteractive", "bash-interactive-5.2p37", 2 * mb, []string{"readline-8.2p13", "ncurses-6.4.20221231", "glibc-2.40-66"}},
	{"coreutils", "coreutils-9.5", 7 * mb, []string{"glibc-2.40-66", "acl-2.3.2", "attr-2.5.2", "gmp-6.3.0", "openssl-3.3.2"}},
	{"", "libxcrypt-4.4.36", 300 * kb, []string{"glibc-2.40-66"}},
	{"perl", "perl-5.40.0", 60 * mb, []string{"glibc-2.40-66", "libxcrypt-4.4.36", "zlib-1.3.1", "bash-5.2p37", "coreutils-9.5"}},
	{"", "libffi-3.4.6", 100 * kb, []string{"glibc-2.40-66"}},
	{"", "expat-2.6.4", 500 * kb, []string{"glibc-2.40-66"}},
	{"sqlite", "sqlite-3.46.1", 2500 * kb, []string{"glibc-2.40-66", "zlib-1.3.1", "readline-8.2p13", "ncurses-6.4.20221231"}},
	{"", "gdbm-1.24-lib", 500 * kb, []string{"glibc-2.40-66", "readline-8.2p13"}},
	{"", "mpdecimal-4.0.0", 400 * kb, []string{"glibc-2.40-66", "gcc-13.3.0-lib"}},
	{"tzdata", "tzdata-2024b", 2 * mb, nil},
	{"", "mailcap-2.1.54", 100 * kb, nil},
	{"", "iana-etc-20240318", 600 * kb, nil},
	{"python3", "python3-3.12.8", 110 * mb, []string{"glibc-2.40-66", "zlib-1.3.1", "bzip2-1.0.8", "xz-5.6.3", "openssl-3.3.2", "libffi-3.4.6", "expat-2.6.4", "sqlite-3.46.1", "readline-8.2p13", "ncurses-6.4.20221231", "gdbm-1.24-lib", "mpdecimal-4.0.0", "libxcrypt-4.4.36", "tzdata-2024b", "mailcap-2.1.54", "bash-5.2p37"}},
	{"", "brotli-1.1.0-lib", 800 * kb, []string{"glibc-2.40-66"}},
	{"", "nghttp2-1.64.0-lib", 300 * kb, []string{"glibc-2.40-66"}},
	{"", "libssh2-1.11.1", 400 * kb, []string{"glibc-2.40-66", "openssl-3.3.2", "zlib-1.3.1"}},
	{"", "libpsl-0.21.5", 200 * kb, []string{"glibc-2.40-66", "libidn2-2.3.7", "libunistring-1.2"}},
	{"", "keyutils-1.6.3-lib", 50 * kb, []string{"glibc-2.40-66"}},
	{"", "krb5-1.21.3-lib", 3 * mb, []string{"glibc-2.40-66", "keyutils-1.6.3-lib", "openssl-3.3.2"}},
	{"", "curl-8.11.0-lib", 1 * mb, []string{"glibc-2.40-66", "openssl-3.3.2", "zlib-1.3.1", "brotli-1.1.0-lib", "nghttp2-1.64.0-lib", "libssh2-1.11.1", "libpsl-0.21.5", "zstd-1.5.6", "libidn2-2.3.7", "krb5-1.21.3-lib"}},
	{"curl", "curl-8.11.0-bin", 700 * kb, []string{"curl-8.11.0-lib", "glibc-2.40-66", "zlib-1.3.1", "openssl-3.3.2"}},
	{"", "pcre2-10.44", 1700 * kb, []string{"glibc-2.40-66"}},
	{"git", "git-2.47.1", 48 * mb, []string{"glibc-2.40-66", "curl-8.11.0-lib", "openssl-3.3.2", "zlib-1.3.1", "pcre2-10.44", "perl-5.40.0", "python3-3.12.8", "expat-2.6.4", "bash-5.2p37", "coreutils-9.5", "openssh-9.9p1", "less-668", "gnugrep-3.11", "gnused-4.9"}},
	{"openssh", "openssh-9.9p1", 5 * mb, []string{"glibc-2.40-66", "openssl-3.3.2", "zlib-1.3.1", "krb5-1.21.3-lib", "libxcrypt-4.4.36"}},
	{"less", "less-668", 300 * kb, []string{"glibc-2.40-66", "ncurses-6.4.20221231", "pcre2-10.44"}},
	{"gnugrep", "gnugrep-3.11", 1 * mb, []string{"glibc-2.40-66", "pcre2-10.44"}},
	{"gnused", "gnused-4.9", 800 * kb, []string{"glibc-2.40-66"}},
	{"", "oniguruma-6.9.9-lib", 600 * kb, []string{"glibc-2.40-66"}},
	{"jq", "jq-1.7.1-bin", 400 * kb, []string{"glibc-2.40-66", "oniguruma-6.9.9-lib", "jq-1.7.1-lib"}},
	{"", "jq-1.7.1-lib", 400 * kb, []string{"glibc-2.40-66", "oniguruma-6.9.9-lib"}},
	{"", "icu4c-74.2", 36 * mb, []string{"glibc-2.40-66", "gcc-13.3.0-lib"}},
	{"", "libuv-1.48.0", 700 * kb, []string{"glibc-2.40-66"}},
	{"", "c-ares-1.34.3", 400 * kb, []string{"glibc-2.40-66"}},
	{"nodejs", "nodejs-22.11.0", 75 * mb, []string{"glibc-2.40-66", "gcc-13.3.0-lib", "icu4c-74.2", "openssl-3.3.2", "zlib-1.3.1", "libuv-1.48.0", "brotli-1.1.0-lib", "c-ares-1.34.3", "nghttp2-1.64.0-lib", "bash-5.2p37", "python3-3.12.8"}},
	{"go", "go-1.23.4", 220 * mb, []string{"glibc-2.40-66", "tzdata-2024b", "mailcap-2.1.54", "iana-etc-20240318", "bash-5.2p37"}},
	{"", "libxml2-2.13.4", 2 * mb, []string{"glibc-2.40-66", "zlib-1.3.1", "xz-5.6.3", "icu4c-74.2"}},
	{"", "systemd-minimal-libs-256.8", 4 * mb, []string{"glibc-2.40-66", "libcap-2.70-lib", "xz-5.6.3", "zstd-1.5.6", "lz4-1.10.0", "libgcrypt-1.10.3-lib"}},
	{"", "libgpg-error-1.50", 1 * mb, []string{"glibc-2.40-66"}},
	{"", "libgcrypt-1.10.3-lib", 1500 * kb, []string{"glibc-2.40-66", "libgpg-error-1.50"}},
	{"", "openldap-2.6.8", 3 * mb, []string{"glibc-2.40-66", "openssl-3.3.2", "libsasl2-2.1.28"}},
	{"", "libsasl2-2.1.28", 800 * kb, []string{"glibc-2.40-66", "openssl-3.3.2", "libxcrypt-4.4.36"}},
	{"", "linux-pam-1.6.1", 1500 * kb, []string{"glibc-2.40-66", "libxcrypt-4.4.36"}},
	{"postgresql", "postgresql-16.6", 45 * mb, []string{"glibc-2.40-66", "openssl-3.3.2", "icu4c-74.2", "libxml2-2.13.4", "readline-8.2p13", "zlib-1.3.1", "lz4-1.10.0", "zstd-1.5.6", "systemd-minimal-libs-256.8", "tzdata-2024b", "openldap-2.6.8", "krb5-1.21.3-lib", "linux-pam-1.6.1", "postgresql-16.6-lib", "bash-5.2p37"}},
	{"", "postgresql-16.6-lib", 2 * mb, []string{"glibc-2.40-66", "openssl-3.3.2", "krb5-1.21.3-lib", "openldap-2.6.8"}},
	{"", "jemalloc-5.3.0", 1 * mb, []string{"glibc-2.40-66", "gcc-13.3.0-lib"}},
	{"redis", "redis-7.2.6", 12 * mb, []string{"glibc-2.40-66", "openssl-3.3.2", "systemd-minimal-libs-256.8", "jemalloc-5.3.0", "tzdata-2024b"}},
	{"", "libxslt-1.1.42", 800 * kb, []string{"glibc-2.40-66", "libxml2-2.13.4", "libgcrypt-1.10.3-lib"}},
	{"", "libpng-apng-1.6.43", 400 * kb, []string{"glibc-2.40-66", "zlib-1.3.1"}},
	{"", "libjpeg-turbo-3.0.4", 1500 * kb, []string{"glibc-2.40-66"}},
	{"", "freetype-2.13.3", 1500 * kb, []string{"glibc-2.40-66", "zlib-1.3.1", "bzip2-1.0.8", "libpng-apng-1.6.43", "brotli-1.1.0-lib"}},
	{"", "fontconfig-2.15.0-lib", 700 * kb, []string{"glibc-2.40-66", "freetype-2.13.3", "expat-2.6.4"}},
	{"", "libwebp-1.4.0", 1200 * kb, []string{"glibc-2.40-66", "libpng-apng-1.6.43", "libjpeg-turbo-3.0.4", "libtiff-4.7.0"}},
	{"", "libtiff-4.7.0", 1500 * kb, []string{"glibc-2.40-66", "zlib-1.3.1", "libjpeg-turbo-3.0.4", "xz-5.6.3", "zstd-1.5.6", "lerc-4.0.0", "libdeflate-1.22"}},
	{"", "lerc-4.0.0", 700 * kb, []string{"glibc-2.40-66", "gcc-13.3.0-lib"}},
	{"", "libdeflate-1.22", 200 * kb, []string{"glibc-2.40-66"}},
	{"", "gd-2.3.3", 900 * kb, []string{"glibc-2.40-66", "libpng-apng-1.6.43", "libjpeg-turbo-3.0.4", "freetype-2.13.3", "fontconfig-2.15.0-lib", "libwebp-1.4.0", "libtiff-4.7.0", "zlib-1.3.1"}},
	{"nginx", "nginx-1.26.2", 4 * mb, []string{"glibc-2.40-66", "pcre2-10.44", "openssl-3.3.2", "zlib-1.3.1", "libxml2-2.13.4", "libxslt-1.1.42", "gd-2.3.3", "mailcap-2.1.54", "libxcrypt-4.4.36"}},
	{"", "lm-sensors-3.6.0", 500 * kb, []string{"glibc-2.40-66", "perl-5.40.0"}},
	{"htop", "htop-3.3.0", 500 * kb, []string{"glibc-2.40-66", "ncurses-6.4.20221231", "libcap-2.70-lib", "lm-sensors-3.6.0"}},
	{"", "gpm-unstable-2020-06-17", 300 * kb, []string{"glibc-2.40-66", "ncurses-6.4.20221231"}},
	{"", "libsodium-1.0.20", 600 * kb, []string{"glibc-2.40-66"}},
	{"vim", "vim-9.1.0765", 40 * mb, []string{"glibc-2.40-66", "ncurses-6.4.20221231", "acl-2.3.2", "gpm-unstable-2020-06-17", "libsodium-1.0.20"}},
	{"nano", "nano-8.2", 3 * mb, []string{"glibc-2.40-66", "ncurses-6.4.20221231", "file-5.45"}},
	{"", "file-5.45", 9 * mb, []string{"glibc-2.40-66", "zlib-1.3.1"}},
	{"", "perl5.40.0-IPC-Run-20231003.0", 500 * kb, []string{"perl-5.40.0", "perl5.40.0-IO-Tty-1.20"}},
	{"", "perl5.40.0-IO-Tty-1.20", 200 * kb, []string{"perl-5.40.0", "glibc-2.40-66"}},
	{"", "perl5.40.0-TimeDate-2.33", 150 * kb, []string{"perl-5.40.0"}},
	{"moreutils", "moreutils-0.69", 1 * mb, []string{"glibc-2.40-66", "perl-5.40.0", "perl5.40.0-IPC-Run-20231003.0", "perl5.40.0-TimeDate-2.33", "bash-5.2p37"}},
}

// python packages: name, size, extra references (python3 is implied).
var pythonPkgs = []struct {
	attr, name string
	size       int64
	refs       []string
}{
	{"python3Packages.six", "python3.12-six-1.16.0", 100 * kb, nil},
	{"python3Packages.packaging", "python3.12-packaging-24.1", 400 * kb, nil},
	{"python3Packages.idna", "python3.12-idna-3.10", 600 * kb, nil},
	{"python3Packages.certifi", "python3.12-certifi-2024.8.30", 500 * kb, nil},
	{"python3Packages.urllib3", "python3.12-urllib3-2.2.3", 1 * mb, nil},
	{"python3Packages.charset-normalizer", "python3.12-charset-normalizer-3.3.2", 600 * kb, nil},
	{"python3Packages.requests", "python3.12-requests-2.32.3", 500 * kb, []string{"python3.12-idna-3.10", "python3.12-certifi-2024.8.30", "python3.12-urllib3-2.2.3", "python3.12-charset-normalizer-3.3.2"}},
	{"python3Packages.markupsafe", "python3.12-markupsafe-2.1.5", 100 * kb, nil},
	{"python3Packages.jinja2", "python3.12-jinja2-3.1.4", 1 * mb, []string{"python3.12-markupsafe-2.1.5"}},
	{"python3Packages.click", "python3.12-click-8.1.7", 700 * kb, nil},
	{"python3Packages.itsdangerous", "python3.12-itsdangerous-2.2.0", 100 * kb, nil},
	{"python3Packages.blinker", "python3.12-blinker-1.8.2", 100 * kb, nil},
	{"python3Packages.werkzeug", "python3.12-werkzeug-3.0.6", 2 * mb, []string{"python3.12-markupsafe-2.1.5"}},
	{"python3Packages.flask", "python3.12-flask-3.0.3", 800 * kb, []string{"python3.12-werkzeug-3.0.6", "python3.12-jinja2-3.1.4", "python3.12-click-8.1.7", "python3.12-itsdangerous-2.2.0", "python3.12-blinker-1.8.2"}},
	{"", "openblas-0.3.28", 40 * mb, []string{"glibc-2.40-66", "gfortran-13.3.0-lib"}},
	{"", "gfortran-13.3.0-lib", 4 * mb, []string{"glibc-2.40-66", "gcc-13.3.0-lib"}},
	{"python3Packages.numpy", "python3.12-numpy-1.26.4", 45 * mb, []string{"openblas-0.3.28", "gcc-13.3.0-lib"}},
	{"python3Packages.scipy", "python3.12-scipy-1.14.1", 110 * mb, []string{"python3.12-numpy-1.26.4", "openblas-0.3.28", "gfortran-13.3.0-lib", "python3.12-pybind11-2.13.6"}},
	{"", "python3.12-pybind11-2.13.6", 1 * mb, nil},
	{"python3Packages.python-dateutil", "python3.12-python-dateutil-2.9.0", 600 * kb, []string{"python3.12-six-1.16.0"}},
	{"python3Packages.pytz", "python3.12-pytz-2024.2", 3 * mb, nil},
	{"python3Packages.pandas", "python3.12-pandas-2.2.3", 70 * mb, []string{"python3.12-numpy-1.26.4", "python3.12-python-dateutil-2.9.0", "python3.12-pytz-2024.2", "python3.12-tzdata-2024.2"}},
	{"", "python3.12-tzdata-2024.2", 2 * mb, nil},
	{"python3Packages.pillow", "python3.12-pillow-11.0.0", 5 * mb, []string{"libjpeg-turbo-3.0.4", "libtiff-4.7.0", "libwebp-1.4.0", "freetype-2.13.3", "zlib-1.3.1", "lcms2-2.16", "openjpeg-2.5.2"}},
	{"", "lcms2-2.16", 500 * kb, []string{"glibc-2.40-66", "libjpeg-turbo-3.0.4", "libtiff-4.7.0"}},
	{"", "openjpeg-2.5.2", 1 * mb, []string{"glibc-2.40-66", "libpng-apng-1.6.43", "libtiff-4.7.0", "lcms2-2.16", "zlib-1.3.1"}},
	{"python3Packages.matplotlib", "python3.12-matplotlib-3.9.2", 35 * mb, []string{"python3.12-numpy-1.26.4", "python3.12-pillow-11.0.0", "python3.12-packaging-24.1", "python3.12-python-dateutil-2.9.0", "python3.12-cycler-0.12.1", "python3.12-kiwisolver-1.4.7", "python3.12-pyparsing-3.1.4", "python3.12-fonttools-4.54.1", "python3.12-contourpy-1.3.0", "freetype-2.13.3", "qhull-2020.2"}},
	{"", "python3.12-cycler-0.12.1", 50 * kb, nil},
	{"", "python3.12-kiwisolver-1.4.7", 300 * kb, []string{"gcc-13.3.0-lib"}},
	{"", "python3.12-pyparsing-3.1.4", 800 * kb, nil},
	{"", "python3.12-fonttools-4.54.1", 15 * mb, []string{"python3.12-brotli-1.1.0"}},
	{"", "python3.12-brotli-1.1.0", 900 * kb, []string{"brotli-1.1.0-lib"}},
	{"", "python3.12-contourpy-1.3.0", 900 * kb, []string{"python3.12-numpy-1.26.4", "gcc-13.3.0-lib"}},
	{"", "qhull-2020.2", 2 * mb, []string{"glibc-2.40-66", "gcc-13.3.0-lib"}},
}

// Shape selects how the generated part of a package set is drawn. The
// hand-written core and python packages are the same in every shape, and
// so is the workload; what differs is the GUI, multimedia and long-tail
// graph under emacs, ffmpeg and imagemagick. A second shape is there to
// tell a layering that exploits one generator's quirks from one that holds
// on package sets in general.
type Shape int

const (
	// Tower is the set every figure of docs/layering.md was measured on: one
	// X11/GTK-like tower of 120 libraries, each referring to a few random
	// libraries anywhere below it; 35 codecs referring to base libraries
	// only; a tail of 500 libraries and 300 applications.
	Tower Shape = iota
	// Stacks is shaped differently: three toolkits (an X11 base of 40
	// libraries, a GTK-like stack of 70 and a Qt-like stack of 50) whose
	// libraries refer to near neighbours below them (a local, layered
	// graph rather than a random one), 60 codecs in chains over a few codec
	// bases, ffmpeg on the X11 base and the Qt stack, emacs on the GTK
	// stack, different size distributions, a tail of 800 libraries and 400
	// applications.
	Stacks
)

// Shapes names the shapes, as bench/sharing's -shape flag takes them.
var Shapes = map[string]Shape{"tower": Tower, "stacks": Stacks}

// Generate builds the package set of shape Tower: the hand-written core,
// the python packages, then generated GUI/multimedia stacks and a long tail
// of libraries and applications, with sizes drawn from a log-normal
// distribution (median ~300 KB, a few tens of MB at the top).
func Generate(seed uint64) *Set { return GenerateShape(seed, Tower) }

// GenerateShape builds the package set of the given shape (see Shape).
func GenerateShape(seed uint64, shape Shape) *Set {
	r := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	s := &Set{Paths: map[string]*Path{}, Attrs: map[string]string{}}
	add := func(attr, name string, size int64, refs []string) {
		if _, dup := s.Paths[name]; dup {
			panic("duplicate " + name)
		}
		// Clone refs: the tables above are shared by every call and the
		// names in it are rewritten to store paths below.
		s.Paths[name] = &Path{Name: name, Size: size, Refs: slices.Clone(refs)}
		if attr != "" {
			s.Attrs[attr] = name
		}
	}
	for _, c := range core {
		add(c.attr, c.name, c.size, c.refs)
	}
	for _, p := range pythonPkgs {
		refs := p.refs
		if len(p.name) > 9 && p.name[:9] == "python3.1" {
			refs = append(slices.Clone(refs), "python3-3.12.8")
		}
		add(p.attr, p.name, p.size, refs)
	}
	logSize := func(median float64, sigma float64, maxSize int64) int64 {
		return min(maxSize, max(4*kb, int64(median*math.Exp(r.NormFloat64()*sigma))))
	}
	pick := func(from []string, k int) []string {
		var out []string
		for range k {
			out = append(out, from[r.IntN(len(from))])
		}
		slices.Sort(out)
		return slices.Compact(out)
	}
	base := []string{"glibc-2.40-66", "glibc-2.40-66", "glibc-2.40-66", "zlib-1.3.1", "gcc-13.3.0-lib", "openssl-3.3.2", "xz-5.6.3", "bzip2-1.0.8", "expat-2.6.4", "pcre2-10.44", "libffi-3.4.6", "ncurses-6.4.20221231", "libxml2-2.13.4"}

	if shape == Stacks {
		stacks(r, add, logSize, pick, base)
	} else {
		// An X11/GTK stack: 120 libraries in layers, each depending on a few
		// below it, as the libX11 … gtk3 tower of nixpkgs.
		var gui []string
		for i := range 120 {
			name := fmt.Sprintf("gui-lib%02d-%d.%d", i, 1+i%5, i%7)
			refs := pick(base, 2)
			if len(gui) > 0 {
				refs = append(refs, pick(gui, 2+r.IntN(5))...)
			}
			if i >= 80 {
				refs = append(refs, "freetype-2.13.3", "fontconfig-2.15.0-lib", "libpng-apng-1.6.43")
			}
			slices.Sort(refs)
			add("", name, logSize(700*kb, 1.2, 30*mb), slices.Compact(refs))
			gui = append(gui, name)
		}
		// Codecs for multimedia: mostly private to one or two users.
		var codecs []string
		for i := range 35 {
			name := fmt.Sprintf("codec%02d-%d.%d", i, 1+i%4, i%9)
			add("", name, logSize(1*mb, 1.1, 25*mb), pick(base, 1+r.IntN(2)))
			codecs = append(codecs, name)
		}
		add("ffmpeg", "ffmpeg-7.1-lib", 30*mb, append(pick(codecs, 30), pick(gui, 12)...))
		add("", "ffmpeg-7.1-bin", 3*mb, []string{"ffmpeg-7.1-lib", "glibc-2.40-66"})
		s.Attrs["ffmpeg"] = "ffmpeg-7.1-bin"
		add("imagemagick", "imagemagick-7.1.1-41", 25*mb, append([]string{"libjpeg-turbo-3.0.4", "libtiff-4.7.0", "libwebp-1.4.0", "freetype-2.13.3", "fontconfig-2.15.0-lib", "lcms2-2.16", "openjpeg-2.5.2", "libxml2-2.13.4", "bzip2-1.0.8"}, pick(codecs, 6)...))
		add("emacs", "emacs-29.4", 160*mb, append(append(pick(gui[60:], 30), pick(codecs, 4)...),
			"gnutls-3.8.6", "sqlite-3.46.1", "ncurses-6.4.20221231", "systemd-minimal-libs-256.8", "libxml2-2.13.4", "gmp-6.3.0"))
		add("", "gnutls-3.8.6", 4*mb, []string{"glibc-2.40-66", "gmp-6.3.0", "libidn2-2.3.7", "libunistring-1.2", "nettle-3.10", "p11-kit-0.25.5", "zlib-1.3.1", "zstd-1.5.6"})
		add("", "nettle-3.10", 1*mb, []string{"glibc-2.40-66", "gmp-6.3.0"})
		add("", "p11-kit-0.25.5", 2*mb, []string{"glibc-2.40-66", "libffi-3.4.6"})

		// The long tail: libraries that a few packages share, and many more
		// that exactly one package uses, under ~300 applications that are
		// never requested by the workload but make the popularity table.
		var tail []string
		for i := range 500 {
			name := fmt.Sprintf("lib-tail%03d-%d.%d", i, r.IntN(5), r.IntN(20))
			refs := pick(base, 1+r.IntN(3))
			if len(tail) > 0 && r.IntN(3) == 0 {
				refs = append(refs, pick(tail, 1)...)
			}
			slices.Sort(refs)
			add("", name, logSize(300*kb, 1.3, 40*mb), slices.Compact(refs))
			tail = append(tail, name)
		}
		mid := []string{"python3-3.12.8", "perl-5.40.0", "curl-8.11.0-lib", "sqlite-3.46.1", "readline-8.2p13", "icu4c-74.2", "libxml2-2.13.4", "systemd-minimal-libs-256.8", "krb5-1.21.3-lib", "libjpeg-turbo-3.0.4", "freetype-2.13.3", "bash-5.2p37", "coreutils-9.5"}
		for i := range 300 {
			name := fmt.Sprintf("app%03d-%d.%d", i, r.IntN(9), r.IntN(30))
			refs := append(pick(base, 1+r.IntN(3)), pick(tail, 1+r.IntN(4))...)
			if r.IntN(3) == 0 {
				refs = append(refs, pick(mid, 1+r.IntN(2))...)
			}
			if r.IntN(8) == 0 {
				refs = append(refs, pick(gui, 1+r.IntN(5))...)
			}
			slices.Sort(refs)
			add(fmt.Sprintf("app%03d", i), name, logSize(2*mb, 1.2, 150*mb), slices.Compact(refs))
		}

	}
	// Store paths get a hash-like prefix derived from the name, so the
	// same seed gives the same paths.
	for _, p := range s.Paths {
		p.Path = "/nix/store/" + fakeHash(p.Name) + "-" + p.Name
	}
	for _, p := range s.Paths {
		for i, ref := range p.Refs {
			target, ok := s.Paths[ref]
			if !ok {
				panic(p.Name + " refers to unknown " + ref)
			}
			p.Refs[i] = target.Path
		}
	}
	return s
}

// fakeHash is 32 characters of Nix's base32 alphabet derived from name.
func fakeHash(name string) string {
	const alphabet = "0123456789abcdfghijklmnpqrsvwxyz"
	h := uint64(14695981039346656037)
	out := make([]byte, 32)
	for i := range out {
		for _, c := range []byte(name) {
			h = (h ^ uint64(c)) * 1099511628211
		}
		h ^= uint64(i)
		out[i] = alphabet[h%32]
	}
	return string(out)
}

// ByPath indexes the set by store path.
func (s *Set) ByPath() map[string]*Path {
	m := make(map[string]*Path, len(s.Paths))
	for _, p := range s.Paths {
		m[p.Path] = p
	}
	return m
}

// Closure returns the store paths reachable from the given attributes'
// paths, sorted by store path.
func (s *Set) Closure(attrs []string) ([]*Path, error) {
	idx := s.ByPath()
	seen := map[string]bool{}
	var todo []string
	for _, a := range attrs {
		name, ok := s.Attrs[a]
		if !ok {
			return nil, fmt.Errorf("unknown attribute %q", a)
		}
		todo = append(todo, s.Paths[name].Path)
	}
	var out []*Path
	for len(todo) > 0 {
		p := todo[len(todo)-1]
		todo = todo[:len(todo)-1]
		if seen[p] {
			continue
		}
		seen[p] = true
		out = append(out, idx[p])
		todo = append(todo, idx[p].Refs...)
	}
	slices.SortFunc(out, func(a, b *Path) int { return cmp.Compare(a.Path, b.Path) })
	return out, nil
}

// Popularity derives a popularity table as the original Nixery's popcount
// does from the binary cache: for every store path name, the number of
// store paths of the whole set that refer to it.
func (s *Set) Popularity() map[string]int {
	idx := s.ByPath()
	pop := map[string]int{}
	for _, p := range s.Paths {
		for _, ref := range p.Refs {
			if ref != p.Path {
				pop[idx[ref].Name]++
			}
		}
	}
	return pop
}

// stacks draws the generated part of shape Stacks (see Shape).
func stacks(r *rand.Rand, add func(attr, name string, size int64, refs []string), logSize func(median, sigma float64, maxSize int64) int64, pick func(from []string, k int) []string, base []string) {
	// near picks k libraries among the w just below position i of layer.
	near := func(layer []string, i, w, k int) []string {
		lo := max(0, i-w)
		if i <= lo {
			return nil
		}
		return pick(layer[lo:i], k)
	}
	lib := func(attr, name string, size int64, refs ...[]string) string {
		var all []string
		for _, rs := range refs {
			all = append(all, rs...)
		}
		slices.Sort(all)
		add(attr, name, size, slices.Compact(all))
		return name
	}
	var x11, gtk, qt []string
	for i := range 40 {
		x11 = append(x11, lib("", fmt.Sprintf("libX%02d-1.%d.%d", i, i%8, i%3), logSize(400*kb, 1.0, 12*mb),
			pick(base, 1+r.IntN(2)), near(x11, i, 4, 1+r.IntN(3))))
	}
	for i := range 70 {
		refs := near(gtk, i, 8, 1+r.IntN(4))
		if i%10 == 0 || len(refs) == 0 {
			refs = append(refs, pick(x11, 2+r.IntN(3))...)
		}
		if i >= 35 {
			refs = append(refs, "freetype-2.13.3", "fontconfig-2.15.0-lib")
		}
		gtk = append(gtk, lib("", fmt.Sprintf("gtkpart%02d-3.%d", i, i%24), logSize(1200*kb, 1.0, 40*mb),
			pick(base, 1), refs))
	}
	for i := range 50 {
		refs := near(qt, i, 6, 1+r.IntN(3))
		if i%7 == 0 || len(refs) == 0 {
			refs = append(refs, pick(x11, 1+r.IntN(4))...)
		}
		qt = append(qt, lib("", fmt.Sprintf("qtmodule%02d-6.%d.%d", i, i%9, i%4), logSize(2*mb, 1.3, 60*mb),
			pick(base, 1+r.IntN(2)), refs, []string{"libpng-apng-1.6.43"}))
	}
	// Codecs: a few bases, the others in chains over them.
	var codecs []string
	for i := range 60 {
		var refs []string
		if i >= 6 {
			refs = pick(codecs, 1+r.IntN(2))
		}
		codecs = append(codecs, lib("", fmt.Sprintf("media-codec%02d-0.%d", i, i%13), logSize(600*kb, 1.4, 20*mb),
			pick(base, 1+r.IntN(2)), refs))
	}
	lib("", "ffmpeg-7.1-lib", 30*mb, pick(codecs, 40), pick(x11, 8), pick(qt[:20], 4))
	lib("ffmpeg", "ffmpeg-7.1-bin", 3*mb, []string{"ffmpeg-7.1-lib", "glibc-2.40-66"})
	lib("imagemagick", "imagemagick-7.1.1-41", 25*mb, []string{"libjpeg-turbo-3.0.4", "libtiff-4.7.0", "libwebp-1.4.0", "freetype-2.13.3", "fontconfig-2.15.0-lib", "lcms2-2.16", "openjpeg-2.5.2", "libxml2-2.13.4", "bzip2-1.0.8"},
		pick(codecs, 10), pick(x11, 3))
	lib("emacs", "emacs-29.4", 160*mb, pick(gtk[30:], 20), pick(x11, 3), pick(codecs, 2),
		[]string{"gnutls-3.8.6", "sqlite-3.46.1", "ncurses-6.4.20221231", "systemd-minimal-libs-256.8", "libxml2-2.13.4", "gmp-6.3.0"})
	add("", "gnutls-3.8.6", 4*mb, []string{"glibc-2.40-66", "gmp-6.3.0", "libidn2-2.3.7", "libunistring-1.2", "nettle-3.10", "p11-kit-0.25.5", "zlib-1.3.1", "zstd-1.5.6"})
	add("", "nettle-3.10", 1*mb, []string{"glibc-2.40-66", "gmp-6.3.0"})
	add("", "p11-kit-0.25.5", 2*mb, []string{"glibc-2.40-66", "libffi-3.4.6"})

	var tail []string
	for i := range 800 {
		refs := pick(base, 1+r.IntN(2))
		if len(tail) > 0 && r.IntN(2) == 0 {
			refs = append(refs, pick(tail[max(0, len(tail)-50):], 1+r.IntN(2))...)
		}
		tail = append(tail, lib("", fmt.Sprintf("tail-pkg%03d-%d", i, r.IntN(40)), logSize(200*kb, 1.5, 30*mb), refs))
	}
	mid := []string{"python3-3.12.8", "perl-5.40.0", "curl-8.11.0-lib", "sqlite-3.46.1", "icu4c-74.2", "libxml2-2.13.4", "systemd-minimal-libs-256.8", "freetype-2.13.3", "bash-5.2p37"}
	for i := range 400 {
		refs := [][]string{pick(base, 1+r.IntN(2)), pick(tail, 1+r.IntN(6))}
		if r.IntN(2) == 0 {
			refs = append(refs, pick(mid, 1+r.IntN(3)))
		}
		switch r.IntN(10) {
		case 0:
			refs = append(refs, pick(gtk, 1+r.IntN(3)))
		case 1:
			refs = append(refs, pick(qt, 1+r.IntN(3)))
		case 2:
			refs = append(refs, pick(codecs, 1+r.IntN(3)))
		}
		lib(fmt.Sprintf("tool%03d", i), fmt.Sprintf("tool%03d-%d.%d", i, r.IntN(5), r.IntN(12)), logSize(3*mb, 1.0, 120*mb), refs...)
	}
}
