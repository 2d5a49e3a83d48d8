package dkim

import (
	"bytes"
	"fmt"
)

// Header is a parsed header block: where each field starts and ends in the
// bytes it was parsed from. It holds on to those bytes, so it is valid only
// while they are; Select copies what a signature needs.
type Header struct {
	raw    []byte
	fields []field
}

// field is one header field: raw[start:end] is all of it, continuation
// lines and line ends included; raw[start:nameEnd] its name, without the
// white space an obsolete-syntax field may have before its colon; raw[colon]
// the colon.
type field struct {
	start, nameEnd, colon, end int
}

// SyntaxError is a header block that verifiers would not all read the way
// the signer does, so it is not signed. Line counts from 1.
type SyntaxError struct {
	Line   int
	Reason string
}

func (e *SyntaxError) Error() string { return e.Reason }

func syntaxError(line int, format string, args ...any) *SyntaxError {
	return &SyntaxError{Line: line, Reason: fmt.Sprintf("header line %d ", line) + fmt.Sprintf(format, args...)}
}

// Parse reads a header block: header fields, with bare LF or CRLF line ends,
// with or without the empty line that ends the block. It reuses h's memory.
//
// It refuses (a *SyntaxError naming the line) what receivers split or read
// differently, since a field that one verifier sees and another does not
// makes a signature that verifies somewhere and fails elsewhere, or one that
// someone can extend:
//   - a NUL anywhere (C implementations end the field there);
//   - a CR that is not followed by LF (some take it for a line end, others
//     for a character of the field);
//   - a line that is neither a field (a name of printable ASCII, optional
//     white space, a colon: RFC 5322 §3.6.8 and the obs-optional syntax of
//     §4.5) nor a continuation (a line that starts with white space, RFC
//     5322 §2.2.3), or a continuation with no field before it;
//   - anything after the empty line (Parse takes a header block, not a
//     message).
//
// 8-bit bytes in field values are signed as they are (RFC 6532 allows UTF-8
// there, and relaxed canonicalization does not look inside values).
func (h *Header) Parse(block []byte) error {
	h.raw, h.fields = block, h.fields[:0]
	line := 0
	for pos := 0; pos < len(block); {
		line++
		end := len(block) // the line is block[pos:end], then its line end
		next := end
		if i := bytes.IndexByte(block[pos:], '\n'); i >= 0 {
			end, next = pos+i, pos+i+1
			if end > pos && block[end-1] == '\r' {
				end--
			}
		}
		l := block[pos:end]
		if bytes.IndexByte(l, 0) >= 0 {
			return syntaxError(line, "contains a NUL byte")
		}
		if bytes.IndexByte(l, '\r') >= 0 {
			return syntaxError(line, "contains a CR that is not followed by LF")
		}
		switch {
		case len(l) == 0:
			if next < len(block) {
				return syntaxError(line+1, "follows the empty line that ends the header block")
			}
			return nil
		case l[0] == ' ' || l[0] == '\t':
			if len(h.fields) == 0 {
				return syntaxError(line, "is a continuation line with no header field before it")
			}
			h.fields[len(h.fields)-1].end = next
		default:
			colon := bytes.IndexByte(l, ':')
			nameEnd := colon
			for nameEnd > 0 && (l[nameEnd-1] == ' ' || l[nameEnd-1] == '\t') {
				nameEnd--
			}
			if colon < 0 || nameEnd == 0 || !isFieldName(l[:nameEnd]) {
				return syntaxError(line, "is neither a header field nor a continuation line: %q", truncate(l, 60))
			}
			h.fields = append(h.fields, field{start: pos, nameEnd: pos + nameEnd, colon: pos + colon, end: next})
		}
		pos = next
	}
	return nil
}

// Reset drops h's reference to the bytes it parsed, keeping its memory.
func (h *Header) Reset() { h.raw, h.fields = nil, h.fields[:0] }

// isFieldName reports whether b is a field name of RFC 5322 §3.6.8:
// printable US-ASCII other than the colon.
func isFieldName(b []byte) bool {
	for _, c := range b {
		if c < 33 || c > 126 || c == ':' {
			return false
		}
	}
	return true
}

func truncate(b []byte, n int) string {
	if len(b) <= n {
		return string(b)
	}
	return string(b[:n]) + "…"
}

// is reports whether the field's name is name, compared as RFC 5322 does:
// case-insensitively.
func (h *Header) is(f field, name string) bool {
	n := h.raw[f.start:f.nameEnd]
	if len(n) != len(name) {
		return false
	}
	for i := range n {
		a, b := n[i], name[i]
		if a != b && lower(a) != lower(b) {
			return false
		}
	}
	return true
}

func lower(c byte) byte {
	if 'A' <= c && c <= 'Z' {
		return c + 'a' - 'A'
	}
	return c
}

// Count is how many fields are named name.
func (h *Header) Count(name string) int {
	n := 0
	for _, f := range h.fields {
		if h.is(f, name) {
			n++
		}
	}
	return n
}

// Values appends the value of every field named name, top to bottom,
// unfolded (line ends removed, RFC 5322 §2.2.3) and otherwise as written.
func (h *Header) Values(dst []string, name string) []string {
	for _, f := range h.fields {
		if !h.is(f, name) {
			continue
		}
		// The field's own line end first: only a folded value has more.
		v := bytes.TrimSuffix(bytes.TrimSuffix(h.raw[f.colon+1:f.end], []byte{'\n'}), []byte{'\r'})
		if bytes.IndexByte(v, '\n') >= 0 {
			v = bytes.ReplaceAll(bytes.ReplaceAll(v, []byte("\r"), nil), []byte("\n"), nil)
		}
		dst = append(dst, string(v))
	}
	return dst
}

// appendRelaxed appends the relaxed canonical form of a header field (RFC
// 6376 §3.4.2): name lower-cased, the value unfolded, runs of white space
// made one space, white space around the colon and at the end removed,
// then CRLF.
func appendRelaxed(dst, raw []byte, f field) []byte {
	for _, c := range raw[f.start:f.nameEnd] {
		dst = append(dst, lower(c))
	}
	dst = append(dst, ':')
	return appendRelaxedValue(dst, raw[f.colon+1:f.end])
}

// appendRelaxedValue is the value part of appendRelaxed. The only CR and LF
// a parsed field holds are its line ends, which unfolding removes and which
// sit next to white space (a continuation line starts with it), so they
// count as white space here.
func appendRelaxedValue(dst, v []byte) []byte {
	space, started := false, false
	for i := 0; i < len(v); {
		c := v[i]
		if c == ' ' || c == '\t' || c == '\r' || c == '\n' {
			space = true
			i++
			continue
		}
		if space && started {
			dst = append(dst, ' ')
		}
		space, started = false, true
		j := i + 1
		for j < len(v) && !isFWS(v[j]) {
			j++
		}
		dst = append(dst, v[i:j]...)
		i = j
	}
	return append(dst, '\r', '\n')
}

func isFWS(c byte) bool { return c == ' ' || c == '\t' || c == '\r' || c == '\n' }
