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
# An entry that JSON cannot carry is left out too, and traced as
#   trace: nixery-unprintable: <attr>
# for package nix to log: Nix 2.19 and later refuse to print a string
# that is not valid UTF-8 as JSON (a description in Latin-1, say), and
# that error fails the whole evaluation. builtins have no test of UTF-8
# and tryEval does not catch that error, so the entry's strings are
# matched against a regular expression of UTF-8 (RFC 3629) over bytes,
# on every Nix (2.8 would print the bytes). Nix's regular expressions
# recurse per character (tens of thousands of characters overflow the
# stack), so a description is cut to maxDescription bytes, at a
# character's boundary, and an attribute path and version of more than
# maxName bytes count as unprintable.
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

  # Single bytes, cut from the UTF-8 that fromJSON makes of \u escapes
  # (a Nix file had better not hold bytes that are not UTF-8 itself).
  byte = escapes: i: builtins.substring i 1 (builtins.fromJSON "\"${escapes}\"");
  x01 = byte "\\u0001" 0; x7f = byte "\\u007f" 0;
  x80 = byte "\\u0080" 1; x8f = byte "\\u008f" 1; x90 = byte "\\u0090" 1;
  x9f = byte "\\u009f" 1; xa0 = byte "\\u00a0" 1; xbf = byte "\\u00bf" 1;
  xc2 = byte "\\u0080" 0; xdf = byte "\\u07ff" 0; xe0 = byte "\\u0800" 0;
  xe1 = byte "\\u1000" 0; xec = byte "\\uc000" 0; xed = byte "\\ud000" 0;
  xee = byte "\\ue000" 0; xef = byte "\\uffff" 0; xf0 = byte "\\ud800\\udc00" 0;
  xf1 = byte "\\ud8c0\\udc00" 0; xf3 = byte "\\udac0\\udc00" 0; xf4 = byte "\\udbc0\\udc00" 0;
  tailByte = "[${x80}-${xbf}]";
  # RFC 3629, section 4 (no NUL: Nix strings have none).
  utf8 = "(" + builtins.concatStringsSep "|" [
    "[${x01}-${x7f}]"
    "[${xc2}-${xdf}]${tailByte}"
    "${xe0}[${xa0}-${xbf}]${tailByte}"
    "[${xe1}-${xec}]${tailByte}${tailByte}"
    "${xed}[${x80}-${x9f}]${tailByte}"
    "[${xee}-${xef}]${tailByte}${tailByte}"
    "${xf0}[${x90}-${xbf}]${tailByte}${tailByte}"
    "[${xf1}-${xf3}]${tailByte}${tailByte}${tailByte}"
    "${xf4}[${x80}-${x8f}]${tailByte}${tailByte}"
  ] + ")*";
  isUTF8 = s: builtins.match utf8 s != null;

  maxName = 1024;
  maxDescription = 4096;
  # s, or its first maxDescription bytes cut back to a character's
  # boundary (a character has at most 4 bytes), or null if that is not
  # UTF-8.
  printable = s:
    let
      cuts = if builtins.stringLength s <= maxDescription then [ s ]
        else builtins.genList (i: builtins.substring 0 (maxDescription - i) s) 4;
      good = builtins.filter isUTF8 cuts;
    in if good == [ ] then null else builtins.head good;

  # The entry of a package, or null if JSON cannot carry it.
  entryOf = attr: version: description:
    let
      name = "${attr}\n${version}";
      desc = printable description;
    in
    if builtins.stringLength name > maxName || !(isUTF8 name) || desc == null then null
    else [ attr version desc ];

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
      entry = entryOf attr (str (v.version or "")) (str (v.meta.description or ""));
      checked = builtins.tryEval (builtins.deepSeq entry entry);
      names = builtins.tryEval (builtins.attrNames v);
    in
    if !kind.success || kind.value == "skip" then [ ]
    else if kind.value == "drv" then
      (if !checked.success then [ ]
      else if checked.value == null then builtins.trace "nixery-unprintable: ${attr}" [ ]
      else [ checked.value ])
    else if depth >= 4 || !names.success then [ ]
    else builtins.concatMap (visit attr (depth + 1) v) names.value;
in
builtins.concatMap (visit "" 0 pkgs) topNames
