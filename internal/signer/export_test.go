package signer

// OutagePlan is what the outage directory would sign mail from domain with
// right now: d= and the number of keys; "" and 0 when nothing.
func OutagePlan(s *Signer, domain string) (string, int) {
	d := s.dir.Load()
	if d == nil {
		return "", 0
	}
	p := d.fallback(domain, s.opts.Zone)
	if p == nil {
		return "", 0
	}
	return p.domain, len(p.keys)
}

// RememberedFroms is how many From values the signer keeps the domain of.
func RememberedFroms(s *Signer) int {
	s.cache.mu.RLock()
	defer s.cache.mu.RUnlock()
	return len(s.cache.froms)
}
