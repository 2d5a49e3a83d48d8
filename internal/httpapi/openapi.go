package httpapi

import (
	_ "embed"
	"net/http"
	"strconv"
)

// openAPIDoc describes the brand and admin APIs; a test holds it against the
// router in both directions.
//
//go:embed openapi.json
var openAPIDoc []byte

func (s *Server) openAPI(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Content-Length", strconv.Itoa(len(openAPIDoc)))
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write(openAPIDoc)
}
