package web

import (
	"errors"
	"net/http"
	"strconv"

	"github.com/nixery/nixery/internal/builder"
	"github.com/nixery/nixery/internal/image"
	"github.com/nixery/nixery/internal/manifest"
	"github.com/nixery/nixery/internal/storage"
	"github.com/nixery/nixery/internal/supplychain"
)

// SupplyChainView is what the image page and /api/image say of an
// image's SBOMs, provenance and signature.
type SupplyChainView struct {
	supplychain.Summary
	// Links are the documents' URLs (the registry's blob URLs), in the
	// order of Documents.
	Links []string `json:"links"`
	// Verify is the cosign command that verifies the image, "" when it
	// is not signed.
	Verify string `json:"verify,omitempty"`
}

// supplyChain summarises the artifacts of the image d describes (of its
// OCI manifest; the Docker one has the same documents); nil when this
// site has no Maker or they are not made yet. A failure to read them is
// logged: the page shows the image without them.
func (s *Site) supplyChain(r *http.Request, req *image.Request, d *builder.Details) *SupplyChainView {
	if s.Artifacts == nil {
		return nil
	}
	sum, err := s.Artifacts.Summarize(r.Context(), d.Manifests[manifest.OCIManifest])
	if err != nil {
		if !errors.Is(err, storage.ErrNotFound) {
			s.logger().Warn("image artifacts unreadable", "image", req.Ref(), "err", err)
		}
		return nil
	}
	v := &SupplyChainView{Summary: sum}
	for _, doc := range sum.Documents {
		v.Links = append(v.Links, "/v2/"+req.Name+"/blobs/"+doc.Blob.String())
	}
	if sum.Fingerprint != "" {
		host, plain := s.host(r), s.insecure(r)
		scheme := "https://"
		if plain {
			scheme = "http://"
		}
		v.Verify = supplychain.VerifyCommand(host+"/"+req.Ref(), scheme+host+"/cosign.pub", plain)
	}
	return v
}

// publicKey answers /cosign.pub: the public key that verifies this
// instance's signatures, as `cosign generate-key-pair` wrote it; 404
// when it signs nothing.
func (s *Site) publicKey(w http.ResponseWriter, r *http.Request) {
	var key []byte
	if s.Artifacts != nil {
		key = s.Artifacts.PublicKey()
	}
	if key == nil {
		s.fail(w, r, http.StatusNotFound, "this instance signs no images: it has no NIXERY_SIGNING_KEY")
		return
	}
	h := w.Header()
	h.Set("Content-Type", "application/x-pem-file")
	h.Set("Content-Length", strconv.Itoa(len(key)))
	w.WriteHeader(http.StatusOK)
	if r.Method != http.MethodHead {
		w.Write(key)
	}
}
