package nix

import "testing"

// One UnknownRevisionError says what the source found (a tag that names
// nothing) or what Nix found (a commit the repository lacks), with the
// source's credentials out of the message.
func TestUnknownRevisionMessage(t *testing.T) {
	for _, tt := range []struct {
		err  UnknownRevisionError
		want string
	}{
		{UnknownRevisionError{Source: "git https://u:secret@example.invalid/pkgs", Tag: "v9"}, `git https://u:xxxxx@example.invalid/pkgs has no branch, tag or commit named "v9"`},
		{UnknownRevisionError{Source: "local path /pkgs", Tag: "v1", Reason: "a local package set has only the tag latest"}, `local path /pkgs: the tag "v1" names no package set: a local package set has only the tag latest`},
		{UnknownRevisionError{Rev: "0123456789abcdef0123456789abcdef01234567"}, "the package set's repository has no commit 0123456789abcdef0123456789abcdef01234567"},
	} {
		if got := tt.err.Error(); got != tt.want {
			t.Errorf("%+v: %q, want %q", tt.err, got, tt.want)
		}
	}
}
