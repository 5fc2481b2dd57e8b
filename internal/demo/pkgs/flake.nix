# The Nixery demo package set as a flake, for NIXERY_PKGS_FLAKE
# (path:/dir or git+file:///dir, where package demo's Extract put it).
#
# It has no inputs, so it evaluates without fetching anything: every
# package is built from the static busybox in bootstrap/ (which a git
# flake must have committed: Nix copies only tracked files).
{
  description = "The Nixery demo package set (offline, built from a static busybox)";

  outputs = { self }: {
    legacyPackages = builtins.listToAttrs (map
      (system: { name = system; value = import ./default.nix { inherit system; }; })
      [ "x86_64-linux" "aarch64-linux" ]);
  };
}
