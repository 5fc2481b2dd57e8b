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
#
#   batch     "1" to resolve the names of many builds in one evaluation
#             (package nix runs it with nix-instantiate, which writes the
#             derivations and nothing else): a name that does not resolve,
#             or whose evaluation throws, is left out instead of failing
#             the evaluation, and every name that resolves is traced on a
#             line of its own,
#               trace: nixery-resolved: {"name":…,"outputs":[…],"programs":[…],"realise":"/nix/store/…drv!out"}
#             where realise is what `nix-store --realise` builds its
#             outputs from. The result is the list of their derivations.
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
  traced = builtins.foldl' (acc: a: builtins.trace "nixery-resolved: ${builtins.toJSON a.entry}" acc)
    (map (a: a.drv) attempts) attempts;
in
if batch == "1" then traced
else if unknown != [ ] then throw "nixery-unknown-packages: ${builtins.toJSON unknown}"
else builtins.trace "nixery-packages: ${builtins.toJSON described}"
  (builtins.concatMap (r: outputsOf r.drv) resolved)
