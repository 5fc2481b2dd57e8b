// Package internal holds Nixery's packages, one job each, in the order
// of a pull: the image name becomes a request (image), Nix realises it
// (nix), the closure is grouped (layers) and packed (archive), stored
// (storage, with metadata naming every object), described (manifest), and
// served (registry, web); cmd/nixery wires them.
//
// Imports go one way only, from the edges to the leaves. Each package has
// a tier, and a package imports only packages of lower tiers (layering
// in layering_test.go, which CI runs):
//
//	0  importing none of the project: need (what tests need of the
//	   machine); bounded (the bounded map), flight (the single flight)
//	   and every (the loop of background work), the helpers every tier
//	   uses; fault (the kinds of errors, which the HTTP faces render);
//	   artifact (an OCI 1.1 artifact: manifest, blobs, subject)
//	1  leaves, pure or self-contained: image, layers, archive, manifest,
//	   redact, access, demo, server (the hardened HTTP server), route
//	   (the route label a handler gives a request, which metrics read),
//	   attest (an image's SBOMs and provenance, from what Nix reported),
//	   certs (the server's TLS certificate from files, read again when
//	   they change, and the client CA),
//	   sign (cosign signatures and attestations of an image),
//	   treemap (the squarified layout of the image page's picture)
//	2  the machine's resources: nix (the only code that runs Nix),
//	   storage (the only code that knows a backend)
//	3  what lives on them: source (the package sources, which run git
//	   and Nix), metadata (every named object in storage)
//	4  the settings, parsed into typed fields (config, which names the
//	   chosen source and runs nothing); the build, the garbage
//	   collection over storage, the source's health, the package search,
//	   the server's readiness and the images' artifacts (SBOMs,
//	   provenance, signatures): builder, gc, sourcehealth, search,
//	   readiness, supplychain
//	5  the registry API: registry; the client of `nixery build` that
//	   follows a build's events: buildclient
//	6  the human side: web (which asks search through a small
//	   interface);
//	   what is observed of every request, and /metrics: metrics
//	7  wiring: cmd/nixery
//
// A package's test helpers (builder/buildertest, certs/certstest,
// demo/demotest, storage/storagetest) share its tier and may import it.
package internal
