package attest

import (
	"crypto/sha256"
	"fmt"
	"math/rand/v2"

	"github.com/opencontainers/go-digest"
)

// storePath is a store path of name with a hash made from it (Nix's
// base-32 alphabet), as Nix would name it.
func storePath(name string) string {
	const alphabet = "0123456789abcdfghijklmnpqrsvwxyz"
	sum := sha256.Sum256([]byte(name))
	h := make([]byte, 32)
	for i := range h {
		h[i] = alphabet[sum[i]%32]
	}
	return "/nix/store/" + string(h) + "-" + name
}

// narHash is a made-up NAR hash of a store path.
func narHash(p string) digest.Digest { return digest.FromString("nar of " + p) }

// realistic is an image like shell/git/hello/… from nixpkgs: a few dozen
// store paths, requested packages with meta (SPDX licences, a list of
// licences, a LicenseRef, an unfree and a non-SPDX licence, a package
// without meta) and paths without any.
func realistic() Image {
	type pkg struct {
		name     string // store path name, <pname>-<version>
		attr     string // requested as, "" for a dependency
		licenses []License
		homepage string
		deps     []string
	}
	gpl2 := License{SPDX: "GPL-2.0-or-later", ShortName: "gpl2Plus", FullName: "GNU General Public License v2.0 or later"}
	list := []pkg{
		{name: "glibc-2.39-52", deps: []string{"libidn2-2.3.7", "xgcc-13.3.0-libgcc"}},
		{name: "xgcc-13.3.0-libgcc"},
		{name: "libidn2-2.3.7", deps: []string{"libunistring-1.2"}},
		{name: "libunistring-1.2"},
		{name: "zlib-1.3.1", deps: []string{"glibc-2.39-52"}},
		{name: "ncurses-6.4.20221231", deps: []string{"glibc-2.39-52"}},
		{name: "readline-8.2p13", deps: []string{"ncurses-6.4.20221231"}},
		{name: "bash-interactive-5.2p37", attr: "bashInteractive", licenses: []License{{SPDX: "GPL-3.0-or-later", ShortName: "gpl3Plus"}}, homepage: "https://www.gnu.org/software/bash/", deps: []string{"readline-8.2p13", "glibc-2.39-52"}},
		{name: "coreutils-9.5", attr: "coreutils", licenses: []License{{SPDX: "GPL-3.0-or-later"}}, homepage: "https://www.gnu.org/software/coreutils/", deps: []string{"glibc-2.39-52", "acl-2.3.2", "attr-2.5.2", "gmp-with-cxx-6.3.0", "openssl-3.0.14"}},
		{name: "acl-2.3.2", deps: []string{"attr-2.5.2"}},
		{name: "attr-2.5.2", deps: []string{"glibc-2.39-52"}},
		{name: "gmp-with-cxx-6.3.0", deps: []string{"glibc-2.39-52", "gcc-13.3.0-lib"}},
		{name: "gcc-13.3.0-lib", deps: []string{"glibc-2.39-52"}},
		{name: "openssl-3.0.14", deps: []string{"glibc-2.39-52"}},
		{name: "moreutils-0.69", attr: "moreutils", licenses: []License{{SPDX: "GPL-2.0-only"}}, homepage: "https://joeyh.name/code/moreutils/", deps: []string{"perl-5.40.0", "glibc-2.39-52"}},
		{name: "perl-5.40.0", deps: []string{"glibc-2.39-52", "zlib-1.3.1"}},
		{name: "nano-8.1", attr: "nano", licenses: []License{{SPDX: "GPL-3.0-or-later"}}, homepage: "https://www.nano-editor.org", deps: []string{"ncurses-6.4.20221231", "file-5.45"}},
		{name: "file-5.45", deps: []string{"zlib-1.3.1"}},
		{name: "git-2.45.2", attr: "git", licenses: []License{gpl2}, homepage: "https://git-scm.com/", deps: []string{"curl-8.9.1", "expat-2.6.2", "openssl-3.0.14", "pcre2-10.44", "perl-5.40.0", "python3-3.12.4", "zlib-1.3.1"}},
		{name: "curl-8.9.1", deps: []string{"openssl-3.0.14", "nghttp2-1.62.1-lib", "zstd-1.5.6", "brotli-1.1.0-lib", "libssh2-1.11.0", "libpsl-0.21.5"}},
		{name: "nghttp2-1.62.1-lib", deps: []string{"glibc-2.39-52"}},
		{name: "zstd-1.5.6", deps: []string{"glibc-2.39-52"}},
		{name: "brotli-1.1.0-lib", deps: []string{"glibc-2.39-52"}},
		{name: "libssh2-1.11.0", deps: []string{"openssl-3.0.14"}},
		{name: "libpsl-0.21.5", deps: []string{"libidn2-2.3.7", "libunistring-1.2"}},
		{name: "expat-2.6.2", deps: []string{"glibc-2.39-52"}},
		{name: "pcre2-10.44", deps: []string{"glibc-2.39-52"}},
		{name: "python3-3.12.4", deps: []string{"glibc-2.39-52", "zlib-1.3.1", "openssl-3.0.14", "tzdata-2024a"}},
		{name: "tzdata-2024a"},
		{name: "hello-2.12.1", attr: "hello", licenses: []License{{SPDX: "GPL-3.0-or-later"}}, homepage: "https://www.gnu.org/software/hello/manual/", deps: []string{"glibc-2.39-52"}},
		{name: "jq-1.7.1-bin", attr: "jq", licenses: []License{{SPDX: "MIT", ShortName: "mit", FullName: "MIT License"}, {SPDX: "CC-BY-3.0"}}, homepage: "https://jqlang.github.io/jq/", deps: []string{"oniguruma-6.9.9-lib", "glibc-2.39-52"}},
		{name: "oniguruma-6.9.9-lib", deps: []string{"glibc-2.39-52"}},
		{name: "vault-bin-1.17.2", attr: "vault-bin", licenses: []License{{ShortName: "bsl11", FullName: "Business Source License 1.1", SPDX: "BUSL-1.1"}}, homepage: "https://www.vaultproject.io/"},
		{name: "steam-run-1.0", attr: "steam-run", licenses: []License{{ShortName: "unfreeRedistributable", FullName: "Unfree redistributable"}}},
		{name: "corp-tool-0.3", attr: "corp-tool", licenses: []License{{SPDX: "LicenseRef-Corp-EULA", FullName: "Corp End User Licence Agreement"}, gpl2}},
		{name: "old-thing-1.0", attr: "old-thing", licenses: []License{{SPDX: "GPL-2.0+"}, {ShortName: "free", FullName: "Unspecified free software license"}}, homepage: "http://example.org/old?x=1&y=<2>"},
		{name: "python3-3.12.4-env", attr: "python3.withpackages.numpy", deps: []string{"python3-3.12.4", "python3.12-numpy-1.26.4"}},
		{name: "python3.12-numpy-1.26.4", deps: []string{"python3-3.12.4"}},
	}
	img := Image{
		Name: "shell/git/hello/jq", Tag: "latest", Arch: "amd64",
		Manifest:          digest.FromString("the manifest"),
		ManifestMediaType: "application/vnd.oci.image.manifest.v1+json",
		Source: Source{
			Type: "git", URI: "git+https://example.org/pkgs.git", Description: "git repository https://example.org/pkgs.git",
			Identity: "git:0123456789abcdef0123456789abcdef01234567", Revision: "0123456789abcdef0123456789abcdef01234567",
		},
		Builder: Builder{ID: "https://nixery.example.org", Version: "1.4.0"},
	}
	for i, p := range list {
		sp := Path{Path: storePath(p.name), NarHash: narHash(storePath(p.name)), NarSize: int64(1000 * (i + 1))}
		for _, d := range p.deps {
			sp.References = append(sp.References, storePath(d))
		}
		img.Closure = append(img.Closure, sp)
		if p.attr != "" {
			pname, version := ParseName(p.name)
			pk := Package{Attribute: p.attr, Licenses: p.licenses, Homepage: p.homepage, Outputs: []string{storePath(p.name)}, DrvPath: storePath(p.name + ".drv")}
			if p.licenses != nil || p.homepage != "" {
				pk.PName, pk.Version = pname, version
			}
			img.Packages = append(img.Packages, pk)
		}
	}
	return img
}

// synthetic is an image of n store paths, each referring to a few of the
// ones before it (seeded: the same n, the same image).
func synthetic(n int) Image {
	rng := rand.New(rand.NewPCG(uint64(n), 1))
	img := Image{Name: "big", Tag: "latest", Arch: "arm64", Manifest: digest.FromString(fmt.Sprint("big ", n)), Builder: Builder{ID: "https://nixery.example.org", Version: "1.4.0"}}
	for i := range n {
		p := Path{Path: storePath(fmt.Sprintf("pkg%d-%d.%d", i, i%7, i%3)), NarSize: int64(rng.IntN(1 << 20))}
		p.NarHash = narHash(p.Path)
		for range rng.IntN(6) {
			if i > 0 {
				p.References = append(p.References, img.Closure[rng.IntN(i)].Path)
			}
		}
		img.Closure = append(img.Closure, p)
	}
	for i := n - 3; i < n; i++ {
		img.Packages = append(img.Packages, Package{Attribute: fmt.Sprintf("pkg%d", i), PName: fmt.Sprintf("pkg%d", i), Version: "1", Licenses: []License{{SPDX: "MIT"}}, Outputs: []string{img.Closure[i].Path}})
	}
	return img
}
