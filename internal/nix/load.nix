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
#
# A git source resolved to a branch or tag comes as {"url","ref","rev"}.
# Nix up to 2.19 fetches the ref and then finds the commit in it; Nix
# 2.20 and later fetch the commit by itself, which a server may refuse
# unless it is the tip of a branch or tag (protocol v0 without
# uploadpack.allow*SHA1InWant): a branch that has moved on since it was
# resolved, or the commit of an annotated tag. So fetchGit gets the ref
# alone first, which every server serves; when the commit is its tip
# (the usual case) that is the package set, and otherwise the commit is
# in Nix's clone by now, as an ancestor, and fetchGit with it asks
# nothing more of the server. The ref's fetch is Nix's usual one: not
# repeated within tarball-ttl, and kept, with a warning, when the server
# cannot be reached.
{ srcType, srcArgs, system }:

let
  fetchGit = args:
    if args ? ref && args ? rev && !(args.allRefs or false) then
      let tip = builtins.fetchGit (removeAttrs args [ "rev" ]);
      in if tip.rev == args.rev then tip else builtins.fetchGit args
    else builtins.fetchGit args;

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
    else if srcType == "git" then fetchGit (builtins.fromJSON srcArgs)
    else throw "nixery: unknown source type '${srcType}'";

  imported = import src;
in
if srcType == "flake" then fromFlake
else if builtins.isFunction imported
then imported { inherit system; config = { }; overlays = [ ]; }
else imported
