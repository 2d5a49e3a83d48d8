package signer

import (
	"errors"
	"fmt"
)

// Refusal codes: why a message was not signed. They are stable strings
// that the HTTP endpoint puts in its error envelope and the milter logs;
// package signhttp's doc lists them with what each means, for MTA-side
// scripts: keep the two in step.
const (
	CodeNoFrom            = "no-from"
	CodeMultipleFrom      = "multiple-from"
	CodeBadFrom           = "bad-from"
	CodeHeaderUnparseable = "header-unparseable"
	CodeHeaderTooLarge    = "header-too-large"
	CodeBodyBareCR        = "body-bare-cr"
	CodeUnknownDomain     = "unknown-domain"
	CodeAmbiguousDomain   = "ambiguous-domain"
	CodeNoActiveKey       = "no-active-key"
)

// ErrRead wraps a failure to read the message from its source: the
// transport's problem (a client that went away, a truncated upload), not the
// message's and not dkimd's.
var ErrRead = errors.New("signer: reading the message failed")

// Refusal is a message that is not signed, and why. It is the caller's
// business (the message is not signable as it is), not a failure of dkimd:
// the HTTP endpoint answers it with 422 and the milter lets the message pass.
type Refusal struct {
	Code   string
	Reason string
}

func (r *Refusal) Error() string { return "signer: not signed: " + r.Reason }

func refuse(code, format string, args ...any) *Refusal {
	return &Refusal{Code: code, Reason: fmt.Sprintf(format, args...)}
}

// AsRefusal reports whether err is a refusal, and which.
func AsRefusal(err error) (*Refusal, bool) {
	var r *Refusal
	ok := errors.As(err, &r)
	return r, ok
}
