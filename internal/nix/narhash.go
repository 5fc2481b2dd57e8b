package nix

import (
	"bytes"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"strings"
)

// narHash reads the "narHash" of `nix path-info --json`, which Nix spells
// in several ways, and returns it in one form: "sha256:<hex>", lowercase,
// as OCI digests and the SBOM formats write SHA-256 hashes (SPDX's and
// CycloneDX's checksums, in-toto's digest sets are hex). It returns ""
// for anything else (no hash, another algorithm, a form it does not know):
// the hash only describes a path, and a build does not fail for it.
//
// The forms: an SRI hash "sha256-<base64>" (what Nix 2.8 through 2.34
// print, testdata/pathinfo), Nix's older "sha256:<nix-base32>" (and
// "sha256:<hex>" or "sha256:<base64>", which Nix also parses), or a JSON
// object {"algorithm":"sha256","format":…,"hash":…} as newer JSON
// formats write hashes.
func narHash(raw json.RawMessage) string {
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 || bytes.Equal(raw, []byte("null")) {
		return ""
	}
	var s string
	if json.Unmarshal(raw, &s) != nil {
		var obj struct {
			Algorithm string `json:"algorithm"`
			Hash      string `json:"hash"`
		}
		if json.Unmarshal(raw, &obj) != nil || obj.Algorithm != "sha256" {
			return ""
		}
		if strings.HasPrefix(obj.Hash, "sha256") {
			s = obj.Hash // an SRI or prefixed hash
		} else {
			s = "sha256:" + obj.Hash
		}
	}
	var sum []byte
	if enc, ok := strings.CutPrefix(s, "sha256-"); ok {
		sum, _ = base64.StdEncoding.DecodeString(enc)
	} else if enc, ok := strings.CutPrefix(s, "sha256:"); ok {
		switch len(enc) {
		case 64:
			sum, _ = hex.DecodeString(enc)
		case 52:
			sum = nixBase32Decode(enc)
		case 44:
			sum, _ = base64.StdEncoding.DecodeString(enc)
		}
	}
	if len(sum) != 32 {
		return ""
	}
	return "sha256:" + hex.EncodeToString(sum)
}

// nixBase32Alphabet is the alphabet of Nix's base-32 encoding (no e, o,
// u, t), which also names store paths.
const nixBase32Alphabet = "0123456789abcdfghijklmnpqrsvwxyz"

// nixBase32Decode decodes Nix's base 32 (libutil's hash.cc): the last
// character holds the lowest five bits, little-endian across the bytes.
// It returns nil for a character outside the alphabet or bits beyond the
// hash's size.
func nixBase32Decode(s string) []byte {
	size := len(s) * 5 / 8
	out := make([]byte, size)
	for n := 0; n < len(s); n++ {
		digit := strings.IndexByte(nixBase32Alphabet, s[len(s)-n-1])
		if digit < 0 {
			return nil
		}
		b := n * 5
		i, j := b/8, uint(b%8)
		out[i] |= byte(digit << j)
		if carry := digit >> (8 - j); i+1 < size {
			out[i+1] |= byte(carry)
		} else if carry != 0 {
			return nil
		}
	}
	return out
}
