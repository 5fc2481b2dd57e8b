package nix

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os/exec"
	"strings"
	"testing"

	"github.com/nixery/nixery/internal/need"
)

// libx's NAR hash in testdata/pathinfo, in each form.
const (
	libxHex  = "17fadf54b2ca7db233c37fe93af42e3e729a8c775069c908d24b89b38e794bea"
	libxSRI  = "sha256-F/rfVLLKfbIzw3/pOvQuPnKajHdQackI0kuJs455S+o="
	libxNix  = "1sjbg67b72abs84cjsahfy69lwiy5vs3msbzqcrv4zfan9adzyhp" // nix-hash --type sha256 --to-base32
	libxWant = "sha256:" + libxHex
)

func TestNarHash(t *testing.T) {
	for _, tt := range []struct{ in, want string }{
		{`"` + libxSRI + `"`, libxWant},
		{`"sha256:` + libxNix + `"`, libxWant},
		{`"sha256:` + libxHex + `"`, libxWant},
		{`"sha256:` + strings.ToUpper(libxHex) + `"`, libxWant},
		{`"sha256:F/rfVLLKfbIzw3/pOvQuPnKajHdQackI0kuJs455S+o="`, libxWant},
		{`{"algorithm":"sha256","format":"base16","hash":"` + libxHex + `"}`, libxWant},
		{`{"algorithm":"sha256","format":"nix32","hash":"` + libxNix + `"}`, libxWant},
		{`{"algorithm":"sha256","format":"sri","hash":"` + libxSRI + `"}`, libxWant},
		{`{"algorithm":"sha512","format":"base16","hash":"00"}`, ""},
		{`"sha512-z4PhNX7vuL3xVChQ1m2AB9Yg5AULVxXcg/SpIdNs6c5H0NE8XYXysP+DGNKHfuwvY7kxvUdBeoGlODJ6+SfaPg=="`, ""},
		{`"sha256-8Pcc"`, ""}, // cut short
		{`"sha256:` + strings.Replace(libxNix, "1", "e", 1) + `"`, ""}, // e is not in the alphabet
		{`"sha256:` + strings.Replace(libxNix, "1", "z", 1) + `"`, ""}, // bits beyond 256
		{`null`, ""},
		{``, ""},
		{`42`, ""},
	} {
		if got := narHash(json.RawMessage(tt.in)); got != tt.want {
			t.Errorf("narHash(%s) = %q, want %q", tt.in, got, tt.want)
		}
	}
}

// TestNixBase32 decodes what this machine's Nix encodes (nix-hash
// --to-base32), for hashes of many shapes.
func TestNixBase32(t *testing.T) {
	if _, err := exec.LookPath("nix-hash"); err != nil {
		need.Skip(t, "nix-hash not installed")
	}
	var hexes []string
	for i := range 24 {
		sum := sha256.Sum256([]byte(fmt.Sprint(i)))
		hexes = append(hexes, hex.EncodeToString(sum[:]))
	}
	hexes = append(hexes, strings.Repeat("0", 64), strings.Repeat("f", 64))
	out, err := exec.Command("nix-hash", append([]string{"--type", "sha256", "--to-base32"}, hexes...)...).Output()
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Fields(string(out))
	if len(lines) != len(hexes) {
		t.Fatalf("nix-hash printed %d hashes for %d", len(lines), len(hexes))
	}
	for i, b32 := range lines {
		if got := hex.EncodeToString(nixBase32Decode(b32)); got != hexes[i] {
			t.Errorf("%s: decoded %s, want %s", b32, got, hexes[i])
		}
	}
}
