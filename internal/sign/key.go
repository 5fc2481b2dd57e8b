package sign

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"golang.org/x/crypto/nacl/secretbox"
	"golang.org/x/crypto/scrypt"
)

// PEM types of the encrypted private keys cosign writes: cosign v2.x and
// v3 write SIGSTORE, older releases COSIGN; the body is the same.
const (
	pemSigstore = "ENCRYPTED SIGSTORE PRIVATE KEY"
	pemCosign   = "ENCRYPTED COSIGN PRIVATE KEY"
)

// maxFile bounds what is read of the key and the password file: a cosign
// key is under 1 KiB.
const maxFile = 64 << 10

// encryptedKey is the PEM body: secure-systems-lab/go-securesystemslib's
// "encrypted" format (MIT), which cosign's pkg/cosign/keys.go uses: the
// password is stretched with scrypt into a NaCl secretbox key that opens
// the ciphertext, a PKCS #8 DER private key. JSON []byte fields are
// standard base64.
type encryptedKey struct {
	KDF struct {
		Name   string `json:"name"`
		Params struct {
			N int `json:"N"`
			R int `json:"r"`
			P int `json:"p"`
		} `json:"params"`
		Salt []byte `json:"salt"`
	} `json:"kdf"`
	Cipher struct {
		Name  string `json:"name"`
		Nonce []byte `json:"nonce"`
	} `json:"cipher"`
	Ciphertext []byte `json:"ciphertext"`
}

// scryptParams are the only (N, r, p) accepted: go-securesystemslib's
// legacy, standard (cosign's default) and OWASP strengths. Refusing
// others keeps a tampered file from asking for unbounded memory or time
// (the largest, N=2^17 r=8, takes 128 MiB).
var scryptParams = [][3]int{{1 << 15, 8, 1}, {1 << 16, 8, 1}, {1 << 17, 8, 1}}

// readFile reads at most maxFile bytes of a file.
func readFile(name string) ([]byte, error) {
	f, err := os.Open(name)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, maxFile+1))
	if err != nil {
		return nil, err
	}
	if len(data) > maxFile {
		return nil, fmt.Errorf("larger than %d bytes", maxFile)
	}
	return data, nil
}

// decrypt opens a cosign private key (the PEM file's bytes) with the
// password and returns the ECDSA P-256 key it holds. Its errors say what
// is wrong without quoting the file or the password.
func decrypt(pemData, password []byte) (*ecdsa.PrivateKey, error) {
	block, _ := pem.Decode(pemData)
	if block == nil {
		return nil, errors.New("not a PEM file")
	}
	if block.Type != pemSigstore && block.Type != pemCosign {
		return nil, fmt.Errorf("PEM type %q, want %q (cosign generate-key-pair writes it)", block.Type, pemSigstore)
	}
	var k encryptedKey
	if err := json.Unmarshal(block.Bytes, &k); err != nil {
		return nil, errors.New("the PEM body is not cosign's encrypted key JSON")
	}
	if k.KDF.Name != "scrypt" {
		return nil, fmt.Errorf("unknown key derivation %q, want scrypt", k.KDF.Name)
	}
	if k.Cipher.Name != "nacl/secretbox" {
		return nil, fmt.Errorf("unknown cipher %q, want nacl/secretbox", k.Cipher.Name)
	}
	params := [3]int{k.KDF.Params.N, k.KDF.Params.R, k.KDF.Params.P}
	known := false
	for _, p := range scryptParams {
		known = known || p == params
	}
	if !known {
		return nil, fmt.Errorf("unsupported scrypt parameters N=%d r=%d p=%d", params[0], params[1], params[2])
	}
	var nonce [24]byte
	if len(k.Cipher.Nonce) != len(nonce) {
		return nil, fmt.Errorf("nonce of %d bytes, want %d", len(k.Cipher.Nonce), len(nonce))
	}
	copy(nonce[:], k.Cipher.Nonce)
	derived, err := scrypt.Key(password, k.KDF.Salt, params[0], params[1], params[2], 32)
	if err != nil {
		return nil, fmt.Errorf("scrypt: %w", err)
	}
	var boxKey [32]byte
	copy(boxKey[:], derived)
	der, ok := secretbox.Open(nil, k.Ciphertext, &nonce, &boxKey)
	clear(derived)
	clear(boxKey[:])
	if !ok {
		return nil, errors.New("wrong password, or a damaged key")
	}
	defer clear(der)
	key, err := x509.ParsePKCS8PrivateKey(der)
	if err != nil {
		return nil, errors.New("the decrypted key is not PKCS #8")
	}
	ec, ok := key.(*ecdsa.PrivateKey)
	if !ok || ec.Curve != elliptic.P256() {
		// cosign's default (ecdsa-sha2-256-nistp256); its other
		// algorithms hash and verify differently in v2 and v3.
		return nil, fmt.Errorf("a %s key, want ECDSA P-256 (cosign generate-key-pair's default)", keyKind(key))
	}
	return ec, nil
}

// keyKind names a key's algorithm for an error.
func keyKind(key any) string {
	if ec, ok := key.(*ecdsa.PrivateKey); ok {
		return "ECDSA " + ec.Curve.Params().Name
	}
	return strings.TrimPrefix(fmt.Sprintf("%T", key), "*")
}

// password is the content of a password file, less one line ending
// (a file written by `echo` ends in one; cosign's own prompt never
// includes it); "" reads none: the empty password.
func password(file string) ([]byte, error) {
	if file == "" {
		return nil, nil
	}
	data, err := readFile(file)
	if err != nil {
		return nil, err
	}
	for _, end := range []string{"\r\n", "\n"} {
		if n := len(data) - len(end); n >= 0 && string(data[n:]) == end {
			return data[:n], nil
		}
	}
	return data, nil
}
