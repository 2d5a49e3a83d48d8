package rotation

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"time"

	"github.com/miekg/dns"

	"dkimd/internal/dkimkey"
	"dkimd/internal/keystore"
)

// Checker looks up a customer's selector CNAMEs through a recursive resolver
// and compares what it finds with the keys dkimd publishes.
type Checker struct {
	// Servers are the resolvers, host:port, tried in turn.
	Servers []string
	// Zone is dkimd's own zone, where the CNAMEs must point.
	Zone    string
	Timeout time.Duration
}

// NewChecker uses resolver (host:port) or, when it is empty, the system's
// resolvers from /etc/resolv.conf.
func NewChecker(resolver, zone string) (*Checker, error) {
	c := &Checker{Zone: strings.ToLower(strings.TrimSuffix(zone, ".")), Timeout: 3 * time.Second}
	if resolver != "" {
		c.Servers = []string{resolver}
		return c, nil
	}
	conf, err := dns.ClientConfigFromFile("/etc/resolv.conf")
	if err != nil {
		return nil, fmt.Errorf("rotation: system resolvers: %w", err)
	}
	for _, s := range conf.Servers {
		c.Servers = append(c.Servers, net.JoinHostPort(s, conf.Port))
	}
	if len(c.Servers) == 0 {
		return nil, errors.New("rotation: /etc/resolv.conf names no resolver; set --resolver")
	}
	return c, nil
}

// errResolver marks a check that could not be made: a timeout, SERVFAIL,
// or an answer that does not belong to the question. Such a check changes
// no state.
var errResolver = errors.New("resolver failure")

// CNAMEName is the name the customer publishes for a selector.
func CNAMEName(selector, domain string) string { return selector + "._domainkey." + domain }

// TXTName is the name dkimd publishes a domain selector's key under.
func TXTName(selector, label, zone string) string {
	return selector + "-" + label + "._domainkey." + zone
}

// CheckKey checks one selector of domain against the key dkimd publishes
// for it. A non-nil error means the check could not be made; the returned
// SelectorCheck then carries the error text and verdict missing.
func (c *Checker) CheckKey(ctx context.Context, d keystore.Domain, k keystore.Key) (SelectorCheck, error) {
	sc := SelectorCheck{
		Selector:    k.Selector,
		CNAMEName:   CNAMEName(k.Selector, d.Name),
		CNAMETarget: TXTName(k.Selector, d.Label, c.Zone),
	}
	target, txt, found, err := c.resolve(ctx, sc.CNAMEName)
	if err != nil {
		sc.Verdict, sc.Error = VerdictMissing, err.Error()
		return sc, err
	}
	sc.AnsweredTarget, sc.AnsweredTXT = target, txt
	switch {
	case !found:
		sc.Verdict = VerdictMissing
	case !strings.EqualFold(target, sc.CNAMETarget):
		sc.Verdict = VerdictWrongTarget
	case !samePublicKey(txt, k):
		sc.Verdict = VerdictKeyMismatch
	default:
		sc.Verdict = VerdictOK
	}
	return sc, nil
}

func samePublicKey(txt string, k keystore.Key) bool {
	if txt == "" {
		return false
	}
	alg, p, err := dkimkey.ParseTXTValue(txt)
	return err == nil && alg == k.Algorithm && bytes.Equal(p, k.PublicKey)
}

// maxChain bounds CNAME chains, as resolvers do.
const maxChain = 8

// resolve asks for TXT at name and follows the CNAME chain. target is the
// first CNAME's target ("" when name has none), txt the joined strings of
// the TXT at the end of the chain; found says whether DNS has a CNAME or a
// TXT there at all.
func (c *Checker) resolve(ctx context.Context, name string) (target, txt string, found bool, err error) {
	qname := dns.Fqdn(strings.ToLower(name))
	for hop := 0; hop < maxChain; hop++ {
		msg, err := c.exchange(ctx, qname)
		if err != nil {
			return "", "", false, err
		}
		switch msg.Rcode {
		case dns.RcodeSuccess:
		case dns.RcodeNameError:
			return target, "", target != "", nil
		default:
			return "", "", false, fmt.Errorf("%w: resolver answered %s for %s", errResolver, dns.RcodeToString[msg.Rcode], qname)
		}
		// Walk the chain inside this answer; records for other names are
		// a lying or broken resolver.
		owner := qname
		var next string
		var txts []string
		for seen := 0; seen <= maxChain; seen++ {
			var cname string
			for _, rr := range msg.Answer {
				if !strings.EqualFold(rr.Header().Name, owner) {
					continue
				}
				switch rr := rr.(type) {
				case *dns.CNAME:
					cname = rr.Target
				case *dns.TXT:
					txts = append(txts, strings.Join(rr.Txt, ""))
				}
			}
			if cname == "" {
				break
			}
			if target == "" {
				target = strings.TrimSuffix(strings.ToLower(cname), ".")
			}
			owner, next = cname, cname
		}
		for _, rr := range msg.Answer {
			if t := rr.Header().Rrtype; t != dns.TypeCNAME && t != dns.TypeTXT && t != dns.TypeRRSIG {
				return "", "", false, fmt.Errorf("%w: unexpected %s record in the answer for %s", errResolver, dns.TypeToString[t], qname)
			}
		}
		switch {
		case len(txts) > 1:
			// Two TXT records at one name: a verifier may pick either.
			return target, strings.Join(txts, " | "), true, nil
		case len(txts) == 1:
			return target, txts[0], true, nil
		case next != "" && !strings.EqualFold(next, qname):
			// The resolver gave the CNAME without its target's TXT: ask for
			// the target ourselves.
			qname = next
			continue
		}
		return target, "", target != "", nil
	}
	return "", "", false, fmt.Errorf("%w: CNAME chain at %s longer than %d", errResolver, name, maxChain)
}

func (c *Checker) exchange(ctx context.Context, qname string) (*dns.Msg, error) {
	q := new(dns.Msg)
	q.SetQuestion(qname, dns.TypeTXT)
	q.RecursionDesired = true
	q.SetEdns0(4096, false)
	var lastErr error
	for _, server := range c.Servers {
		cl := &dns.Client{Net: "udp", Timeout: c.Timeout}
		msg, _, err := cl.ExchangeContext(ctx, q, server)
		if err == nil && msg.Truncated {
			cl.Net = "tcp"
			msg, _, err = cl.ExchangeContext(ctx, q, server)
		}
		if err != nil {
			lastErr = err
			continue
		}
		if len(msg.Question) != 1 || !strings.EqualFold(msg.Question[0].Name, qname) || msg.Question[0].Qtype != dns.TypeTXT {
			lastErr = fmt.Errorf("answer to another question")
			continue
		}
		return msg, nil
	}
	return nil, fmt.Errorf("%w: %s: %w", errResolver, qname, lastErr)
}
