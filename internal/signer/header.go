package signer

import (
	"bufio"
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

// addressParser decodes RFC 2047 display names in any charset well enough
// to find the address; the display name itself is never used.
var addressParser = mail.AddressParser{WordDecoder: &mime.WordDecoder{
	CharsetReader: func(_ string, r io.Reader) (io.Reader, error) { return r, nil },
}}

// fromDomain returns the domain of the single RFC 5322 From address, given
// the values of the From fields (a field name with white space before its
// colon counts: dkim.Header reads it as verifiers do).
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
