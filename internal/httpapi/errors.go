package httpapi

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"strconv"

	"dkimd/internal/domainname"
	"dkimd/internal/keystore"
	"dkimd/internal/provision"
	"dkimd/internal/rotation"
)

// problem is one error answer: an HTTP status, a stable machine-readable code
// and a title fit to show a brand. It is an error so that handlers can return
// the precise answer they mean (for example "domain not found" rather than a
// bare keystore.ErrNotFound).
type problem struct {
	status int
	code   string
	title  string
	// retryAfter, in seconds, is sent as Retry-After when positive.
	retryAfter int
}

func (p *problem) Error() string { return p.title }

// The answers the API gives by name. Codes are a contract with clients: never
// rename one.
var (
	errNoEntries         = &problem{status: http.StatusNotFound, code: "NO_DKIM_ENTRIES", title: "No DKIM entries found"}
	errDomainNotFound    = &problem{status: http.StatusNotFound, code: "DOMAIN_NOT_FOUND", title: "domain not found"}
	errSelectorNotFound  = &problem{status: http.StatusNotFound, code: "SELECTOR_NOT_FOUND", title: "selector not found"}
	errBrandNotFound     = &problem{status: http.StatusNotFound, code: "BRAND_NOT_FOUND", title: "brand not found"}
	errMaildomainMissing = &problem{status: http.StatusNotFound, code: "MAILDOMAIN_NOT_FOUND", title: "maildomain not found"}
	errRouteNotFound     = &problem{status: http.StatusNotFound, code: "NOT_FOUND", title: "no such resource"}
	errMethodNotAllowed  = &problem{status: http.StatusMethodNotAllowed, code: "METHOD_NOT_ALLOWED", title: "method not allowed"}
	errUnauthorized      = &problem{status: http.StatusUnauthorized, code: "UNAUTHORIZED", title: "missing or bad credentials"}
	errForbidden         = &problem{status: http.StatusForbidden, code: "FORBIDDEN", title: "these credentials do not give access to this brand"}
	errBodyTooLarge      = &problem{status: http.StatusRequestEntityTooLarge, code: "BODY_TOO_LARGE", title: "request body is too large"}
	errMediaType         = &problem{status: http.StatusUnsupportedMediaType, code: "UNSUPPORTED_MEDIA_TYPE", title: "request body must be application/json"}
	errRotationOff       = &problem{status: http.StatusServiceUnavailable, code: "ROTATION_UNAVAILABLE", title: "rotation is not available on this server"}
	errUnavailable       = &problem{status: http.StatusServiceUnavailable, code: "UNAVAILABLE", title: "the database is unavailable, try again later"}
	errInternal          = &problem{status: http.StatusInternalServerError, code: "INTERNAL", title: "internal error"}
)

// badRequest is a 400 with code and a title that says what is wrong.
func badRequest(code, title string) *problem {
	return &problem{status: http.StatusBadRequest, code: code, title: title}
}

// toProblem is the one place where errors become statuses.
func toProblem(err error) *problem {
	var p *problem
	var invalid *domainname.Invalid
	var hasKeys *provision.HasKeysError
	switch {
	case errors.As(err, &p):
		return p
	case errors.As(err, &invalid):
		return badRequest("INVALID_DOMAIN", invalid.Reason)
	case errors.Is(err, provision.ErrBadOptions):
		return badRequest("INVALID_BODY", err.Error())
	case errors.Is(err, provision.ErrNotMaildomain):
		return &problem{status: http.StatusNotFound, code: "MAILDOMAIN_NOT_PROVISIONED", title: "domain is not a maildomain of this brand"}
	case errors.Is(err, provision.ErrHeldByOther):
		return &problem{status: http.StatusConflict, code: "DOMAIN_HELD_BY_OTHER_BRAND", title: "domain is held by another brand"}
	case errors.As(err, &hasKeys):
		return &problem{status: http.StatusConflict, code: "MAILDOMAIN_HAS_KEYS",
			title: hasKeys.Error() + "; delete them first, or remove with ?force=true"}
	case errors.Is(err, provision.ErrLabelClash):
		// The message names both domains and the label, which is the point.
		return &problem{status: http.StatusConflict, code: "LABEL_CLASH", title: err.Error()}
	case errors.Is(err, domainname.ErrLabelTooLong):
		return &problem{status: http.StatusUnprocessableEntity, code: "LABEL_TOO_LONG", title: err.Error()}
	case errors.Is(err, rotation.ErrRotationPending):
		return &problem{status: http.StatusConflict, code: "ROTATION_PENDING", title: "a rotation is already pending"}
	case errors.Is(err, context.Canceled):
		// The client hung up mid-request: not a server error, and the
		// transaction rolled back. nginx's 499 names this case in logs and
		// metrics; the client never reads it.
		return &problem{status: statusClientClosed, code: "CLIENT_CLOSED_REQUEST", title: "the client closed the request"}
	case errors.Is(err, keystore.ErrUnavailable):
		return errUnavailable
	case errors.Is(err, keystore.ErrNotFound):
		return &problem{status: http.StatusNotFound, code: "NOT_FOUND", title: "not found"}
	case errors.Is(err, keystore.ErrConflict), errors.Is(err, keystore.ErrStale):
		return &problem{status: http.StatusConflict, code: "CONFLICT", title: "conflicting change, try again"}
	}
	return errInternal
}

// statusClientClosed is nginx's non-standard "client closed request".
const statusClientClosed = 499

type envelope struct {
	Errors []envelopeError `json:"errors"`
}

type envelopeError struct {
	Code   string `json:"code"`
	ID     string `json:"id"`
	Status string `json:"status"`
	Title  string `json:"title"`
}

// fail answers err in the Cloud-API v2 envelope. Errors that are not the
// client's fault are logged here, with the request id the client sees.
func (s *Server) fail(w http.ResponseWriter, r *http.Request, err error) {
	p := toProblem(err)
	info := infoFrom(r.Context())
	if p.status >= 500 {
		info.err = err
	}
	if p.retryAfter > 0 {
		w.Header().Set("Retry-After", strconv.Itoa(p.retryAfter))
	}
	writeJSON(w, p.status, envelope{Errors: []envelopeError{{
		Code: p.code, ID: info.id, Status: strconv.Itoa(p.status), Title: p.title,
	}}})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		// Only our own types are marshalled; this is a programming error.
		http.Error(w, `{"errors":[{"code":"INTERNAL","status":"500","title":"internal error"}]}`, http.StatusInternalServerError)
		return
	}
	b = append(b, '\n')
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	// Set here, not by net/http, so that a HEAD answer, whose body is never
	// written, carries the same length as its GET (RFC 9110 §9.3.2).
	w.Header().Set("Content-Length", strconv.Itoa(len(b)))
	w.WriteHeader(status)
	_, _ = w.Write(b)
}
