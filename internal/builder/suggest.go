package builder

import (
	"errors"

	"github.com/nixery/nixery/internal/image"
	"github.com/nixery/nixery/internal/nix"
)

// maxSuggested bounds the unknown names of one build that get
// suggestions: each costs a look-up over the package list (milliseconds),
// and a message names them all.
const maxSuggested = 8

// suggest returns err with close names (Suggest) for its unknown
// packages, if it is the error of unknown packages and Suggest finds
// any; otherwise err itself. A build that failed asks once: the
// failure it remembers (FailureTTL) has them, or not.
func (b *Builder) suggest(err error) error {
	var u *nix.UnknownPackagesError
	if b.Suggest == nil || !errors.As(err, &u) || err != error(u) || u.Suggestions != nil {
		return err // only Nix's own error, unwrapped, as package nix returns it
	}
	found := map[string][]string{}
	for _, name := range u.Packages[:min(len(u.Packages), maxSuggested)] {
		if s := b.Suggest(name); len(s) > 0 {
			found[name] = s
		}
	}
	if len(found) == 0 {
		return err
	}
	return u.WithSuggestions(found)
}

// errorEvent is the final event of a build that failed with err: its
// message, and the suggestions for unknown packages with the images
// they select.
func errorEvent(req *image.Request, err error) Event {
	e := Event{Kind: "error", Message: err.Error()}
	var u *nix.UnknownPackagesError
	if !errors.As(err, &u) {
		return e
	}
	for _, p := range u.Packages {
		for _, name := range u.Suggestions[p] {
			ref, _ := req.Replacing(p, name)
			e.Suggestions = append(e.Suggestions, Suggestion{Package: p, Name: name, Image: ref})
		}
	}
	return e
}
