package httpapi

import (
	"fmt"
	"net/http"
	"net/url"
	"strconv"
)

// maildomainEntry is one of a brand's maildomains as the brand sees it:
// whether it holds DKIM keys yet.
type maildomainEntry struct {
	Domain  string `json:"domain"`
	HasKeys bool   `json:"hasKeys"`
}

// listBrandMaildomains is GET /{brand}/maildomains: the maildomains the
// operator registered for the brand (the guide's prerequisite for a PUT),
// read-only, so that a brand can see which still lack keys. ?hasKeys=
// filters; pages as the domain list does (?limit=, ?after=, Link).
func (s *Server) listBrandMaildomains(w http.ResponseWriter, r *http.Request) {
	brand := pathParam(r, "brand")
	q := r.URL.Query()
	limit, err := pageLimit(r, defaultLimit, maxLimit)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	var filter *bool
	if v := q.Get("hasKeys"); v != "" {
		b, err := strconv.ParseBool(v)
		if err != nil {
			s.fail(w, r, badRequest("INVALID_PARAMETER", "hasKeys must be true or false"))
			return
		}
		filter = &b
	}
	mds, err := s.store.Maildomains(r.Context(), brand)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	held, err := s.heldDomains(r, brand)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	// Continue after `after` by its position in the store's order, not by
	// comparing strings, so that pages follow the database's collation.
	start := 0
	if after := q.Get("after"); after != "" {
		for i, md := range mds {
			if md == after {
				start = i + 1
				break
			}
			if md > after { // `after` went away meanwhile
				start = i
				break
			}
			start = i + 1
		}
	}
	out := []maildomainEntry{}
	for _, md := range mds[start:] {
		e := maildomainEntry{Domain: md, HasKeys: held[md]}
		if filter != nil && e.HasKeys != *filter {
			continue
		}
		if len(out) == limit {
			next := url.Values{"limit": {strconv.Itoa(limit)}, "after": {out[limit-1].Domain}}
			if filter != nil {
				next.Set("hasKeys", strconv.FormatBool(*filter))
			}
			w.Header().Set("Link", fmt.Sprintf("<%s/%s/maildomains?%s>; rel=\"next\"", BrandBase, url.PathEscape(brand), next.Encode()))
			break
		}
		out = append(out, e)
	}
	writeJSON(w, http.StatusOK, out)
}

// heldDomains is the set of the brand's domains that hold keys, read a
// page of the domain list at a time.
func (s *Server) heldDomains(r *http.Request, brand string) (map[string]bool, error) {
	held := map[string]bool{}
	for after := ""; ; {
		ds, err := s.store.Domains(r.Context(), brand, after, maxLimit)
		if err != nil {
			return nil, err
		}
		for _, d := range ds {
			held[d.Name] = true
		}
		if len(ds) < maxLimit {
			return held, nil
		}
		after = ds[len(ds)-1].Name
	}
}
