// Package signhttp is the MTA's HTTP sign endpoint, `POST /v1/sign`: raw
// message in, the DKIM-Signature header field(s) to prepend out
// (docs/operator-guide.md). It streams the body through the signer, so a message's
// size costs no heap, and enforces the size limit and the bearer token.
//
// The contract, for MTA-side scripts:
//
//	POST /v1/sign                      body: the message, CRLF or bare LF
//	Authorization: Bearer <token>      when --sign-token is set
//	X-Request-Id: <id>                 optional; echoed, and in error bodies
//
//	200 text/plain                     the field(s), CRLF line ends, to prepend
//	    Dkim-Domain: <d=>              the From domain, or <brand>.<zone>
//	    Dkim-Selector: <s=>[, <s=>]    RSA first; a second when Ed25519 also signed
//	    Dkim-Mode: aligned|fallback
//	422 not signed, in the error envelope: code as below, the reason as title
//	400 BAD_REQUEST (the body could not be read), 401 UNAUTHORIZED,
//	405, 413 BODY_TOO_LARGE (--sign-max-bytes), 503 UNAVAILABLE (no keys
//	cached and the store is away)
//
// The 422 codes, and what the reason (the title) says; a reason that names a
// line counts lines from 1, the header block's and the body's apart:
//
//	NO_FROM              no From field, or one with no address (a group)
//	MULTIPLE_FROM        several From fields, or several addresses in one;
//	                     "From :" (white space before the colon, RFC 5322
//	                     §4.5) counts as a From
//	BAD_FROM             the From field does not parse, or its domain is not
//	                     one dkimd signs for (an IP literal, a trailing dot)
//	HEADER_UNPARSEABLE   "header line N contains a NUL byte", "… contains a CR
//	                     that is not followed by LF", "… is neither a header
//	                     field nor a continuation line: …", "… is a
//	                     continuation line with no header field before it":
//	                     verifiers would read such a header differently from
//	                     dkimd (docs/operator-guide.md, "Signed header fields")
//	HEADER_TOO_LARGE     the header block is over 1 MiB
//	BODY_BARE_CR         "body line N contains a CR that is not followed by
//	                     LF": RFC 5322 §2.3 forbids it and verifiers hash it
//	                     three different ways, so no signature would hold
//	UNKNOWN_DOMAIN       the From domain is no brand's maildomain
//	AMBIGUOUS_DOMAIN     the From domain is a maildomain of several brands
//	NO_ACTIVE_KEY        the domain or its brand has no key that may sign
//
// UTF-8 in header fields (RFC 6532) and 8-bit bodies sign as they are.
//
// It owns the transport only: which key signs and how is package signer's.
package signhttp

import (
	"crypto/subtle"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"dkimd/internal/reqlog"
	"dkimd/internal/signer"
)

// Options configure the handler.
type Options struct {
	Signer *signer.Signer
	// Token, when set, must come as `Authorization: Bearer <token>`.
	Token string
	// MaxBytes is the largest message accepted; larger ones get 413.
	MaxBytes int64
	Log      *slog.Logger
	// Registerer receives dkimd_sign_http_* metrics; nil registers none.
	Registerer prometheus.Registerer
	Now        func() time.Time
}

type handler struct {
	opts     Options
	requests *prometheus.CounterVec
	ok       prometheus.Counter // requests{code="200"}, looked up once
	duration prometheus.Histogram
}

// New returns the endpoint's handler.
func New(opts Options) (http.Handler, error) {
	if opts.Signer == nil || opts.MaxBytes <= 0 {
		return nil, errors.New("signhttp: a signer and a positive size limit are required")
	}
	if opts.Log == nil {
		opts.Log = slog.New(slog.DiscardHandler)
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	h := &handler{
		opts: opts,
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "dkimd_sign_http_requests_total",
			Help: "Requests to the HTTP sign endpoint, by status code.",
		}, []string{"code"}),
		duration: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "dkimd_sign_http_request_duration_seconds",
			Help:    "Time to answer a sign request, reading the message included.",
			Buckets: []float64{.001, .002, .005, .01, .025, .05, .1, .25, 1, 5},
		}),
	}
	h.ok = h.requests.WithLabelValues(strconv.Itoa(http.StatusOK))
	if opts.Registerer != nil {
		for _, c := range []prometheus.Collector{h.requests, h.duration} {
			if err := opts.Registerer.Register(c); err != nil {
				return nil, err
			}
		}
	}
	mux := http.NewServeMux()
	mux.Handle("/v1/sign", h)
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		writeError(w, reqlog.RequestID(r.Header.Get("X-Request-Id")), http.StatusNotFound, "NOT_FOUND", "no such resource; the sign endpoint is POST /v1/sign")
	})
	return mux, nil
}

func (h *handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	start := h.opts.Now()
	id := reqlog.RequestID(r.Header.Get("X-Request-Id"))
	w.Header().Set("X-Request-Id", id)
	sw := &reqlog.StatusWriter{ResponseWriter: w}
	h.serve(sw, r, id)
	if sw.Status == http.StatusOK {
		h.ok.Inc()
	} else {
		h.requests.WithLabelValues(strconv.Itoa(sw.Status)).Inc()
	}
	h.duration.Observe(h.opts.Now().Sub(start).Seconds())
}

func (h *handler) serve(w http.ResponseWriter, r *http.Request, id string) {
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", http.MethodPost)
		writeError(w, id, http.StatusMethodNotAllowed, "METHOD_NOT_ALLOWED", "the sign endpoint takes POST")
		return
	}
	if h.opts.Token != "" && !h.authorized(r) {
		w.Header().Set("WWW-Authenticate", `Bearer realm="dkimd-sign"`)
		writeError(w, id, http.StatusUnauthorized, "UNAUTHORIZED", "missing or bad bearer token")
		return
	}
	if r.ContentLength > h.opts.MaxBytes {
		h.tooLarge(w, id)
		return
	}
	body := http.MaxBytesReader(w, r.Body, h.opts.MaxBytes)
	res, err := h.opts.Signer.Sign(r.Context(), body)
	var tooBig *http.MaxBytesError
	switch refusal, refused := signer.AsRefusal(err); {
	case err == nil:
	case errors.As(err, &tooBig):
		h.tooLarge(w, id)
		return
	case refused:
		h.opts.Log.Info("message not signed", slog.String("request_id", id), slog.String("code", refusal.Code),
			slog.String("reason", refusal.Reason))
		writeError(w, id, http.StatusUnprocessableEntity, envelopeCode(refusal.Code), refusal.Reason)
		return
	case r.Context().Err() != nil:
		// The client went away; nobody reads an answer.
		h.opts.Log.Info("sign request abandoned", slog.String("request_id", id), slog.Any("err", err))
		writeError(w, id, 499, "CLIENT_CLOSED", "the client closed the request")
		return
	case errors.Is(err, signer.ErrRead):
		writeError(w, id, http.StatusBadRequest, "BAD_REQUEST", "the message could not be read: "+err.Error())
		return
	default:
		h.opts.Log.Error("sign request failed", slog.String("request_id", id), slog.Any("err", err))
		writeError(w, id, http.StatusServiceUnavailable, "UNAVAILABLE", "signing is not available, try again later")
		return
	}
	hdr := w.Header()
	hdr.Set("Content-Type", "text/plain; charset=utf-8")
	hdr.Set("Dkim-Domain", res.Domain)
	hdr.Set("Dkim-Selector", strings.Join(res.Selectors(), ", "))
	hdr.Set("Dkim-Mode", res.Mode)
	out := res.Header()
	hdr.Set("Content-Length", strconv.Itoa(len(out)))
	w.WriteHeader(http.StatusOK)
	_, _ = io.WriteString(w, out)
}

func (h *handler) tooLarge(w http.ResponseWriter, id string) {
	// The rest of the body is not worth reading: close the connection.
	w.Header().Set("Connection", "close")
	writeError(w, id, http.StatusRequestEntityTooLarge, "BODY_TOO_LARGE",
		"the message is larger than "+strconv.FormatInt(h.opts.MaxBytes, 10)+" bytes")
}

func (h *handler) authorized(r *http.Request) bool {
	scheme, token, ok := strings.Cut(r.Header.Get("Authorization"), " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") {
		return false
	}
	return subtle.ConstantTimeCompare([]byte(strings.TrimSpace(token)), []byte(h.opts.Token)) == 1
}

// envelopeCode turns a signer refusal code into the API's code style:
// "no-from" becomes "NO_FROM".
func envelopeCode(code string) string {
	return strings.ToUpper(strings.ReplaceAll(code, "-", "_"))
}

type envelopeError struct {
	Code   string `json:"code"`
	ID     string `json:"id"`
	Status string `json:"status"`
	Title  string `json:"title"`
}

// writeError answers in the Cloud-API v2 error envelope the brand API uses.
func writeError(w http.ResponseWriter, id string, status int, code, title string) {
	b, err := json.Marshal(struct {
		Errors []envelopeError `json:"errors"`
	}{[]envelopeError{{Code: code, ID: id, Status: strconv.Itoa(status), Title: title}}})
	if err != nil {
		b = []byte(`{"errors":[{"code":"INTERNAL","status":"500","title":"internal error"}]}`)
		status = http.StatusInternalServerError
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(status)
	_, _ = w.Write(append(b, '\n'))
}
