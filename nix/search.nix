# Nixery's search expression: list the packages of a package set with
# their attribute path, version and description, for the package search
# of the web pages.
#
# Package nix runs it with `nix-instantiate --eval --strict --json`,
# --arg load (load.nix) and --argstr srcType, srcArgs and system (what
# load.nix loads). Like build.nix it uses only builtins, so it works with
# nixpkgs and with any small package set, on Nix 2.8 and later.
#
# What is listed, the way `nix-env -qa` does it:
#   - every top-level attribute that is a derivation;
#   - the derivations inside nested sets that say recurseForDerivations
#     (nixpkgs' xorg, python3Packages, …), to any depth;
#   - in a small package set (at most smallSet top-level attributes), the
#     derivations one level down in every nested set too (the demo set's
#     xorg.xev), as a hand-written set rarely marks its nested sets.
# An attribute whose evaluation fails (broken, unfree or insecure packages
# in nixpkgs throw) is left out: every entry is evaluated in
# builtins.tryEval, deeply, so one bad package never fails the listing.
#
# The result is a list of [ attr version description ] triples, the
# smallest JSON for a hundred thousand packages.
{ load, srcType, srcArgs, system }:

let
  pkgs = load { inherit srcType srcArgs system; };

  smallSet = 2000;
  topNames = builtins.attrNames pkgs;
  # nixpkgs (tens of thousands of attributes) marks the sets to walk; a
  # small hand-written set usually does not.
  walkAll = builtins.length topNames <= smallSet;

  str = v: if builtins.isString v then v else "";

  # What attribute name of set (at attribute path prefix) contributes:
  # [ entry ] for a derivation, the entries of a nested set worth walking,
  # or [ ].
  visit = prefix: depth: set: name:
    let
      attr = if prefix == "" then name else "${prefix}.${name}";
      v = builtins.getAttr name set;
      # Classify shallowly first; a throwing attribute becomes "skip".
      kind = builtins.tryEval (
        if !(builtins.isAttrs v) then "skip"
        else if (v.type or null) == "derivation" then "drv"
        else if (v.recurseForDerivations or false) == true then "set"
        else if walkAll && depth == 0 then "set"
        else "skip");
      entry = [ attr (str (v.version or "")) (str (v.meta.description or "")) ];
      checked = builtins.tryEval (builtins.deepSeq entry entry);
      names = builtins.tryEval (builtins.attrNames v);
    in
    if !kind.success || kind.value == "skip" then [ ]
    else if kind.value == "drv" then (if checked.success then [ checked.value ] else [ ])
    else if depth >= 4 || !names.success then [ ]
    else builtins.concatMap (visit attr (depth + 1) v) names.value;
in
builtins.concatMap (visit "" 0 pkgs) topNames
