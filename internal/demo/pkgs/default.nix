# The Nixery demo package set: a tiny stand-in for nixpkgs that real Nix
# builds offline, from nothing but a static busybox.
#
# It is shaped like nixpkgs (a function of `system` returning attributes,
# a nested `xorg` set, shared libraries used by many packages) so that
# Nixery's tests exercise real store paths, real references between them
# and real runnable programs. Programs are busybox `sh` scripts or symlinks
# to busybox applets; "libraries" are files of deterministic pseudo-random
# data of varied size, so that image layers differ in size.
#
# `bootstrap/busybox` is not part of the source: package demo's Extract
# copies the machine's static busybox there.
{ system ? builtins.currentSystem, ... }:

let
  bb = builtins.path { path = ./bootstrap; name = "bootstrap-busybox"; };

  # Every busybox applet as a symlink, for the PATH of build scripts
  # (Nix starts builders with PATH unset).
  tools = derivation {
    name = "bootstrap-tools";
    inherit system;
    builder = "${bb}/busybox";
    args = [ "sh" "-c" "${bb}/busybox mkdir -p $out/bin && ${bb}/busybox --install -s $out/bin" ];
  };

  # Shell functions available to every build script.
  prelude = ''
    set -eu
    export PATH=${tools}/bin

    # script FILE: write stdin to FILE as an executable busybox sh script.
    script() {
      mkdir -p "$(dirname "$1")"
      { echo '#!${bb}/busybox sh'; cat; } > "$1"
      chmod 555 "$1"
    }

    # blob FILE SEED BYTES: deterministic, poorly compressible data.
    blob() {
      mkdir -p "$(dirname "$1")"
      awk -v seed="$2" -v n="$3" 'BEGIN {
        srand(seed)
        for (i = 0; i < n / 4; i++) printf "%04x", int(rand() * 65536)
      }' > "$1"
    }

    # applets DIR NAME...: symlink busybox applets into DIR.
    applets() {
      dir=$1; shift
      mkdir -p "$dir"
      for a in "$@"; do ln -s ${bb}/busybox "$dir/$a"; done
    }
  '';

  # mk builds one package. `deps` are runtime dependencies: their store
  # paths are written into the output, so Nix records them as references.
  # `meta` adds to the description, e.g. meta.mainProgram.
  mk = { pname, version, description, deps ? [ ], script, env ? { }, meta ? { } }:
    let
      drv = derivation ({
        name = "${pname}-${version}";
        inherit system;
        builder = "${bb}/busybox";
        args = [ "sh" "-c" (prelude + ''
          mkdir -p $out/nix-support
          ${if deps == [ ] then "" else "printf '%s\\n' ${toString deps} > $out/nix-support/runtime-dependencies"}
        '' + script) ];
      } // env);
    in
    # Like nixpkgs' mkDerivation: meta is not part of the derivation.
    drv // { inherit pname version; meta = { inherit description; } // meta; };

  # A shared library look-alike: one data file under lib/.
  lib = { pname, version, description, file, size, seed, deps ? [ ] }:
    mk {
      inherit pname version description deps;
      script = "blob $out/lib/${file} ${toString seed} ${toString size}\n";
    };

  # Licences as nixpkgs' lib.licenses describes them, for the SBOMs.
  licenses = {
    gpl2Plus = { spdxId = "GPL-2.0-or-later"; shortName = "gpl2Plus"; fullName = "GNU General Public License v2.0 or later"; free = true; };
    gpl3Plus = { spdxId = "GPL-3.0-or-later"; shortName = "gpl3Plus"; fullName = "GNU General Public License v3.0 or later"; free = true; };
    mit = { spdxId = "MIT"; shortName = "mit"; fullName = "MIT License"; free = true; };
    cc-by-30 = { spdxId = "CC-BY-3.0"; shortName = "cc-by-30"; fullName = "Creative Commons Attribution 3.0"; free = true; };
    curl = { spdxId = "curl"; shortName = "curl"; fullName = "curl License"; free = true; };
  };

  self = rec {
    # --- the libraries almost everything shares -------------------------

    libcommon = mk {
      pname = "libcommon";
      version = "2.38";
      description = "The demo set's C library look-alike, used by almost every package";
      script = ''
        blob $out/lib/libc.so.6 1 800000
        blob $out/lib/libm.so.6 2 120000
        cat > $out/lib/libcommon.sh <<'EOF'
        # Sourced by the demo set's programs.
        say() { printf '%s\n' "$*"; }
        die() { printf '%s\n' "$*" >&2; exit 1; }
        EOF
      '';
    };

    zlib = lib {
      pname = "zlib"; version = "1.3";
      description = "Lossless data-compression library (demo look-alike)";
      file = "libz.so.1"; size = 100000; seed = 3; deps = [ libcommon ];
    };

    ncurses = lib {
      pname = "ncurses"; version = "6.4";
      description = "Free software emulation of curses (demo look-alike)";
      file = "libncursesw.so.6"; size = 300000; seed = 4; deps = [ libcommon ];
    };

    readline = lib {
      pname = "readline"; version = "8.2";
      description = "Library for interactive line editing (demo look-alike)";
      file = "libreadline.so.8"; size = 60000; seed = 5; deps = [ libcommon ncurses ];
    };

    oniguruma = lib {
      pname = "oniguruma"; version = "6.9.9";
      description = "Regular expressions library (demo look-alike)";
      file = "libonig.so.5"; size = 20000; seed = 6; deps = [ libcommon ];
    };

    openssl = mk {
      pname = "openssl"; version = "3.0.13";
      description = "Cryptographic library that implements the SSL and TLS protocols (demo look-alike)";
      deps = [ libcommon zlib ];
      script = ''
        blob $out/lib/libcrypto.so.3 7 500000
        blob $out/lib/libssl.so.3 8 100000
        script $out/bin/openssl <<'EOF'
        echo "OpenSSL 3.0.13 30 Jan 2024 (Library: OpenSSL 3.0.13 30 Jan 2024)"
        EOF
      '';
    };

    perl = mk {
      pname = "perl"; version = "5.38.0";
      description = "The Perl 5 programming language (demo look-alike)";
      deps = [ libcommon ];
      script = ''
        for m in strict warnings Carp Exporter File/Spec; do
          blob $out/lib/perl5/5.38.0/$m.pm ''${#m} 30000
        done
        script $out/bin/perl <<'EOF'
        echo "This is perl 5, version 38, subversion 0 (v5.38.0) (demo look-alike)"
        EOF
      '';
    };

    # python3 has nixpkgs' withPackages and pkgs (python3.withPackages
    # (ps: [ ps.numpy ])), so language environments work offline. Its
    # python3 runs `--version` and `-c` with import statements only, and
    # finds modules the way Python does: in the directories of
    # PYTHONPATH, then in its standard library (lib/python3.11). An
    # environment's python3 puts its site-packages on PYTHONPATH, so it
    # imports what the plain python3 does not.
    python3 = mk {
      pname = "python3"; version = "3.11.6";
      description = "A high-level dynamically-typed programming language (demo look-alike)";
      deps = [ libcommon zlib openssl ];
      script = ''
        for i in $(seq 1 40); do
          blob $out/lib/python3.11/module$i.py $i $((i * 500))
        done
        blob $out/lib/libpython3.11.so.1.0 9 400000
        { echo "stdlib=$out/lib/python3.11"; cat <<'EOF'
        # found MODULE: whether MODULE (a.b) is a module or package on the path.
        found() {
          file=$(echo "$1" | ${bb}/busybox tr . /)
          IFS=:
          for dir in ''${PYTHONPATH:-} $stdlib; do
            if [ -n "$dir" ] && { [ -f "$dir/$file.py" ] || [ -f "$dir/$file/__init__.py" ]; }; then
              unset IFS; return 0
            fi
          done
          unset IFS; return 1
        }
        case "''${1:-}" in
          --version|-V) echo "Python 3.11.6" ;;
          -c)
            # import a, b; import c: one module name a line.
            while IFS= read -r m; do
              case $m in
                "") continue ;;
                *[!A-Za-z0-9_.]*)
                  echo "python3: the Nixery demo look-alike runs only import statements, such as: python3 -c 'import numpy, requests'" >&2
                  exit 2 ;;
              esac
              if ! found "$m"; then
                echo "Traceback (most recent call last):" >&2
                echo '  File "<string>", line 1, in <module>' >&2
                echo "ModuleNotFoundError: No module named '$m'" >&2
                exit 1
              fi
            done <<MODULES
        $(printf '%s\n' "''${2:-}" | ${bb}/busybox tr ';,' '\n\n' | ${bb}/busybox sed -e 's/^[[:space:]]*import[[:space:]]//' -e 's/^[[:space:]]*//' -e 's/[[:space:]]*$//')
        MODULES
            ;;
          *) echo "python3: this is the Nixery demo look-alike; it only knows --version and -c 'import …'" >&2; exit 2 ;;
        esac
        EOF
        } | script $out/bin/python3
        ln -s python3 $out/bin/python
      '';
    } // {
      pkgs = python3Packages;
      withPackages = f: pythonEnv (f python3Packages);
    };

    # python3.withPackages: site-packages holding links to the packages'
    # modules, and a python3 that puts it on PYTHONPATH.
    pythonEnv = packages: mk {
      pname = "python3"; version = "3.11.6-env";
      description = "A Python 3 environment with ${toString (map (p: p.pname) packages)} (demo look-alike)";
      deps = packages ++ [ python3 ];
      script = ''
        mkdir -p $out/lib/python3.11/site-packages
        for p in ${toString packages}; do
          for m in $p/lib/python3.11/site-packages/*; do
            ln -s "$m" $out/lib/python3.11/site-packages/
          done
        done
        { echo "site=$out/lib/python3.11/site-packages"; cat <<'EOF'
        export PYTHONPATH="$site''${PYTHONPATH:+:$PYTHONPATH}"
        exec ${python3}/bin/python3 "$@"
        EOF
        } | script $out/bin/python3
        ln -s python3 $out/bin/python
      '';
    };

    # Python packages: one module each, under lib/python3.11/site-packages
    # as in nixpkgs, which withPackages links into an environment.
    python3Packages = let
      py = { pname, version, description, deps ? [ ] }: mk {
        pname = "python3.11-${pname}";
        inherit version description deps;
        script = ''
          mkdir -p $out/lib/python3.11/site-packages/${pname}
          echo '__version__ = "${version}"' > $out/lib/python3.11/site-packages/${pname}/__init__.py
        '';
      };
    in {
      numpy = py {
        pname = "numpy"; version = "1.26.4";
        description = "Scientific tools for Python (demo look-alike: one module)";
        deps = [ libcommon ];
      };
      requests = py {
        pname = "requests"; version = "2.31.0";
        description = "HTTP library for Python (demo look-alike: one module)";
        deps = [ openssl ];
      };
    };

    curl = mk {
      pname = "curl"; version = "8.4.0";
      description = "A command line tool for transferring files with URL syntax (demo look-alike)";
      meta = { license = licenses.curl; homepage = "https://curl.se/"; };
      deps = [ libcommon zlib openssl ];
      script = ''
        blob $out/lib/libcurl.so.4 10 250000
        script $out/bin/curl <<'EOF'
        case "''${1:-}" in
          --version|-V) echo "curl 8.4.0 (x86_64-pc-linux-gnu) libcurl/8.4.0 OpenSSL/3.0.13 zlib/1.3" ;;
          *) echo "curl: (6) Could not resolve host: demo look-alike has no network" >&2; exit 6 ;;
        esac
        EOF
      '';
    };

    git = mk {
      pname = "git"; version = "2.42.0";
      description = "Distributed version control system (demo look-alike)";
      meta = { license = licenses.gpl2Plus; homepage = [ "https://git-scm.com/" "https://github.com/git/git" ]; };
      deps = [ libcommon zlib openssl curl perl ];
      script = ''
        for c in add commit fetch http-fetch remote-https; do
          blob $out/libexec/git-core/git-$c 1$((''${#c} * 7)) 200000
        done
        script $out/bin/git <<'EOF'
        case "''${1:-}" in
          --version|version) echo "git version 2.42.0" ;;
          *) echo "git: '$1' is not a git command in the demo look-alike" >&2; exit 1 ;;
        esac
        EOF
      '';
    };

    jq = mk {
      pname = "jq"; version = "1.7";
      description = "A lightweight and flexible command-line JSON processor (demo look-alike)";
      meta = { license = [ licenses.mit licenses.cc-by-30 ]; homepage = "https://jqlang.github.io/jq/"; };
      deps = [ libcommon oniguruma ];
      script = ''
        blob $out/lib/libjq.so.1 11 150000
        script $out/bin/jq <<'EOF'
        # Only the identity filter: copy the input.
        exec ${bb}/busybox cat
        EOF
      '';
    };

    # --- the programs of the original Nixery's "shell" meta-package -----

    hello = mk {
      pname = "hello"; version = "2.12.1";
      description = "A program that produces a familiar, friendly greeting";
      meta = { mainProgram = "hello"; license = licenses.gpl3Plus; homepage = "https://www.gnu.org/software/hello/manual/"; };
      deps = [ libcommon ];
      script = ''
        mkdir -p $out/share/hello
        echo 'Hello, world!' > $out/share/hello/greeting
        script $out/bin/hello <<EOF
        . ${libcommon}/lib/libcommon.sh
        read -r greeting < $out/share/hello/greeting
        say "\$greeting"
        EOF
      '';
    };

    bashInteractive = mk {
      pname = "bash-interactive"; version = "5.2";
      description = "The GNU Bourne Again shell look-alike (busybox sh), for interactive use";
      deps = [ libcommon readline ];
      script = ''
        script $out/bin/bash <<'EOF'
        exec ${bb}/busybox sh "$@"
        EOF
        applets $out/bin sh
      '';
    };

    coreutils = mk {
      pname = "coreutils"; version = "9.4";
      description = "The basic file, shell and text manipulation utilities (busybox applets)";
      deps = [ libcommon ];
      script = ''
        applets $out/bin basename cat chmod chown cp cut date dd df dirname du echo \
          env expr false head id ln ls md5sum mkdir mktemp mv nproc printf pwd \
          readlink realpath rm rmdir seq sha256sum sleep sort stat tail tee test \
          touch tr true uname uniq wc whoami yes
      '';
    };

    moreutils = mk {
      pname = "moreutils"; version = "0.67";
      description = "Growing collection of the unix tools that nobody thought to write long ago";
      deps = [ libcommon ];
      script = ''
        script $out/bin/sponge <<'EOF'
        # sponge [FILE]: soak up all input, then write it to FILE (or stdout).
        tmp=$(${bb}/busybox mktemp) || exit 1
        ${bb}/busybox cat > "$tmp"
        if [ $# -eq 0 ]; then ${bb}/busybox cat "$tmp"; ${bb}/busybox rm -f "$tmp"
        else ${bb}/busybox mv "$tmp" "$1"; fi
        EOF
        script $out/bin/ts <<'EOF'
        # ts [FORMAT]: prefix every input line with a timestamp.
        fmt=''${1:-%b %d %H:%M:%S}
        while IFS= read -r line; do
          printf '%s %s\n' "$(${bb}/busybox date +"$fmt")" "$line"
        done
        EOF
      '';
    };

    nano = mk {
      pname = "nano"; version = "7.2";
      description = "A small, user-friendly console text editor (busybox vi underneath)";
      deps = [ libcommon ncurses ];
      script = ''
        script $out/bin/nano <<'EOF'
        exec ${bb}/busybox vi "$@"
        EOF
      '';
    };

    cacert = mk {
      pname = "nss-cacert"; version = "3.95";
      description = "A bundle of X.509 certificates of public Certificate Authorities (one self-signed test CA)";
      script = ''
        mkdir -p $out/etc/ssl/certs
        cp ${./cacert/ca-bundle.crt} $out/etc/ssl/certs/ca-bundle.crt
        chmod 444 $out/etc/ssl/certs/ca-bundle.crt
      '';
    };

    # --- a nested set, like nixpkgs' xorg -------------------------------

    xorg = rec {
      libX11 = lib {
        pname = "libX11"; version = "1.8.7";
        description = "Core X11 protocol client library (demo look-alike)";
        file = "libX11.so.6"; size = 300000; seed = 12; deps = [ libcommon ];
      };

      xev = mk {
        pname = "xev"; version = "1.2.5";
        description = "Print contents of X events (demo look-alike)";
        deps = [ libcommon libX11 ];
        script = ''
          script $out/bin/xev <<'EOF'
          echo "xev:  unable to open display '$DISPLAY'" >&2
          exit 1
          EOF
        '';
      };
    };

    # --- test fixtures ---------------------------------------------------

    # Two attributes that differ only in case: a case-insensitive lookup
    # of "foobar" is ambiguous.
    fooBar = mk {
      pname = "foo-bar"; version = "1.0";
      description = "Test fixture: fooBar (lower camel case)";
      script = ''
        script $out/bin/foo-bar <<'EOF'
        echo fooBar
        EOF
      '';
    };

    FooBar = mk {
      pname = "Foo-Bar"; version = "2.0";
      description = "Test fixture: FooBar (upper camel case)";
      script = ''
        script $out/bin/Foo-Bar <<'EOF'
        echo FooBar
        EOF
      '';
    };

    # A package whose build always fails.
    broken = mk {
      pname = "broken"; version = "1.0";
      description = "Test fixture: its build always fails";
      script = ''
        echo "this package is broken on purpose" >&2
        exit 1
      '';
    };

    # A package that takes two minutes to build and is never built
    # already: its derivation changes with every evaluation (second
    # resolution), for testing build timeouts.
    # NIXERY_SLOW_SECONDS (in Nixery's environment) shortens it.
    slow = let seconds = let s = builtins.getEnv "NIXERY_SLOW_SECONDS"; in if s == "" then "120" else s; in mk {
      pname = "slow"; version = "1.0";
      description = "Test fixture: building takes 120 seconds, every time";
      env.evaluatedAt = toString builtins.currentTime;
      # A test may name its own builder process (it shows in the builder's
      # command line) to find it among others' slow builds.
      script = ''
        # marker: ${builtins.getEnv "NIXERY_SLOW_MARKER"}
        echo "nixery-demo-slow: sleeping for ${seconds} s" >&2
        sleep ${seconds}
      '';
    };
  };
in
self
