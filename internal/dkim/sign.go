package dkim

import (
	"crypto"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"strconv"
	"time"
)

// Signature is what one DKIM-Signature says besides the hashes.
type Signature struct {
	Domain   string // d=
	Selector string // s=
	// Key makes b=. Its public key says the algorithm: *rsa.PublicKey for
	// rsa-sha256 (RFC 6376 §3.3.1), ed25519.PublicKey for ed25519-sha256
	// (RFC 8463). It is only ever called through crypto.Signer, so any
	// implementation serves (Go's, or one backed by another library).
	Key     crypto.Signer
	Time    time.Time     // t=
	Expiry  time.Duration // x= is t= plus this; 0 writes no x=
	Headers []string      // h=, from Header.Select
}

// maxLine is where the field is folded: RFC 5322 §2.1.1 asks for lines of
// at most 78 characters.
const maxLine = 78

// Sign makes the DKIM-Signature header field of a message: headerData is
// the canonical form of the fields sig.Headers names (Header.Select),
// bodyHash the body's (BodyHash.Sum). The field comes folded, with CRLF line
// ends and a final CRLF, ready to prepend to the message.
//
// The tags are those of RFC 6376 §3.5, relaxed/relaxed and SHA-256 always;
// no l= (a length limit lets anyone append to the body), x= only when asked.
func Sign(headerData, bodyHash []byte, sig *Signature) (string, error) {
	var alg string
	var opts crypto.SignerOpts
	switch sig.Key.Public().(type) {
	case *rsa.PublicKey:
		// PKCS#1 v1.5 over the SHA-256 digest (RFC 6376 §3.3.1).
		alg, opts = "rsa-sha256", crypto.SHA256
	case ed25519.PublicKey:
		// PureEdDSA over the SHA-256 digest (RFC 8463 §3): the digest is
		// the message Ed25519 signs, so no hash is named.
		alg, opts = "ed25519-sha256", crypto.Hash(0)
	default:
		return "", fmt.Errorf("dkim: unsupported key type %T", sig.Key.Public())
	}
	if sig.Domain == "" || sig.Selector == "" || len(sig.Headers) == 0 {
		return "", errors.New("dkim: a signature needs a domain, a selector and header fields")
	}
	f := folder{b: make([]byte, 0, 1024)}
	f.b = append(f.b, "DKIM-Signature:"...)
	f.col = len(f.b)
	f.word("v=1;")
	tag(&f, "a=", alg)
	f.word("c=relaxed/relaxed;")
	tag(&f, "d=", sig.Domain)
	tag(&f, "s=", sig.Selector)
	var num [20]byte
	t := sig.Time.Unix()
	tag(&f, "t=", strconv.AppendInt(num[:0], t, 10))
	if sig.Expiry > 0 {
		tag(&f, "x=", strconv.AppendInt(num[:0], t+int64(sig.Expiry/time.Second), 10))
	}
	// h= may fold after any colon (RFC 6376 §3.5, sig-h-tag).
	for i, name := range sig.Headers {
		end := byte(':')
		if i == len(sig.Headers)-1 {
			end = ';'
		}
		if i == 0 {
			f.space(len("h=") + len(name) + 1)
			f.b = append(f.b, "h="...)
		} else {
			f.room(len(name) + 1)
		}
		f.b = append(f.b, name...)
		f.b = append(f.b, end)
	}
	var bh [44]byte // the base64 of a SHA-256 digest
	tag(&f, "bh=", base64.StdEncoding.AppendEncode(bh[:0], bodyHash))
	f.word("b=")

	// The field as hashed: b= empty, relaxed, without its final CRLF
	// (RFC 6376 §3.7). The canonical form is built in f.b's spare room,
	// which b= overwrites once it has been hashed.
	h := sha256.New()
	h.Write(headerData)
	canon := appendRelaxed(f.b[len(f.b):], f.b, field{start: 0, nameEnd: len("DKIM-Signature"), colon: len("DKIM-Signature"), end: len(f.b)})
	h.Write(canon[:len(canon)-2])
	var digest [sha256.Size]byte
	b, err := sig.Key.Sign(rand.Reader, h.Sum(digest[:0]), opts)
	if err != nil {
		return "", fmt.Errorf("dkim: sign: %w", err)
	}
	// b= folds anywhere: FWS inside base64 is ignored (RFC 6376 §2.4).
	var enc [684]byte // the base64 of an RSA-4096 signature
	for rest := base64.StdEncoding.AppendEncode(enc[:0], b); len(rest) > 0; {
		room := maxLine - f.col
		if room <= 0 {
			f.fold()
			continue
		}
		n := min(room, len(rest))
		f.b = append(f.b, rest[:n]...)
		f.col += n
		rest = rest[n:]
	}
	f.b = append(f.b, '\r', '\n')
	return string(f.b), nil
}

// tag appends a tag of the field: name (with its "="), value and ";", as
// one word.
func tag[T string | []byte](f *folder, name string, value T) {
	f.space(len(name) + len(value) + 1)
	f.b = append(f.b, name...)
	f.b = append(f.b, value...)
	f.b = append(f.b, ';')
}

// folder builds a folded header field.
type folder struct {
	b   []byte
	col int // length of the current line
}

// word appends a space and w, or a fold and w when w does not fit.
func (f *folder) word(w string) {
	f.space(len(w))
	f.b = append(f.b, w...)
}

// space starts a word of n bytes: a space before it, or a fold when it
// does not fit on the line. The caller appends the word.
func (f *folder) space(n int) {
	if f.col+1+n > maxLine {
		f.fold()
	} else {
		f.b = append(f.b, ' ')
		f.col++
	}
	f.col += n
}

// room makes room for n bytes glued to what precedes them: a fold when
// they do not fit. The caller appends them.
func (f *folder) room(n int) {
	if f.col+n > maxLine {
		f.fold()
	}
	f.col += n
}

func (f *folder) fold() {
	f.b = append(f.b, "\r\n\t"...)
	f.col = 1
}
