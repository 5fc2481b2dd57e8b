# Nixery's build expression: load a package set, resolve the requested
# attribute paths and return the derivations to realise.
#
# Package nix runs it with nix-build, --arg load (load.nix) and --argstr
# for every other argument. It uses only builtins (no nixpkgs lib), so
# that it works with nixpkgs and with any small package set such as the
# demo set, on Nix 2.8 and later.
#
#   srcType, srcArgs, system   what load.nix loads (see there)
#   packages  JSON list of attribute paths, e.g. ["hello","xorg.xev"],
#             or language environments <attr>.withpackages.<p1>.<p2>…
#             (package image's grammar), e.g. "python3.withpackages.numpy"
#
# If any name does not resolve, evaluation fails with the single line
#   nixery-unknown-packages: [{"name":…,"candidates":[…]?,"reason":…?}, …]
# listing every unknown name at once, which package nix recognises.
# Otherwise it traces, before anything is built, the single line
#   trace: nixery-packages: [{"name":…,"outputs":[…],"programs":[…]}, …]
# with what every requested name resolved to (output paths, main programs).
# Before it, for each requested name, the line
#   trace: nixery-meta: {"name":…,"pname":…,"version":…,"license":[{"spdxId":…,"shortName":…,"fullName":…}],"homepage":…,"drvPath":…}
# says what the package's meta and derivation say of it, for its SBOM;
# an attribute that is missing or throws is left empty.
#
#   batch     "1" to resolve the names of many builds in one evaluation
#             (package nix runs it with nix-instantiate, which writes the
#             derivations and nothing else): a name that does not resolve,
#             or whose evaluation throws, is left out instead of failing
#             the evaluation, and every name that resolves is traced on a
#             line of its own,
#               trace: nixery-resolved: {"name":…,"outputs":[…],"programs":[…],"realise":"/nix/store/…drv!out"}
#             where realise is what `nix-store --realise` builds its
#             outputs from, and its nixery-meta line. The result is the
#             list of their derivations.
{ load, srcType, srcArgs, packages, system, batch ? "" }:

let
  pkgs = load { inherit srcType srcArgs system; };

  upper = [ "A" "B" "C" "D" "E" "F" "G" "H" "I" "J" "K" "L" "M" "N" "O" "P" "Q" "R" "S" "T" "U" "V" "W" "X" "Y" "Z" ];
  lower = [ "a" "b" "c" "d" "e" "f" "g" "h" "i" "j" "k" "l" "m" "n" "o" "p" "q" "r" "s" "t" "u" "v" "w" "x" "y" "z" ];
  toLower = builtins.replaceStrings upper lower;

  # "xorg.xev" -> [ "xorg" "xev" ]
  splitPath = name: builtins.filter builtins.isString (builtins.split "\\." name);

  # One step of resolution: the exact attribute wins, else the only
  # case-insensitive match. Returns { value; path; } or { error; }.
  step = acc: part:
    if acc ? error then acc
    else if !(builtins.isAttrs acc.value) then
      { error = { reason = "${builtins.concatStringsSep "." acc.path} is not a package set"; }; }
    else if builtins.hasAttr part acc.value then
      { value = acc.value.${part}; path = acc.path ++ [ part ]; }
    else
      let
        want = toLower part;
        matches = builtins.filter (n: toLower n == want) (builtins.attrNames acc.value);
        full = n: builtins.concatStringsSep "." (acc.path ++ [ n ]);
      in
      if builtins.length matches == 1 then
        { value = acc.value.${builtins.head matches}; path = acc.path ++ matches; }
      else if matches == [ ] then { error = { }; }
      else { error = { candidates = map full matches; }; };

  start = { value = pkgs; path = [ ]; };
  dotted = builtins.concatStringsSep ".";

  # A plain attribute path: { drv; } or { unknown = [ entry ]; }.
  resolvePath = name: parts:
    let r = builtins.foldl' step start parts;
    in
    if r ? error then { unknown = [ ({ inherit name; } // r.error) ]; }
    else if (r.value.type or null) != "derivation" then
      { unknown = [ { inherit name; reason = "not a package"; } ]; }
    else { drv = r.value; };

  # A language environment <attr>.withpackages.<p1>.<p2>…: <attr>'s
  # withPackages (found ignoring case, like every attribute) called with
  # the packages p1, p2, … of <attr>.pkgs (nixpkgs' python3.pkgs), or of
  # the package set if <attr> has no pkgs. Every unknown package is
  # reported by its own name.
  resolveEnv = name: attrParts: names:
    let
      base = builtins.foldl' step start attrParts;
      attr = dotted base.path;
      fn = step base "withPackages";
      from =
        if builtins.isAttrs (base.value.pkgs or null)
        then { value = base.value.pkgs; path = base.path ++ [ "pkgs" ]; }
        else start;
      where = if from.path == [ ] then "the package set" else dotted from.path;
      member = n:
        let r = step from n;
        in
        if r ? error then { unknown = { name = n; reason = "not in ${where}"; } // r.error; }
        else if (r.value.type or null) != "derivation" then
          { unknown = { name = n; reason = "not a package of ${where}"; }; }
        else { drv = r.value; };
      members = map member names;
      missing = map (m: m.unknown) (builtins.filter (m: m ? unknown) members);
      env = fn.value (_: map (m: m.drv) members);
    in
    if base ? error then { unknown = [ ({ name = dotted attrParts; } // base.error) ]; }
    else if fn ? error || !(builtins.isFunction fn.value || fn.value ? __functor) then
      { unknown = [ { inherit name; reason = "${attr} has no withPackages"; } ]; }
    else if missing != [ ] then { unknown = missing; }
    else if (env.type or null) != "derivation" then
      { unknown = [ { inherit name; reason = "${attr}.withPackages returned no package"; } ]; }
    else { drv = env; };

  # The position of x in list, or -1.
  indexOf = x: list:
    let go = i: if i >= builtins.length list then -1 else if builtins.elemAt list i == x then i else go (i + 1);
    in go 0;
  slice = list: from: n: builtins.genList (k: builtins.elemAt list (from + k)) n;

  resolve = name:
    let
      parts = splitPath name;
      n = builtins.length parts;
      i = indexOf "withpackages" parts;
    in
    if i > 0 && i < n - 1 then resolveEnv name (slice parts 0 i) (slice parts (i + 1) (n - i - 1))
    else resolvePath name parts;

  names = builtins.fromJSON packages;
  resolved = map resolve names;
  unknown = builtins.concatMap (r: r.unknown) (builtins.filter (r: r ? unknown) resolved);

  # What `nix-env -i` would install: meta.outputsToInstall, or the
  # default output.
  outputsOf = drv:
    map (o: drv.${o}) (drv.meta.outputsToInstall or [ (drv.outputName or "out") ]);

  # A package's meta.mainProgram where nixpkgs' lib.getExe finds it:
  # bin/<name> of the "bin" output, else of "out". nix-build prints only
  # output paths, so these travel as a trace on stderr: no second
  # evaluation, nothing more to build.
  mainProgram = drv:
    let p = builtins.tryEval (drv.meta.mainProgram or null);
    in if p.success && builtins.isString p.value && p.value != ""
    then [ "${(drv.bin or drv.out or drv).outPath}/bin/${p.value}" ]
    else [ ];
  # What a name resolved to: its output paths and main programs. Nixery
  # keeps it (package catalog), so that an image of packages resolved
  # before needs no evaluation at all.
  describe = name: drv: {
    inherit name;
    outputs = map (o: o.outPath) (outputsOf drv);
    programs = mainProgram drv;
  };
  # What a package's meta and derivation say of it, for its SBOM. Each
  # attribute is evaluated on its own (tryEval: a missing or throwing
  # one is left empty, the others stay). meta.license is one licence or
  # a list, each nixpkgs' attribute set or, in old package sets, a
  # string; meta.homepage a string or a list, of which the first counts.
  try = v: def: let r = builtins.tryEval (builtins.deepSeq v v); in if r.success then r.value else def;
  str = v: if builtins.isString v then v else "";
  licenseOf = l:
    if builtins.isString l then { spdxId = l; shortName = l; fullName = ""; }
    else if builtins.isAttrs l then { spdxId = str (l.spdxId or null); shortName = str (l.shortName or null); fullName = str (l.fullName or null); }
    else null;
  metaOf = name: drv:
    let parsed = builtins.parseDrvName (try (str (drv.name or null)) "");
    in {
      inherit name;
      pname = try (str (drv.pname or parsed.name)) "";
      version = try (str (drv.version or parsed.version)) "";
      license = try (
        let l = drv.meta.license or [ ];
        in builtins.filter (x: x != null) (map licenseOf (if builtins.isList l then l else [ l ]))) [ ];
      homepage = try (
        let h = drv.meta.homepage or null;
        in str (if builtins.isList h then (if h == [ ] then null else builtins.head h) else h)) "";
      drvPath = try (str (drv.drvPath or null)) "";
    };
  metaLine = name: drv: "nixery-meta: ${builtins.toJSON (metaOf name drv)}";
  # traceAll traces lines in order, then returns e.
  traceAll = lines: e: builtins.seq (builtins.foldl' (acc: l: builtins.seq (builtins.trace l null) acc) null lines) e;

  described = builtins.genList (i:
    describe (builtins.elemAt names i) (builtins.elemAt resolved i).drv) (builtins.length names);

  # Batch mode: every name on its own, failures left out (tryEval
  # catches what broken, unfree or insecure packages throw).
  attempt = name:
    let
      try = builtins.tryEval (
        let r = resolve name; in
        if !(r ? drv) then null
        else
          let d = describe name r.drv // {
            realise = "${r.drv.drvPath}!${builtins.concatStringsSep "," (r.drv.meta.outputsToInstall or [ (r.drv.outputName or "out") ])}";
          };
          in builtins.deepSeq d { entry = d; inherit (r) drv; });
    in
    if try.success && try.value != null then [ try.value ] else [ ];
  attempts = builtins.concatMap attempt names;
  traced = traceAll (builtins.concatMap (a: [ "nixery-resolved: ${builtins.toJSON a.entry}" (metaLine a.entry.name a.drv) ]) attempts)
    (map (a: a.drv) attempts);
in
if batch == "1" then traced
else if unknown != [ ] then throw "nixery-unknown-packages: ${builtins.toJSON unknown}"
else traceAll (builtins.genList (i: metaLine (builtins.elemAt names i) (builtins.elemAt resolved i).drv) (builtins.length names))
  (builtins.trace "nixery-packages: ${builtins.toJSON described}"
    (builtins.concatMap (r: outputsOf r.drv) resolved))
