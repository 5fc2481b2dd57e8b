package pkgset

import (
	"strings"

	"github.com/nixery/nixery/internal/image"
)

// Workload is the sequence of typical images pulled one after the other,
// by name as in a pull URL: single packages, the "shell" meta-package
// with tools, and language stacks that share big paths.
var Workload = []string{
	"shell",
	"shell/git",
	"shell/python3",
	"python3Packages.numpy",
	"curl",
	"jq",
	"git/curl",
	"nodejs",
	"go",
	"postgresql",
	"redis",
	"nginx",
	"htop",
	"vim",
	"shell/htop/vim",
	"python3Packages.requests/python3Packages.flask",
	"python3Packages.pandas/python3Packages.scipy/python3Packages.matplotlib",
	"emacs",
	"ffmpeg",
	"shell/nodejs/git",
	"shell/go/git",
	"imagemagick",
	"postgresql/redis",
	"shell/emacs/git",
	"shell/python3/perl",
	"curl/jq/openssh",
}

// Packages returns the attributes of an image name as Nixery builds them:
// one per path component, with the "shell" meta-package expanded to
// image.ShellPackages. (Only the grammar the workload uses: no tags,
// architectures or other meta-packages.)
func Packages(name string) []string {
	var out []string
	for _, c := range strings.Split(name, "/") {
		if c == "shell" {
			out = append(out, image.ShellPackages...)
		} else {
			out = append(out, c)
		}
	}
	return out
}
