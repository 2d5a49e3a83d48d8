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
	"dkimd/internal/domainname"
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

// CheckKey checks one selector of domain against the key dkimd publishes
// for it. A non-nil error means the check could not be made; the returned
// SelectorCheck then carries the error text and verdict missing.
func (c *Checker) CheckKey(ctx context.Context, d keystore.Domain, k keystore.Key) (SelectorCheck, error) {
	sc := SelectorCheck{
		Selector:    k.Selector,
		CNAMEName:   domainname.CNAMEName(k.Selector, d.Name),
		CNAMETarget: domainname.LabelTXTOwner(k.Selector, d.Label, c.Zone),
	}
	chain, txt, err := c.resolve(ctx, sc.CNAMEName)
	if err != nil {
		sc.Verdict, sc.Error = VerdictMissing, err.Error()
		return sc, err
	}
	sc.AnsweredTarget, sc.AnsweredTXT = strings.Join(chain, " -> "), txt
	// A chain through names of the customer's own still works, as long as
	// it ends at our name: rotation changes only what our name holds.
	reaches := false
	for _, name := range chain {
		reaches = reaches || strings.EqualFold(name, sc.CNAMETarget)
	}
	switch {
	case len(chain) == 0 && txt == "":
		sc.Verdict = VerdictMissing
	case !reaches:
		// Includes a TXT published at the name itself: it verifies today
		// and breaks at the next rotation.
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

// resolve asks for TXT at name and follows the CNAME chain. chain lists the
// CNAME targets in order (none when name has no CNAME), txt is the joined
// strings of the TXT at the end of the chain ("" when none; several
// records are joined with " | ", which never matches a key).
func (c *Checker) resolve(ctx context.Context, name string) (chain []string, txt string, err error) {
	qname := dns.Fqdn(strings.ToLower(name))
	for range maxChain {
		msg, err := c.exchange(ctx, qname)
		if err != nil {
			return nil, "", err
		}
		if msg.Rcode != dns.RcodeSuccess && msg.Rcode != dns.RcodeNameError {
			return nil, "", fmt.Errorf("%w: resolver answered %s for %s", errResolver, dns.RcodeToString[msg.Rcode], qname)
		}
		for _, rr := range msg.Answer {
			if t := rr.Header().Rrtype; t != dns.TypeCNAME && t != dns.TypeTXT && t != dns.TypeRRSIG {
				return nil, "", fmt.Errorf("%w: unexpected %s record in the answer for %s", errResolver, dns.TypeToString[t], qname)
			}
		}
		// Walk the chain inside this answer; records of names off the
		// chain are ignored.
		owner := qname
		var txts []string
		for range maxChain + 1 {
			next := ""
			for _, rr := range msg.Answer {
				if !strings.EqualFold(rr.Header().Name, owner) {
					continue
				}
				switch rr := rr.(type) {
				case *dns.CNAME:
					next = rr.Target
				case *dns.TXT:
					txts = append(txts, strings.Join(rr.Txt, ""))
				}
			}
			if next == "" {
				break
			}
			chain = append(chain, strings.TrimSuffix(strings.ToLower(next), "."))
			if len(chain) > maxChain {
				return nil, "", fmt.Errorf("%w: CNAME chain at %s longer than %d", errResolver, name, maxChain)
			}
			owner = next
		}
		switch {
		case len(txts) > 0:
			return chain, strings.Join(txts, " | "), nil
		case msg.Rcode == dns.RcodeNameError || strings.EqualFold(owner, qname):
			// The end of the chain does not exist, or exists without TXT.
			return chain, "", nil
		}
		// The resolver gave the CNAME without its target's TXT: ask for
		// the target ourselves.
		qname = dns.Fqdn(owner)
	}
	return nil, "", fmt.Errorf("%w: CNAME chain at %s longer than %d", errResolver, name, maxChain)
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
