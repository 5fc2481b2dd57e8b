package e2e

import (
	"encoding/json"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/crypto/bcrypt"

	"github.com/nixery/nixery/internal/attest"
	"github.com/nixery/nixery/internal/attest/attesttest"
	"github.com/nixery/nixery/internal/sign"
	"github.com/nixery/nixery/internal/sign/signtest"
	"github.com/nixery/nixery/internal/storage/storagetest"
)

// TestSupplyChain: a Nixery with a signing key, public and private, as
// the real clients see it. cosign v3 and v2 verify every image and each
// of its attestations (SLSA provenance, SPDX, CycloneDX) with the key that
// `cosign generate-key-pair` wrote, offline, and refuse another key;
// cosign tree, oras and regctl find the SBOMs, and the ones pulled pass
// their formats' checks; /cosign.pub is that key. A second replica on the
// same storage serves what the first made; on a private instance the
// clients need a user for all of it.
func TestSupplyChain(t *testing.T) {
	needServer(t)
	c := signtest.New(t, storagetest.BinDir())
	key, pub := c.KeyPair(t, "nixery", "a password")
	_, otherPub := c.KeyPair(t, "other", "")
	passwordFile := filepath.Join(c.Dir, "password")
	if err := os.WriteFile(passwordFile, []byte("a password\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	hash, err := bcrypt.GenerateFromPassword([]byte("correct horse"), bcrypt.MinCost)
	if err != nil {
		t.Fatal(err)
	}
	htpasswd := filepath.Join(c.Dir, "htpasswd")
	if err := os.WriteFile(htpasswd, []byte("alice:"+string(hash)+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	signing := []string{"NIXERY_SIGNING_KEY=" + key, "NIXERY_SIGNING_PASSWORD_FILE=" + passwordFile}

	for _, private := range []bool{false, true} {
		name := map[bool]string{false: "public", true: "private"}[private]
		t.Run(name, func(t *testing.T) {
			tmp := t.TempDir()
			env := signing
			if private {
				env = append(append([]string{}, signing...), "NIXERY_HTPASSWD="+htpasswd, "NIXERY_METRICS_PUBLIC=true")
			}
			s, err := start(tmp, filepath.Join(tmp, "storage"), env...)
			if err != nil {
				t.Fatal(err)
			}
			defer s.stop()
			image := s.addr + "/shell/hello"
			if private {
				// Without a user, nothing: not the image, not its key.
				if _, _, err := c.Run(t, nil, "cosign", append(append([]string{"verify"}, c.Offline(t, "cosign", pub)...), image)...); err == nil {
					t.Error("cosign verify passed on a private instance without a user")
				}
				if resp, err := http.Get(s.url("/cosign.pub")); err != nil || resp.StatusCode != http.StatusUnauthorized {
					t.Errorf("/cosign.pub without a user: %v %v", resp.StatusCode, err)
				}
				c.Login(t, s.addr, "alice", "correct horse")
				defer c.Login(t, "nowhere.invalid", "", "")
			}
			// The first pull builds the image and makes its artifacts.
			subject := strings.TrimSpace(c.Must(t, nil, "crane", "digest", "--insecure", image))
			checkSigned(t, c, image, subject, pub, otherPub)

			// /cosign.pub is the key, byte for byte.
			req, _ := http.NewRequest("GET", s.url("/cosign.pub"), nil)
			req.SetBasicAuth("alice", "correct horse")
			if resp, err := http.DefaultClient.Do(req); err != nil {
				t.Error(err)
			} else {
				got, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				if want, _ := os.ReadFile(pub); string(got) != string(want) {
					t.Errorf("/cosign.pub is %q, want cosign.pub %q", got, want)
				}
			}

			// A replica on the same storage serves the artifacts the
			// first made (nothing is built: the image is in the cache).
			replica, err := start(tmp, filepath.Join(tmp, "storage"), env...)
			if err != nil {
				t.Fatal(err)
			}
			defer replica.stop()
			other := replica.addr + "/shell/hello"
			if private {
				c.Login(t, replica.addr, "alice", "correct horse")
			}
			claims, err := c.Verify(t, "cosign", pub, other)
			if err != nil || len(claims) == 0 || string(claims[0].Digest) != subject {
				t.Errorf("cosign verify on the replica: %v %v", claims, err)
			}
			if n := replica.metric(t, "nixery_nix_builds_total"); n != 0 {
				t.Errorf("the replica built %d times", n)
			}
		})
	}
}

// checkSigned runs every client against image, whose manifest is
// subject, signed by the key pub.
func checkSigned(t *testing.T, c *signtest.Clients, image, subject, pub, otherPub string) {
	t.Helper()
	for _, cosign := range []string{"cosign", "cosign2"} {
		claims, err := c.Verify(t, cosign, pub, image)
		if err != nil || len(claims) == 0 {
			t.Errorf("%s verify: %v", cosign, err)
		}
		for _, cl := range claims {
			if string(cl.Digest) != subject {
				t.Errorf("%s verify: a claim about %s, not %s", cosign, cl.Digest, subject)
			}
		}
		for _, typ := range []struct{ cosign, predicate string }{
			{"slsaprovenance1", attest.PredicateProvenance}, {"spdxjson", attest.PredicateSPDX}, {"cyclonedx", attest.PredicateCycloneDX},
		} {
			claims, err := c.VerifyAttestation(t, cosign, pub, typ.cosign, image)
			if err != nil || len(claims) == 0 {
				t.Errorf("%s verify-attestation --type %s: %v", cosign, typ.cosign, err)
			}
			for _, cl := range claims {
				if cl.Type != typ.predicate || string(cl.Digest) != subject {
					t.Errorf("%s verify-attestation --type %s: a %s claim about %s", cosign, typ.cosign, cl.Type, cl.Digest)
				}
			}
		}
		if _, err := c.Verify(t, cosign, otherPub, image); err == nil {
			t.Errorf("%s verify passed with another key", cosign)
		}
	}
	tree := c.Must(t, nil, "cosign", "tree", "--allow-http-registry", image)
	for _, want := range []string{".sig", ".att", sign.PredicateSign, attest.PredicateProvenance, attest.MediaTypeSPDX, attest.MediaTypeCycloneDX} {
		if !strings.Contains(tree, want) {
			t.Errorf("cosign tree does not show %s:\n%s", want, tree)
		}
	}
	host, _, _ := strings.Cut(image, "/")
	c.Must(t, nil, "regctl", "registry", "set", "--tls", "disabled", host)
	if tree := c.Must(t, nil, "regctl", "artifact", "tree", image); !strings.Contains(tree, attest.MediaTypeSPDX) || !strings.Contains(tree, sign.MediaTypeBundle) {
		t.Errorf("regctl artifact tree:\n%s", tree)
	}
	for _, doc := range []struct{ artifactType, file string }{{attest.MediaTypeSPDX, "sbom.spdx.json"}, {attest.MediaTypeCycloneDX, "sbom.cdx.json"}} {
		var found struct {
			Referrers []struct {
				Digest string `json:"digest"`
			} `json:"referrers"`
		}
		out := c.Must(t, nil, "oras", "discover", "--plain-http", "--format", "json", "--artifact-type", doc.artifactType, image+"@"+subject)
		if err := json.Unmarshal([]byte(out), &found); err != nil || len(found.Referrers) != 1 {
			t.Errorf("oras discover --artifact-type %s: %v\n%s", doc.artifactType, err, out)
			continue
		}
		dir := filepath.Join(c.Dir, "pull-"+strings.ReplaceAll(host, ":", "-")+"-"+doc.file)
		c.Must(t, nil, "oras", "pull", "--plain-http", "-o", dir, image+"@"+found.Referrers[0].Digest)
		data, err := os.ReadFile(filepath.Join(dir, doc.file))
		if err != nil {
			t.Errorf("oras pull of the %s SBOM: %v", doc.artifactType, err)
			continue
		}
		// The SBOM pulled passes its format's own checks.
		if doc.artifactType == attest.MediaTypeSPDX {
			attesttest.SPDX(t, data)
		} else {
			attesttest.CycloneDX(t, data)
		}
		list := c.Must(t, nil, "regctl", "artifact", "list", "--filter-artifact-type", doc.artifactType, "--format", "{{range .Descriptors}}{{.Digest}} {{end}}", image+"@"+subject)
		if strings.TrimSpace(list) != found.Referrers[0].Digest {
			t.Errorf("regctl artifact list --filter-artifact-type %s: %q, want %s", doc.artifactType, list, found.Referrers[0].Digest)
		}
	}
}
