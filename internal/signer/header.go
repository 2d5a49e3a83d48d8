package signer

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"mime"
	"net/mail"
	"strings"
)

// readHeader reads the header block of a message from br, appending it to
// buf: every line up to and including the empty line that ends it. A message
// without a body (EOF before an empty line) is all header; eoh then reports
// false so that the caller can supply the separator the signer needs. The
// body is left in br.
func readHeader(br *bufio.Reader, buf []byte, max int) (header []byte, eoh bool, err error) {
	for {
		line, err := br.ReadSlice('\n')
		if len(buf)+len(line) > max {
			return nil, false, refuse(CodeHeaderTooLarge, "the header block is larger than %d bytes", max)
		}
		if errors.Is(err, bufio.ErrBufferFull) {
			buf = append(buf, line...)
			continue
		}
		if err != nil && !errors.Is(err, io.EOF) {
			return nil, false, err
		}
		atLineStart := len(buf) == 0 || buf[len(buf)-1] == '\n'
		buf = append(buf, line...)
		if atLineStart && (string(line) == "\r\n" || string(line) == "\n") {
			return buf, true, nil
		}
		if err != nil { // EOF
			return buf, false, nil
		}
	}
}

// fromFields checks that a header block (ending with or without its empty
// line) is a sequence of header fields, and returns the values of its From
// fields, unfolded. It refuses what RFC 5322 §2.2 does not allow, since a
// header that does not parse cannot be signed in a way every verifier reads
// alike. Only From is kept: it is all the key choice needs, and copying
// every field would be most of the garbage a message makes.
func fromFields(h []byte) ([]string, error) {
	var from []string
	started, inFrom := false, false
	for len(h) > 0 {
		var line []byte
		if i := bytes.IndexByte(h, '\n'); i >= 0 {
			line, h = h[:i], h[i+1:]
		} else {
			line, h = h, nil
		}
		line = bytes.TrimSuffix(line, []byte("\r"))
		if len(line) == 0 {
			break // the empty line that ends the header
		}
		if line[0] == ' ' || line[0] == '\t' {
			if !started {
				return nil, refuse(CodeHeaderUnparseable, "the header block starts with a continuation line")
			}
			if inFrom {
				from[len(from)-1] += string(line)
			}
			continue
		}
		name, value, ok := bytes.Cut(line, []byte(":"))
		if !ok {
			return nil, refuse(CodeHeaderUnparseable, "header line %q has no colon", truncate(string(line), 60))
		}
		name = bytes.TrimRight(name, " \t") // obs-fields allow WSP before the colon
		if len(name) == 0 {
			return nil, refuse(CodeHeaderUnparseable, "a header field has an empty name")
		}
		for _, c := range name {
			if c < 33 || c > 126 {
				return nil, refuse(CodeHeaderUnparseable, "header field name %q has a character RFC 5322 does not allow", truncate(string(name), 60))
			}
		}
		started = true
		inFrom = bytes.EqualFold(name, []byte("From"))
		if inFrom {
			from = append(from, string(value))
		}
	}
	return from, nil
}

// addressParser decodes RFC 2047 display names in any charset well enough
// to find the address; the display name itself is never used.
var addressParser = mail.AddressParser{WordDecoder: &mime.WordDecoder{
	CharsetReader: func(_ string, r io.Reader) (io.Reader, error) { return r, nil },
}}

// fromDomain returns the domain of the single RFC 5322 From address, given
// the values of the From fields.
func fromDomain(from []string) (string, error) {
	switch len(from) {
	case 0:
		return "", refuse(CodeNoFrom, "the message has no From header field")
	case 1:
	default:
		return "", refuse(CodeMultipleFrom, "the message has %d From header fields", len(from))
	}
	// Raw 8-bit display names in a legacy charset are common and harmless:
	// only the address matters here, so they are masked before parsing.
	addrs, err := addressParser.ParseList(strings.ToValidUTF8(from[0], "?"))
	if err != nil {
		return "", refuse(CodeBadFrom, "the From header field does not parse: %v", err)
	}
	switch len(addrs) {
	case 0:
		return "", refuse(CodeNoFrom, "the From header field holds no address")
	case 1:
	default:
		return "", refuse(CodeMultipleFrom, "the From header field holds %d addresses", len(addrs))
	}
	at := strings.LastIndexByte(addrs[0].Address, '@')
	if at < 0 {
		return "", refuse(CodeBadFrom, "the From address %q has no domain", truncate(addrs[0].Address, 80))
	}
	return addrs[0].Address[at+1:], nil
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}
