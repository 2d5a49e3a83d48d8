package domainname

// Every name dkimd publishes or asks a customer to create is built here
// (docs/api.md, "Names"), so that the zone, the API, the rotation checks
// and the signer can never disagree on one.

// Selectors. A domain always has the RSA pair; one with Ed25519 also has
// the Ed25519 pair, rotated the same way.
const (
	Selector1        = "selector1"
	Selector2        = "selector2"
	Selector1Ed25519 = "selector1-ed25519"
	Selector2Ed25519 = "selector2-ed25519"
)

// AllSelectors is every selector in the order of every response: the RSA
// pair, then the Ed25519 pair.
var AllSelectors = []string{Selector1, Selector2, Selector1Ed25519, Selector2Ed25519}

// SelectorPair is the two slots of one algorithm, first the one a new
// domain signs with.
func SelectorPair(ed25519 bool) [2]string {
	if ed25519 {
		return [2]string{Selector1Ed25519, Selector2Ed25519}
	}
	return [2]string{Selector1, Selector2}
}

// SelectorRank is a selector's place in AllSelectors, for sorting; an
// unknown selector sorts last.
func SelectorRank(selector string) int {
	for i, s := range AllSelectors {
		if s == selector {
			return i
		}
	}
	return len(AllSelectors)
}

// TXTOwner is where a domain's key for selector is published in the
// service's zone: selector1-spamtrap-dk._domainkey.oxcloud.zone. It is
// also the target of the customer's CNAME.
func TXTOwner(selector, domain, zone string) string {
	return LabelTXTOwner(selector, Label(domain), zone)
}

// LabelTXTOwner is TXTOwner for a domain whose Label is at hand (the store
// keeps it), sparing its recomputation on the zone's load path.
func LabelTXTOwner(selector, label, zone string) string {
	return selector + "-" + label + "._domainkey." + zone
}

// BrandTXTOwner is where a brand's fallback key is published, under the
// brand's own name in the zone: selector1._domainkey.acme.oxcloud.zone.
func BrandTXTOwner(selector, brand, zone string) string {
	return selector + "._domainkey." + brand + "." + zone
}

// BrandSigningDomain is the d= of a brand's fallback signatures.
func BrandSigningDomain(brand, zone string) string { return brand + "." + zone }

// CNAMEName is the name the customer creates in its own DNS for selector:
// selector1._domainkey.spamtrap.dk.
func CNAMEName(selector, domain string) string { return selector + "._domainkey." + domain }
