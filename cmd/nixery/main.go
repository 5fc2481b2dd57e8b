// Command nixery is a container registry that builds images on demand
// with Nix: the image name is the recipe.
//
//	nixery serve [flags]    run the registry (the default)
//	nixery build <image>    have a running Nixery build an image, with progress
//	nixery version          print the version
//
// Every flag has an environment variable of the same meaning, compatible
// with the original Nixery; see `nixery --help`.
package main

import (
	"fmt"
	"io"
	"os"

	"github.com/nixery/nixery/internal/config"
	"github.com/nixery/nixery/internal/nix"
)

// version is set at link time (-ldflags "-X main.version=…").
var version = "dev"

func main() {
	code := run(os.Args[1:], os.Stdout, os.Stderr)
	nix.RemoveRoots() // what a killed process leaves, the next one removes
	os.Exit(code)
}

func usage(w io.Writer) {
	fmt.Fprintf(w, `Nixery %s: a container registry that builds images on demand with Nix.

Usage:
  nixery [serve] [flags]   run the registry
  nixery build [--server URL | --local [flags of serve]] <image>[:tag]
                           have a running Nixery (or this process) build an image, show its progress
  nixery gc [--max-age 720h] [--dry-run] [flags of serve]
                           delete what no image used within the age refers to; safe on live storage
  nixery version           print the version
  nixery help              show this help

Flags of serve (each may also be given by its environment variable):
`, version)
	config.Usage(w)
	fmt.Fprintln(w, `
Example:
  nixery serve --host 127.0.0.1 --port 8080
  skopeo copy --src-tls-verify=false docker://127.0.0.1:8080/shell/hello oci:/tmp/img:latest

A private instance, HTTPS only:
  nixery serve --port 443 --tls-cert /etc/nixery/tls.crt --tls-key /etc/nixery/tls.key --htpasswd /etc/nixery/htpasswd`)
}

func run(args []string, stdout, stderr io.Writer) int {
	cmd := "serve"
	if len(args) > 0 && len(args[0]) > 0 && args[0][0] != '-' {
		cmd, args = args[0], args[1:]
	}
	switch cmd {
	case "serve":
		for _, a := range args {
			if a == "-h" || a == "-help" || a == "--help" {
				usage(stdout)
				return 0
			}
		}
		if err := serve(args); err != nil {
			fmt.Fprintf(stderr, "nixery: %v\n", err)
			return 1
		}
		return 0
	case "build":
		return buildCmd(args, stdout, stderr)
	case "gc":
		return gcCmd(args, stdout, stderr)
	case "version":
		fmt.Fprintln(stdout, version)
		return 0
	case "help":
		usage(stdout)
		return 0
	}
	fmt.Fprintf(stderr, "nixery: unknown command %q\n\n", cmd)
	usage(stderr)
	return 2
}
