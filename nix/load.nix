# Nixery's package-set loader: package nix passes this function to
# build.nix and search.nix as their argument `load`, so both load a
# package set the same way. Only builtins, as in the files that use it.
#
#   srcType   "path" | "nixpkgs" | "git"
#   srcArgs   an absolute path; a nixpkgs channel, branch or commit; or
#             JSON {"url":…} with an optional "ref"/"rev"/"allRefs" for fetchGit
#   system    "x86_64-linux" | "aarch64-linux"
{ srcType, srcArgs, system }:

let
  src =
    if srcType == "path" then /. + srcArgs
    else if srcType == "nixpkgs" then
      builtins.fetchTarball "https://github.com/NixOS/nixpkgs/archive/${srcArgs}.tar.gz"
    else if srcType == "git" then builtins.fetchGit (builtins.fromJSON srcArgs)
    else throw "nixery: unknown source type '${srcType}'";

  imported = import src;
in
if builtins.isFunction imported
then imported { inherit system; config = { }; overlays = [ ]; }
else imported
