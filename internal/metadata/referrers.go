package metadata

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"slices"
	"strings"

	"github.com/opencontainers/go-digest"
	v1 "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/nixery/nixery/internal/storage"
)

// The artifacts that refer to an image manifest (its SBOMs, provenance
// and signatures), as the referrers API and the referrers tag schema list
// them:
//
//	referrers/<hex>/<signer>   the artifacts of the manifest sha256:<hex> (the subject)
//
// signer names who signed them: "unsigned", or the signing key's
// fingerprint, so that an instance given a key (or a new one) makes the
// signed set of an image it had made unsigned, and serves it. Each object
// is created once, by whichever replica makes those artifacts first, and
// never rewritten: every replica serves the same set. The manifests it
// names are blobs; the collector keeps them, and the sets, exactly as
// long as it keeps the subject.

const referrersPrefix = "referrers/"

// Referrers are the artifacts of one subject manifest.
type Referrers struct {
	// Manifests are the descriptors the referrers API lists (each with
	// its artifactType and annotations), sorted by digest.
	Manifests []v1.Descriptor `json:"manifests"`
	// Tags are the manifests that tags of the referrers tag schema name
	// besides the index ("sha256-<hex>.sig", "sha256-<hex>.att": cosign
	// v2's signatures and attestations), by tag.
	Tags map[string]digest.Digest `json:"tags,omitempty"`
}

// Digests are every manifest the set names: what the collector keeps
// with the subject.
func (r Referrers) Digests() []digest.Digest {
	var ds []digest.Digest
	for _, m := range r.Manifests {
		ds = append(ds, m.Digest)
	}
	for _, d := range r.Tags {
		ds = append(ds, d)
	}
	slices.Sort(ds)
	return slices.Compact(ds)
}

// Unsigned is the signer of artifacts that nobody signed.
const Unsigned = "unsigned"

var validSigner = regexp.MustCompile(`^[a-z0-9][a-z0-9-]{0,63}$`)

func referrersName(subject digest.Digest, signer string) (string, error) {
	if subject.Algorithm() != digest.SHA256 || subject.Validate() != nil {
		return "", fmt.Errorf("metadata: invalid subject %q", subject)
	}
	if !validSigner.MatchString(signer) {
		return "", fmt.Errorf("metadata: invalid signer %q", signer)
	}
	return referrersPrefix + subject.Encoded() + "/" + signer, nil
}

// ReferrersSubject is the subject of the artifact set of key (as List
// reports it for KindReferrers), "" if key names none.
func ReferrersSubject(key string) digest.Digest {
	hex, _, _ := strings.Cut(key, "/")
	d := digest.NewDigestFromEncoded(digest.SHA256, hex)
	if d.Validate() != nil {
		return ""
	}
	return d
}

// ReferrersOf reads the artifact set of key (as List reports it for
// KindReferrers); an error wrapping storage.ErrNotFound if it is gone or
// unreadable.
func (c *Store) ReferrersOf(ctx context.Context, key string) (Referrers, error) {
	subject := ReferrersSubject(key)
	_, signer, _ := strings.Cut(key, "/")
	if subject == "" {
		return Referrers{}, fmt.Errorf("metadata: invalid referrers key %q", key)
	}
	return c.Referrers(ctx, subject, signer)
}

// Referrers reads the artifacts of subject that signer made; an error
// wrapping storage.ErrNotFound if none were made (an unreadable set
// counts as none).
func (c *Store) Referrers(ctx context.Context, subject digest.Digest, signer string) (Referrers, error) {
	name, err := referrersName(subject, signer)
	if err != nil {
		return Referrers{}, err
	}
	raw, err := c.Backend.GetObject(ctx, name)
	if errors.Is(err, storage.ErrTooLarge) {
		return Referrers{}, fmt.Errorf("referrers of %s are unreadable: %w (%w)", subject, storage.ErrNotFound, err)
	}
	if err != nil {
		return Referrers{}, err
	}
	var r Referrers
	if json.Unmarshal(raw, &r) != nil || !r.valid() {
		return Referrers{}, fmt.Errorf("referrers of %s are unreadable: %w", subject, storage.ErrNotFound)
	}
	return r, nil
}

func (r Referrers) valid() bool {
	for _, m := range r.Manifests {
		if m.Digest.Validate() != nil {
			return false
		}
	}
	for tag, d := range r.Tags {
		if d.Validate() != nil || !strings.HasPrefix(tag, "sha256-") {
			return false
		}
	}
	return true
}

// CreateReferrers stores r as the artifacts of subject that signer made,
// unless another replica stored them first, and returns the set that is
// stored: r, or the other's. Its manifests and their blobs must be
// stored before.
func (c *Store) CreateReferrers(ctx context.Context, subject digest.Digest, signer string, r Referrers) (Referrers, error) {
	name, err := referrersName(subject, signer)
	if err != nil {
		return Referrers{}, err
	}
	slices.SortFunc(r.Manifests, func(a, b v1.Descriptor) int { return strings.Compare(string(a.Digest), string(b.Digest)) })
	data, err := json.Marshal(r)
	if err != nil {
		return Referrers{}, err
	}
	err = c.Backend.CreateObject(ctx, name, data)
	if errors.Is(err, storage.ErrExists) {
		// Another replica (or an earlier attempt of this call) made
		// them first: theirs are the ones every replica serves.
		return c.Referrers(ctx, subject, signer)
	}
	if err != nil {
		return Referrers{}, fmt.Errorf("referrers of %s: %w", subject, err)
	}
	return r, nil
}
