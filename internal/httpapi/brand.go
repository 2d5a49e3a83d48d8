package httpapi

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"time"

	"dkimd/internal/dkimkey"
	"dkimd/internal/domainname"
	"dkimd/internal/keystore"
	"dkimd/internal/provision"
	"dkimd/internal/rotation"
)

// Page sizes of the domain list (docs/api.md).
const (
	defaultLimit = 100
	maxLimit     = 1000
)

// domainEntry is a domain as the brand API shows it. Times that are not set
// are null.
type domainEntry struct {
	Domain         string          `json:"domain"`
	Brand          string          `json:"brand"`
	Status         string          `json:"status"`
	StatusReason   string          `json:"statusReason,omitempty"`
	ActiveSelector string          `json:"activeSelector"`
	CreatedAt      *time.Time      `json:"createdAt"`
	UpdatedAt      *time.Time      `json:"updatedAt"`
	Rotation       rotationEntry   `json:"rotation"`
	Selectors      []selectorEntry `json:"selectors"`
}

type rotationEntry struct {
	LastRotatedAt   *time.Time `json:"lastRotatedAt"`
	NextRotationAt  *time.Time `json:"nextRotationAt"`
	PendingSwitchAt *time.Time `json:"pendingSwitchAt"`
}

type selectorEntry struct {
	Selector    string     `json:"selector"`
	State       string     `json:"state"`
	Algorithm   string     `json:"algorithm"`
	KeyBits     int        `json:"keyBits"`
	PublicKey   string     `json:"publicKey"`
	TXTName     string     `json:"txtName"`
	TXTValue    string     `json:"txtValue"`
	CNAME       cnameEntry `json:"cname"`
	PublishedAt *time.Time `json:"publishedAt"`
	Fingerprint string     `json:"fingerprint"`
}

type cnameEntry struct {
	Name   string `json:"name"`
	Target string `json:"target"`
}

// timeOrNil shows a time in UTC at the store's precision (microseconds), so
// that an answer from memory and one from the store read the same.
func timeOrNil(t time.Time) *time.Time {
	if t.IsZero() {
		return nil
	}
	u := t.UTC().Truncate(time.Microsecond)
	return &u
}

func (s *Server) entry(d keystore.Domain, keys []keystore.Key) domainEntry {
	keys = slices.Clone(keys)
	provision.SortKeys(keys)
	e := domainEntry{
		Domain: d.Name, Brand: d.Brand, Status: d.Status, StatusReason: d.StatusReason,
		ActiveSelector: d.ActiveSelector, CreatedAt: timeOrNil(d.CreatedAt), UpdatedAt: timeOrNil(d.UpdatedAt),
		Rotation: rotationEntry{
			LastRotatedAt: timeOrNil(d.LastRotatedAt), NextRotationAt: timeOrNil(d.NextRotationAt),
			PendingSwitchAt: timeOrNil(d.PendingSwitchAt),
		},
		Selectors: make([]selectorEntry, 0, len(keys)),
	}
	for _, k := range keys {
		e.Selectors = append(e.Selectors, s.selector(d, k))
	}
	return e
}

// selector shows a key's public half only: SealedPrivateKey is never read.
func (s *Server) selector(d keystore.Domain, k keystore.Key) selectorEntry {
	target := domainname.LabelTXTOwner(k.Selector, d.Label, s.zone)
	return selectorEntry{
		Selector: k.Selector, State: string(k.State), Algorithm: k.Algorithm, KeyBits: k.KeyBits,
		PublicKey: base64.StdEncoding.EncodeToString(k.PublicKey),
		TXTName:   target, TXTValue: dkimkey.TXTValue(k.Algorithm, k.PublicKey),
		CNAME:       cnameEntry{Name: domainname.CNAMEName(k.Selector, d.Name), Target: target},
		PublishedAt: timeOrNil(k.PublishedAt), Fingerprint: k.Fingerprint,
	}
}

func (s *Server) actor(r *http.Request) provision.Actor {
	info := infoFrom(r.Context())
	name := "operator"
	if info.brand != "operator" {
		name = "brand:" + info.brand
	}
	return provision.Actor{Name: name, RequestID: info.id}
}

// domainParam is the {domain} of the path, normalised.
func (s *Server) domainParam(r *http.Request) (string, error) {
	return domainname.Normalize(pathParam(r, "domain"), s.zone)
}

// ownDomain loads a domain of the brand in the path. Another brand's domain
// is "not found" too: its existence is none of this brand's business.
func (s *Server) ownDomain(r *http.Request) (keystore.Domain, []keystore.Key, error) {
	name, err := s.domainParam(r)
	if err != nil {
		return keystore.Domain{}, nil, err
	}
	d, err := s.store.Domain(r.Context(), name)
	if errors.Is(err, keystore.ErrNotFound) || err == nil && d.Brand != pathParam(r, "brand") {
		return keystore.Domain{}, nil, errDomainNotFound
	}
	if err != nil {
		return keystore.Domain{}, nil, err
	}
	keys, err := s.store.Keys(r.Context(), keystore.OwnerDomain, d.Name)
	if err != nil {
		return keystore.Domain{}, nil, err
	}
	return d, keys, nil
}

// pageLimit reads ?limit=: default def, capped at max.
func pageLimit(r *http.Request, def, max int) (int, error) {
	v := r.URL.Query().Get("limit")
	if v == "" {
		return def, nil
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 1 {
		return 0, badRequest("INVALID_PARAMETER", "limit must be a positive integer")
	}
	return min(n, max), nil
}

func (s *Server) listDomains(w http.ResponseWriter, r *http.Request) {
	brand := pathParam(r, "brand")
	limit, err := pageLimit(r, defaultLimit, maxLimit)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	after := r.URL.Query().Get("after")
	domains, err := s.store.Domains(r.Context(), brand, after, limit+1)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	if len(domains) == 0 && after == "" {
		s.fail(w, r, errNoEntries)
		return
	}
	if len(domains) > limit {
		domains = domains[:limit]
		next := url.Values{"limit": {strconv.Itoa(limit)}, "after": {domains[limit-1].Name}}
		w.Header().Set("Link", fmt.Sprintf("<%s/%s?%s>; rel=\"next\"", BrandBase, url.PathEscape(brand), next.Encode()))
	}
	out := make([]domainEntry, 0, len(domains))
	if len(domains) > 0 {
		keys, err := s.store.BrandDomainKeys(r.Context(), brand, after, domains[len(domains)-1].Name)
		if err != nil {
			s.fail(w, r, err)
			return
		}
		for _, d := range domains {
			out = append(out, s.entry(d, keys[d.Name]))
		}
	}
	writeJSON(w, http.StatusOK, out)
}

func (s *Server) getDomain(w http.ResponseWriter, r *http.Request) {
	d, keys, err := s.ownDomain(r)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, s.entry(d, keys))
}

func (s *Server) getSelector(w http.ResponseWriter, r *http.Request) {
	d, keys, err := s.ownDomain(r)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	sel := pathParam(r, "selector")
	for _, k := range keys {
		if k.Selector == sel {
			writeJSON(w, http.StatusOK, s.selector(d, k))
			return
		}
	}
	s.fail(w, r, errSelectorNotFound)
}

// putBody is the optional body of PUT /{brand}/{domain}; a field left out
// leaves that setting of an existing domain as it is.
type putBody struct {
	KeyBits int   `json:"keyBits"`
	Ed25519 *bool `json:"ed25519"`
}

func (s *Server) putDomain(w http.ResponseWriter, r *http.Request) {
	var body putBody
	if err := decodeBody(w, r, &body, true); err != nil {
		s.fail(w, r, err)
		return
	}
	name, err := s.domainParam(r)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	d, keys, created, err := s.svc.PutDomain(r.Context(), pathParam(r, "brand"), name,
		provision.PutOptions{KeyBits: body.KeyBits, Ed25519: body.Ed25519}, s.actor(r))
	if err != nil {
		s.fail(w, r, err)
		return
	}
	status := http.StatusOK
	if created {
		status = http.StatusCreated
		w.Header().Set("Location", BrandBase+"/"+d.Brand+"/"+d.Name)
	}
	writeJSON(w, status, s.entry(d, keys))
}

func (s *Server) deleteDomain(w http.ResponseWriter, r *http.Request) {
	name, err := s.domainParam(r)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	err = s.svc.DeleteDomain(r.Context(), pathParam(r, "brand"), name, s.actor(r))
	if errors.Is(err, keystore.ErrNotFound) {
		err = errDomainNotFound
	}
	if err != nil {
		s.fail(w, r, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

func (s *Server) rotate(w http.ResponseWriter, r *http.Request) {
	emergency := false
	if v := r.URL.Query().Get("emergency"); v != "" {
		var err error
		if emergency, err = strconv.ParseBool(v); err != nil {
			s.fail(w, r, badRequest("INVALID_PARAMETER", "emergency must be true or false"))
			return
		}
	}
	d, rot, ok := s.rotationTarget(w, r)
	if !ok {
		return
	}
	d, keys, err := rot.RequestRotation(r.Context(), d.Brand, d.Name, emergency, s.actor(r))
	if err != nil {
		s.failRotation(w, r, err)
		return
	}
	writeJSON(w, http.StatusAccepted, s.entry(d, keys))
}

type dnsReport struct {
	Domain    string          `json:"domain"`
	CheckedAt *time.Time      `json:"checkedAt"`
	Selectors []selectorCheck `json:"selectors"`
}

type selectorCheck struct {
	Selector       string     `json:"selector"`
	CNAME          cnameEntry `json:"cname"`
	AnsweredTarget string     `json:"answeredTarget"`
	AnsweredTXT    string     `json:"answeredTxt"`
	Verdict        string     `json:"verdict"`
	Error          string     `json:"error,omitempty"`
}

func (s *Server) checkDNS(w http.ResponseWriter, r *http.Request) {
	d, rot, ok := s.rotationTarget(w, r)
	if !ok {
		return
	}
	rep, err := rot.CheckDNS(r.Context(), d.Brand, d.Name, s.actor(r))
	if err != nil {
		s.failRotation(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, toDNSReport(rep))
}

// rotationTarget is the caller's domain of the path and the rotation
// service; when either is missing it fails the request and says false.
func (s *Server) rotationTarget(w http.ResponseWriter, r *http.Request) (keystore.Domain, Rotator, bool) {
	d, _, err := s.ownDomain(r)
	if err != nil {
		s.fail(w, r, err)
		return keystore.Domain{}, nil, false
	}
	rot := s.rotator()
	if rot == nil {
		s.fail(w, r, errRotationOff)
		return keystore.Domain{}, nil, false
	}
	return d, rot, true
}

// failRotation answers an error of the rotation service; a domain that
// went away meanwhile is the API's 404.
func (s *Server) failRotation(w http.ResponseWriter, r *http.Request, err error) {
	if errors.Is(err, keystore.ErrNotFound) {
		err = errDomainNotFound
	}
	s.fail(w, r, err)
}

func toDNSReport(rep rotation.DNSReport) dnsReport {
	out := dnsReport{Domain: rep.Domain, CheckedAt: timeOrNil(rep.CheckedAt), Selectors: make([]selectorCheck, 0, len(rep.Selectors))}
	for _, c := range rep.Selectors {
		out.Selectors = append(out.Selectors, selectorCheck{
			Selector: c.Selector, CNAME: cnameEntry{Name: c.CNAMEName, Target: c.CNAMETarget},
			AnsweredTarget: c.AnsweredTarget, AnsweredTXT: c.AnsweredTXT, Verdict: c.Verdict, Error: c.Error,
		})
	}
	return out
}

// decodeBody reads a JSON body into v: at most maxBody bytes, no unknown
// fields, nothing after the value. An empty body leaves v as it is when
// optional.
func decodeBody(w http.ResponseWriter, r *http.Request, v any, optional bool) error {
	r.Body = http.MaxBytesReader(w, r.Body, maxBody)
	if r.ContentLength > maxBody {
		return errBodyTooLarge
	}
	raw, err := io.ReadAll(r.Body)
	var tooLarge *http.MaxBytesError
	switch {
	case errors.As(err, &tooLarge):
		return errBodyTooLarge
	case err != nil:
		return badRequest("INVALID_BODY", "could not read the request body")
	}
	if len(raw) == 0 {
		if optional {
			return nil
		}
		return badRequest("INVALID_BODY", "a JSON request body is required")
	}
	if mt, _, err := mime.ParseMediaType(r.Header.Get("Content-Type")); err != nil || mt != "application/json" {
		return errMediaType
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return badRequest("INVALID_BODY", "request body is not valid: "+jsonProblem(err))
	}
	if dec.More() {
		return badRequest("INVALID_BODY", "request body holds more than one JSON value")
	}
	if _, err := dec.Token(); err != io.EOF {
		return badRequest("INVALID_BODY", "request body holds more than one JSON value")
	}
	return nil
}

// jsonProblem says what is wrong with a body in words fit for a client,
// without echoing the body.
func jsonProblem(err error) string {
	var syn *json.SyntaxError
	var typ *json.UnmarshalTypeError
	switch {
	case errors.As(err, &syn):
		return fmt.Sprintf("malformed JSON at offset %d", syn.Offset)
	case errors.As(err, &typ):
		return fmt.Sprintf("field %q must be a %s", typ.Field, typ.Type.Kind())
	case errors.Is(err, io.ErrUnexpectedEOF):
		return "truncated JSON"
	}
	// DisallowUnknownFields: `json: unknown field "x"`.
	return err.Error()
}
