# Nixery's package-set loader: package nix passes this function to
# build.nix and search.nix as their argument `load`, so both load a
# package set the same way. Only builtins, as in the files that use it.
#
#   srcType   "path" | "nixpkgs" | "git" | "flake"
#   srcArgs   an absolute path; a nixpkgs channel, branch or commit;
#             JSON {"url":…} with an optional "ref"/"rev"/"allRefs" for
#             fetchGit; or a locked flake reference (package config
#             locks it with `nix flake metadata`)
#   system    "x86_64-linux" | "aarch64-linux"
#
# A flake's packages are its legacyPackages.<system> (nixpkgs' own
# flake has only those), then its packages.<system>: a name in both is
# the legacyPackages one. builtins.getFlake needs the experimental
# feature "flakes", which package nix enables for this source only.
{ srcType, srcArgs, system }:

let
  fromFlake =
    let
      flake = builtins.getFlake srcArgs;
      legacy = flake.legacyPackages.${system} or null;
      packages = flake.packages.${system} or null;
    in
    if legacy == null && packages == null
    then throw "nixery: the flake ${srcArgs} has neither legacyPackages.${system} nor packages.${system}"
    else if legacy == null then packages
    else if packages == null then legacy
    else packages // legacy;

  src =
    if srcType == "path" then /. + srcArgs
    else if srcType == "nixpkgs" then
      builtins.fetchTarball "https://github.com/NixOS/nixpkgs/archive/${srcArgs}.tar.gz"
    else if srcType == "git" then builtins.fetchGit (builtins.fromJSON srcArgs)
    else throw "nixery: unknown source type '${srcType}'";

  imported = import src;
in
if srcType == "flake" then fromFlake
else if builtins.isFunction imported
then imported { inherit system; config = { }; overlays = [ ]; }
else imported
