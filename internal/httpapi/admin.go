package httpapi

import (
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"time"

	"dkimd/internal/domainname"
	"dkimd/internal/keystore"
)

type brandEntry struct {
	Name        string     `json:"name"`
	CreatedAt   *time.Time `json:"createdAt"`
	UpdatedAt   *time.Time `json:"updatedAt"`
	Domains     int        `json:"domains"`
	Maildomains []string   `json:"maildomains"`
}

type brandSecret struct {
	Name   string `json:"name"`
	Secret string `json:"secret"`
}

type createBrandBody struct {
	Name string `json:"name"`
}

type auditEntry struct {
	ID          int64      `json:"id"`
	At          *time.Time `json:"at"`
	Actor       string     `json:"actor"`
	Action      string     `json:"action"`
	Brand       string     `json:"brand,omitempty"`
	Domain      string     `json:"domain,omitempty"`
	Selector    string     `json:"selector,omitempty"`
	Fingerprint string     `json:"fingerprint,omitempty"`
	RequestID   string     `json:"requestId,omitempty"`
	Detail      string     `json:"detail,omitempty"`
}

func (s *Server) brandEntry(r *http.Request, b keystore.Brand) (brandEntry, error) {
	n, err := s.store.CountDomains(r.Context(), b.Name)
	if err != nil {
		return brandEntry{}, err
	}
	mds, err := s.store.Maildomains(r.Context(), b.Name)
	if err != nil {
		return brandEntry{}, err
	}
	if mds == nil {
		mds = []string{}
	}
	return brandEntry{Name: b.Name, CreatedAt: timeOrNil(b.CreatedAt), UpdatedAt: timeOrNil(b.UpdatedAt), Domains: n, Maildomains: mds}, nil
}

// notFoundAs turns a store's "not found" into the precise answer p.
func notFoundAs(err error, p *problem) error {
	if errors.Is(err, keystore.ErrNotFound) {
		return p
	}
	return err
}

func (s *Server) adminListBrands(w http.ResponseWriter, r *http.Request) {
	brands, err := s.store.Brands(r.Context())
	if err != nil {
		s.fail(w, r, err)
		return
	}
	out := make([]brandEntry, 0, len(brands))
	for _, b := range brands {
		e, err := s.brandEntry(r, b)
		if err != nil {
			s.fail(w, r, err)
			return
		}
		out = append(out, e)
	}
	writeJSON(w, http.StatusOK, out)
}

func (s *Server) adminGetBrand(w http.ResponseWriter, r *http.Request) {
	b, err := s.store.Brand(r.Context(), pathParam(r, "brand"))
	if err != nil {
		s.fail(w, r, notFoundAs(err, errBrandNotFound))
		return
	}
	e, err := s.brandEntry(r, b)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, e)
}

func (s *Server) adminCreateBrand(w http.ResponseWriter, r *http.Request) {
	var body createBrandBody
	if err := decodeBody(w, r, &body, false); err != nil {
		s.fail(w, r, err)
		return
	}
	if err := domainname.ValidBrand(body.Name); err != nil {
		s.fail(w, r, badRequest("INVALID_BRAND", err.Error()))
		return
	}
	secret, err := s.svc.CreateBrand(r.Context(), body.Name, s.actor(r))
	if errors.Is(err, keystore.ErrConflict) {
		err = &problem{status: http.StatusConflict, code: "BRAND_EXISTS", title: "brand already exists"}
	}
	if err != nil {
		s.fail(w, r, err)
		return
	}
	w.Header().Set("Location", AdminBase+"/brands/"+body.Name)
	w.Header().Set("Cache-Control", "no-store")
	writeJSON(w, http.StatusCreated, brandSecret{Name: body.Name, Secret: secret})
}

func (s *Server) adminDeleteBrand(w http.ResponseWriter, r *http.Request) {
	brand := pathParam(r, "brand")
	err := s.svc.DeleteBrand(r.Context(), brand, s.actor(r))
	if errors.Is(err, keystore.ErrConflict) {
		err = &problem{status: http.StatusConflict, code: "BRAND_HAS_DOMAINS", title: "brand still holds DKIM domains; delete them first"}
	}
	if err != nil {
		s.fail(w, r, notFoundAs(err, errBrandNotFound))
		return
	}
	s.creds.forget(brand)
	w.WriteHeader(http.StatusNoContent)
}

func (s *Server) adminRotateSecret(w http.ResponseWriter, r *http.Request) {
	brand := pathParam(r, "brand")
	secret, err := s.svc.RotateSecret(r.Context(), brand, s.actor(r))
	if err != nil {
		s.fail(w, r, notFoundAs(err, errBrandNotFound))
		return
	}
	s.creds.forget(brand)
	w.Header().Set("Cache-Control", "no-store")
	writeJSON(w, http.StatusOK, brandSecret{Name: brand, Secret: secret})
}

func (s *Server) adminListMaildomains(w http.ResponseWriter, r *http.Request) {
	brand := pathParam(r, "brand")
	if _, err := s.store.Brand(r.Context(), brand); err != nil {
		s.fail(w, r, notFoundAs(err, errBrandNotFound))
		return
	}
	mds, err := s.store.Maildomains(r.Context(), brand)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	if mds == nil {
		mds = []string{}
	}
	writeJSON(w, http.StatusOK, mds)
}

// adminAddMaildomain registers a maildomain; registering one that is
// already there is 204 as well, so that provisioning scripts can retry.
func (s *Server) adminAddMaildomain(w http.ResponseWriter, r *http.Request) {
	brand := pathParam(r, "brand")
	domain, err := s.domainParam(r)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	ok, err := s.store.IsMaildomain(r.Context(), brand, domain)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	if !ok {
		err = s.svc.AddMaildomain(r.Context(), brand, domain, s.actor(r))
		if errors.Is(err, keystore.ErrConflict) {
			ok, err = s.store.IsMaildomain(r.Context(), brand, domain) // a concurrent add won
			if err == nil && !ok {
				err = &problem{status: http.StatusConflict, code: "CONFLICT", title: "conflicting change, try again"}
			}
		}
		if err != nil {
			s.fail(w, r, notFoundAs(err, errBrandNotFound))
			return
		}
	}
	w.WriteHeader(http.StatusNoContent)
}

func (s *Server) adminRemoveMaildomain(w http.ResponseWriter, r *http.Request) {
	domain, err := s.domainParam(r)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	// ?force=true deletes the domain's keys first, as DELETE of the brand
	// API does; without it a domain with keys is refused (409), as the
	// CLI refuses it.
	force := r.URL.Query().Get("force") == "true"
	if err := s.svc.RemoveMaildomain(r.Context(), pathParam(r, "brand"), domain, force, s.actor(r)); err != nil {
		s.fail(w, r, notFoundAs(err, errMaildomainMissing))
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

// adminAudit lists audit records newest first; ?before= is the id to
// continue below, as the Link header gives it.
func (s *Server) adminAudit(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	// One less than the store's page, which must hold the extra record that
	// tells whether a next page exists.
	limit, err := pageLimit(r, defaultLimit, keystore.MaxAuditPage-1)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	var before int64
	if v := q.Get("before"); v != "" {
		if before, err = strconv.ParseInt(v, 10, 64); err != nil || before < 1 {
			s.fail(w, r, badRequest("INVALID_PARAMETER", "before must be a positive integer"))
			return
		}
	}
	f := keystore.AuditFilter{Brand: q.Get("brand"), Domain: q.Get("domain"), BeforeID: before, Limit: limit + 1}
	if f.Domain != "" {
		if f.Domain, err = domainname.Normalize(f.Domain, ""); err != nil {
			s.fail(w, r, err)
			return
		}
	}
	recs, err := s.store.Audit(r.Context(), f)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	if len(recs) > limit {
		recs = recs[:limit]
		next := url.Values{"limit": {strconv.Itoa(limit)}, "before": {strconv.FormatInt(recs[limit-1].ID, 10)}}
		if f.Brand != "" {
			next.Set("brand", f.Brand)
		}
		if f.Domain != "" {
			next.Set("domain", f.Domain)
		}
		w.Header().Set("Link", fmt.Sprintf("<%s/audit?%s>; rel=\"next\"", AdminBase, next.Encode()))
	}
	out := make([]auditEntry, 0, len(recs))
	for _, a := range recs {
		out = append(out, auditEntry{ID: a.ID, At: timeOrNil(a.At), Actor: a.Actor, Action: a.Action, Brand: a.Brand,
			Domain: a.Domain, Selector: a.Selector, Fingerprint: a.Fingerprint, RequestID: a.RequestID, Detail: a.Detail})
	}
	writeJSON(w, http.StatusOK, out)
}
