package registry

import (
	"encoding/json"
	"time"
)

// zeroTime makes http.ServeContent skip Last-Modified: blobs are
// content-addressed and validated by digest, not by time.
var zeroTime time.Time

type errorBody struct {
	Errors []errorEntry `json:"errors"`
}

type errorEntry struct {
	Code    string `json:"code"`
	Message string `json:"message"`
	Detail  any    `json:"detail,omitempty"`
}

func encodeError(re *regError) []byte {
	body, _ := json.Marshal(errorBody{Errors: []errorEntry{{Code: re.Code, Message: re.Message}}})
	return body
}
