package rotation

import (
	"errors"
	"time"
)

// ErrRotationPending means a normal rotation is already scheduled (API 409).
var ErrRotationPending = errors.New("rotation: a rotation is already pending")

// Verdicts of a customer's CNAME for one selector (docs/api.md, `GET …/dns`).
const (
	VerdictOK          = "ok"
	VerdictMissing     = "missing"
	VerdictWrongTarget = "wrong-target"
	VerdictKeyMismatch = "key-mismatch"
)

// SelectorCheck is what the customer's DNS says about one selector.
type SelectorCheck struct {
	Selector       string
	CNAMEName      string // selector1._domainkey.example.com
	CNAMETarget    string // selector1-example-com._domainkey.oxcloud.zone: what it must point to
	AnsweredTarget string // the CNAME target public DNS answered, "" when none
	AnsweredTXT    string // the TXT at the end of the chain, strings joined, "" when none
	Verdict        string
	Error          string // a resolver failure, when the check could not be made
}

// DNSReport is the result of checking every selector of a domain.
type DNSReport struct {
	Domain    string
	CheckedAt time.Time
	Selectors []SelectorCheck
}
