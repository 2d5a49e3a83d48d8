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

// readHeader reads the header block of a message from br: every line up to
// and including the empty line that ends it. A message without a body (EOF
// before an empty line) is all header; eoh then reports false so that the
// caller can supply the separator the signer needs. The body is left in br.
func readHeader(br *bufio.Reader, max int) (header []byte, eoh bool, err error) {
	var buf bytes.Buffer
	for {
		line, err := br.ReadSlice('\n')
		if buf.Len()+len(line) > max {
			return nil, false, refuse(CodeHeaderTooLarge, "the header block is larger than %d bytes", max)
		}
		if errors.Is(err, bufio.ErrBufferFull) {
			buf.Write(line)
			continue
		}
		if err != nil && !errors.Is(err, io.EOF) {
			return nil, false, err
		}
		atLineStart := buf.Len() == 0 || buf.Bytes()[buf.Len()-1] == '\n'
		buf.Write(line)
		if atLineStart && (string(line) == "\r\n" || string(line) == "\n") {
			return buf.Bytes(), true, nil
		}
		if err != nil { // EOF
			return buf.Bytes(), false, nil
		}
	}
}

// field is one header field: its name as written and its value unfolded.
type field struct {
	name, value string
}

// parseHeader splits a header block (ending with or without its empty line)
// into fields. It refuses what RFC 5322 §2.2 does not allow, since a header
// that does not parse cannot be signed in a way every verifier reads alike.
func parseHeader(h []byte) ([]field, error) {
	var fields []field
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
			if len(fields) == 0 {
				return nil, refuse(CodeHeaderUnparseable, "the header block starts with a continuation line")
			}
			fields[len(fields)-1].value += string(line)
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
		fields = append(fields, field{name: string(name), value: string(value)})
	}
	return fields, nil
}

// addressParser decodes RFC 2047 display names in any charset well enough
// to find the address; the display name itself is never used.
var addressParser = mail.AddressParser{WordDecoder: &mime.WordDecoder{
	CharsetReader: func(_ string, r io.Reader) (io.Reader, error) { return r, nil },
}}

// fromDomain returns the domain of the single RFC 5322 From address.
func fromDomain(fields []field) (string, error) {
	var from []string
	for _, f := range fields {
		if strings.EqualFold(f.name, "From") {
			from = append(from, f.value)
		}
	}
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
