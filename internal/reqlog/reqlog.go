// Package reqlog holds what dkimd's HTTP listeners (the brand/admin API and
// the sign endpoint) share for their access logs: the request id and the
// status a handler wrote. It owns no routing, auth or logging policy.
package reqlog

import (
	"crypto/rand"
	"encoding/hex"
	"net/http"
)

// RequestID keeps a caller's X-Request-Id when it is short and harmless in
// a log line (an MTA can pass its queue id), and otherwise makes one.
func RequestID(in string) string {
	if len(in) > 0 && len(in) <= 128 && plain(in) {
		return in
	}
	b := make([]byte, 16)
	_, _ = rand.Read(b) // never fails (crypto/rand)
	return hex.EncodeToString(b)
}

func plain(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_' || c == '.' || c == ':') {
			return false
		}
	}
	return true
}

// StatusWriter remembers the status a handler wrote, for the access log
// and metrics.
type StatusWriter struct {
	http.ResponseWriter
	Status int
}

// WriteHeader records the first status.
func (w *StatusWriter) WriteHeader(code int) {
	if w.Status == 0 {
		w.Status = code
	}
	w.ResponseWriter.WriteHeader(code)
}

// Write records an implicit 200.
func (w *StatusWriter) Write(b []byte) (int, error) {
	if w.Status == 0 {
		w.Status = http.StatusOK
	}
	return w.ResponseWriter.Write(b)
}

// Unwrap lets http.ResponseController reach the underlying writer.
func (w *StatusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }
