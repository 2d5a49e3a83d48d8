// Package domainname validates and normalises the maildomains brands send,
// and derives the DNS label under which their keys are published. It owns the
// naming rules of docs/api.md, "Names" and nothing else.
package domainname

import (
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"unicode/utf8"

	"golang.org/x/net/idna"
)

// Invalid is a domain that is not acceptable; its message says why and is fit
// to show a brand.
type Invalid struct{ Reason string }

func (e *Invalid) Error() string { return e.Reason }

// ErrLabelTooLong means the published owner name's first label would exceed
// 63 octets (docs/api.md, "Names": 422).
var ErrLabelTooLong = errors.New("domain label too long")

// profile maps IDNs to A-labels with the lookup rules browsers and resolvers
// use, and insists on LDH host names (no underscores, no wildcards).
var profile = idna.New(
	idna.MapForLookup(),
	idna.BidiRule(),
	idna.StrictDomainName(true),
	idna.ValidateLabels(true),
	idna.VerifyDNSLength(true),
	idna.Transitional(false),
)

// Normalize turns what a brand sent into the canonical maildomain: lower
// case, IDNA A-labels, no trailing dot. zone is the service's own zone, in
// which no customer domain may live.
func Normalize(in, zone string) (string, error) {
	s := strings.TrimSuffix(strings.TrimSpace(in), ".")
	switch {
	case s == "":
		return "", &Invalid{"domain is empty"}
	case len(s) > 253*4: // an upper bound before the IDNA work; the real check follows
		return "", &Invalid{"domain is longer than 253 octets"}
	case !utf8.ValidString(s):
		return "", &Invalid{"domain is not valid UTF-8"}
	case strings.Contains(s, "*"):
		return "", &Invalid{"wildcard domains are not accepted"}
	}
	if _, err := netip.ParseAddr(strings.Trim(s, "[]")); err == nil {
		return "", &Invalid{"an IP address is not a domain"}
	}
	a, err := profile.ToASCII(s)
	if err != nil {
		return "", &Invalid{fmt.Sprintf("not a valid host name: %v", err)}
	}
	a = strings.ToLower(a)
	// An A-label must itself pass as a host name; this refuses punycode that
	// decodes to something IDNA forbids, so a stored name always re-validates.
	if again, err := profile.ToASCII(a); err != nil || again != a {
		return "", &Invalid{"not a valid host name: its A-label form does not validate"}
	}
	if len(a) > 253 {
		return "", &Invalid{"domain is longer than 253 octets"}
	}
	labels := strings.Split(a, ".")
	if len(labels) < 2 {
		return "", &Invalid{"domain must have at least two labels"}
	}
	for _, l := range labels {
		if err := checkLabel(l); err != nil {
			return "", err
		}
	}
	if isAllDigits(labels[len(labels)-1]) {
		return "", &Invalid{"top-level label is numeric: not a host name"}
	}
	zone = strings.ToLower(strings.TrimSuffix(zone, "."))
	if zone != "" && (a == zone || strings.HasSuffix(a, "."+zone)) {
		return "", &Invalid{"domain lies inside the service zone " + zone}
	}
	return a, nil
}

func checkLabel(l string) error {
	switch {
	case l == "":
		return &Invalid{"domain has an empty label"}
	case len(l) > 63:
		return &Invalid{"a label of the domain is longer than 63 octets"}
	case l[0] == '-' || l[len(l)-1] == '-':
		return &Invalid{"a label of the domain starts or ends with a hyphen"}
	}
	for i := 0; i < len(l); i++ {
		c := l[i]
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-') {
			return &Invalid{fmt.Sprintf("character %q is not allowed in a host name", c)}
		}
	}
	return nil
}

func isAllDigits(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
}

// Label is the dashed form of a normalised domain used in published names:
// spamtrap.dk -> spamtrap-dk.
func Label(domain string) string {
	return strings.ReplaceAll(domain, ".", "-")
}

// LongestSelector is the longest selector a domain gets, which bounds its label.
func LongestSelector(ed25519 bool) string {
	return SelectorPair(ed25519)[1]
}

// CheckLabelFits reports ErrLabelTooLong when "<selector>-<label>" would not
// fit one DNS label for the longest selector the domain uses: 53 octets for
// RSA only, 45 with Ed25519.
func CheckLabelFits(label string, ed25519 bool) error {
	if len(LongestSelector(ed25519))+1+len(label) > 63 {
		return fmt.Errorf("%w: %q has %d octets, at most %d fit", ErrLabelTooLong, label, len(label), 63-1-len(LongestSelector(ed25519)))
	}
	return nil
}

// ValidBrand reports whether name is a valid brand: one DNS label of lower-case
// letters, digits and inner hyphens, at most 63 octets.
func ValidBrand(name string) error {
	if name == "" || len(name) > 63 {
		return &Invalid{"brand must be 1 to 63 octets"}
	}
	if name[0] == '-' || name[len(name)-1] == '-' {
		return &Invalid{"brand must not start or end with a hyphen"}
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-') {
			return &Invalid{"brand may hold only lower-case letters, digits and hyphens"}
		}
	}
	return nil
}
