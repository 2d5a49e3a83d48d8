package httpapi

import (
	"fmt"
	"net/http"
	"net/url"
	"strconv"

	"dkimd/internal/keystore"
)

// domainAudit is GET /{brand}/{domain}/audit: the audit records of one of
// the brand's domains, newest first, read-only. Only records of this brand
// are shown, so a domain that once belonged to another brand shows nothing
// of that brand's time; a deleted domain keeps its history, and a domain
// the brand never held is 404 domain not found. Pages as the admin audit
// log does (?limit=, ?before=, Link).
func (s *Server) domainAudit(w http.ResponseWriter, r *http.Request) {
	brand := pathParam(r, "brand")
	name, err := s.domainParam(r)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	// One less than the store's page, which must hold the extra record
	// that tells whether a next page exists.
	limit, err := pageLimit(r, defaultLimit, keystore.MaxAuditPage-1)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	var before int64
	if v := r.URL.Query().Get("before"); v != "" {
		if before, err = strconv.ParseInt(v, 10, 64); err != nil || before < 1 {
			s.fail(w, r, badRequest("INVALID_PARAMETER", "before must be a positive integer"))
			return
		}
	}
	recs, err := s.store.Audit(r.Context(), keystore.AuditFilter{Brand: brand, Domain: name, BeforeID: before, Limit: limit + 1})
	if err != nil {
		s.fail(w, r, err)
		return
	}
	if len(recs) == 0 && before == 0 {
		// No record at all: a domain the brand never held, perhaps another
		// brand's, reads as not found, as everywhere in the brand API.
		s.fail(w, r, errDomainNotFound)
		return
	}
	if len(recs) > limit {
		recs = recs[:limit]
		next := url.Values{"limit": {strconv.Itoa(limit)}, "before": {strconv.FormatInt(recs[limit-1].ID, 10)}}
		w.Header().Set("Link", fmt.Sprintf("<%s/%s/%s/audit?%s>; rel=\"next\"", BrandBase, url.PathEscape(brand), url.PathEscape(name), next.Encode()))
	}
	out := make([]auditEntry, 0, len(recs))
	for _, a := range recs {
		out = append(out, auditEntry{ID: a.ID, At: timeOrNil(a.At), Actor: a.Actor, Action: a.Action, Brand: a.Brand,
			Domain: a.Domain, Selector: a.Selector, Fingerprint: a.Fingerprint, RequestID: a.RequestID, Detail: a.Detail})
	}
	writeJSON(w, http.StatusOK, out)
}
