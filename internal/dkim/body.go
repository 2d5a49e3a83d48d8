package dkim

import (
	"bytes"
	"crypto/sha256"
	"hash"
)

// BodyHash canonicalizes a message body with the relaxed algorithm (RFC 6376
// §3.4.4) and hashes it with SHA-256 as it is written, a chunk at a time:
// its memory does not grow with the body, and a line may span any number of
// writes.
//
// Line ends are CRLF or a bare LF, which counts as CRLF, so that a message
// handed over with Unix line ends hashes as its wire form. A CR that is not
// followed by LF is hashed as a character of its line, as RFC 6376 reads
// it, but verifiers do not agree there (dkimpy does the same; go-msgauth
// takes it for a line end; OpenDKIM fails even "a\rb"), and RFC 5322 §2.3
// forbids it: BareCR reports the first, so that the caller can refuse to
// sign such a body.
//
// Most lines of real mail are already canonical (CRLF, single spaces, no
// trailing white space): those are found with bytes.IndexByte and hashed as
// they stand, many lines in one Write to the hash; only the others go
// through the state machine of slow.
type BodyHash struct {
	h hash.Hash
	// out gathers the bytes of rewritten lines, so that the hash gets
	// them in a few large writes.
	out [1024]byte
	n   int
	// empty counts empty lines seen and not hashed: they are hashed when a
	// line with content follows, never at the end (§3.4.4 "Ignore all
	// empty lines at the end of the message body").
	empty  int
	lines  int // lines ended so far
	bareCR int // the line of the first bare CR, from 1; 0: none
	// The state of a line that slow is in the middle of.
	content bool // the line has bytes that are not white space
	wsp     bool // white space seen after the last such byte
	cr      bool // the last byte was a CR: a line end if LF follows
}

// NewBodyHash returns an empty BodyHash.
func NewBodyHash() *BodyHash { return &BodyHash{h: sha256.New()} }

// Reset makes b empty, to hash another body.
func (b *BodyHash) Reset() {
	b.h.Reset()
	b.n, b.empty, b.lines, b.bareCR = 0, 0, 0, 0
	b.content, b.wsp, b.cr = false, false, false
}

// Write adds body bytes. It never fails.
func (b *BodyHash) Write(p []byte) (int, error) {
	// p[span:i] is canonical as it stands and not hashed yet; its last
	// trail lines are empty.
	span, trail := 0, 0
	// Where the next tab and the next two spaces are, found once for the
	// whole of p: they are rare, and looking for them line by line would
	// cost a call each.
	nextTab, nextDouble := -1, -1
	// A bare CR leaves a line canonical as it stands (it is a character
	// of the line), so the lines are not searched for one: the CRs of p
	// are counted once, and those that end lines, or that slow reads
	// itself, are counted off; any left over are bare CRs in lines hashed
	// as they stand (see findBareCR).
	crs, known := bytes.Count(p, cr), 0
	lines := b.lines
	flush := func(i int) {
		if i > span {
			b.direct(p[span : i-2*trail])
			b.empty += trail
		}
		span, trail = i, 0
	}
	slow := func(i int) int {
		flush(i)
		j := b.slow(p, i)
		known += bytes.Count(p[i:j], cr)
		span = j
		return j
	}
	i := 0
	for i < len(p) {
		if b.content || b.wsp || b.cr {
			// In the middle of a line begun in an earlier Write.
			i = slow(i)
			continue
		}
		lf := bytes.IndexByte(p[i:], '\n')
		if lf < 0 {
			break // a partial line: slow keeps its state for the next Write
		}
		lf += i
		if lf == i || p[lf-1] != '\r' {
			i = slow(i) // a bare LF
			continue
		}
		cr := lf - 1 // the line's content is p[i:cr]
		if cr == i {
			// An empty line.
			b.lines++
			known++
			if span == i {
				b.empty++
				span = lf + 1
			} else {
				trail++
			}
			i = lf + 1
			continue
		}
		if nextTab < i {
			nextTab = index(p, i, bytes.IndexByte(p[i:], '\t'))
		}
		if nextDouble < i {
			nextDouble = index(p, i, bytes.Index(p[i:], []byte("  ")))
		}
		if p[cr-1] == ' ' || nextTab < cr || nextDouble < cr {
			i = slow(i)
			continue
		}
		// A canonical line with content.
		b.lines++
		known++
		if b.empty > 0 {
			// The span is empty here: empty lines go to b.empty only
			// while it is, and flush moves the span's own there.
			b.crlfs()
		}
		trail = 0
		i = lf + 1
	}
	flush(i)
	if i < len(p) {
		known += bytes.Count(p[i:], cr)
		b.slow(p, i)
	}
	if known < crs {
		// The first bare CR of p may come before one slow found.
		if l := findBareCR(p, lines); l > 0 && (b.bareCR == 0 || (b.bareCR > lines && l < b.bareCR)) {
			b.bareCR = l
		}
	}
	return len(p), nil
}

// findBareCR returns the line of the first CR of p not followed by LF,
// counting from the line after lines: p starts on that line. A CR that ends
// p does not count: slow has it, and the next Write tells.
func findBareCR(p []byte, lines int) int {
	for i := 0; i < len(p)-1; {
		j := bytes.IndexByte(p[i:len(p)-1], '\r')
		if j < 0 {
			break
		}
		i += j
		if p[i+1] != '\n' {
			return lines + 1 + bytes.Count(p[:i], []byte{'\n'})
		}
		i++
	}
	return 0
}

// index turns the result of a search of p[from:] into a position in p,
// len(p) when nothing was found.
func index(p []byte, from, found int) int {
	if found < 0 {
		return len(p)
	}
	return from + found
}

// slow canonicalizes p[i:] up to and including the next line end, byte by
// byte but for runs of plain bytes, and returns where it stopped.
func (b *BodyHash) slow(p []byte, i int) int {
	for i < len(p) {
		c := p[i]
		if b.cr {
			b.cr = false
			if c == '\n' {
				b.endLine()
				return i + 1
			}
			b.bareText()
		}
		switch c {
		case '\n':
			b.endLine()
			return i + 1
		case '\r':
			b.cr = true
			i++
		case ' ', '\t':
			b.wsp = true
			i++
		default:
			j := i + 1
			for j < len(p) && !special[p[j]] {
				j++
			}
			b.text(p[i:j])
			i = j
		}
	}
	return i
}

var cr = []byte{'\r'}

// bareText adds a CR that no LF followed, as a character of its line.
func (b *BodyHash) bareText() {
	if b.bareCR == 0 {
		b.bareCR = b.lines + 1
	}
	b.text(cr)
}

// BareCR is the line of the body (counted from 1) with the first CR that
// is not followed by LF, or 0.
func (b *BodyHash) BareCR() int { return b.bareCR }

// special are the bytes that slow does not copy as they come.
var special = [256]bool{' ': true, '\t': true, '\r': true, '\n': true}

// text adds bytes of a line that are not white space: a run of white space
// before them becomes one space (§3.4.4 "Reduce all sequences of WSP within
// a line to a single SP character"); the empty lines before the line are
// hashed now that it has content.
func (b *BodyHash) text(t []byte) {
	if !b.content {
		b.crlfs()
		b.content = true
	}
	if b.wsp {
		b.byte(' ')
		b.wsp = false
	}
	if len(t) > len(b.out)-b.n {
		b.direct(t)
		return
	}
	b.n += copy(b.out[b.n:], t)
}

// endLine ends a line: white space at its end is dropped (§3.4.4 "Ignore
// all whitespace at the end of lines"), an empty one waits in b.empty.
func (b *BodyHash) endLine() {
	b.lines++
	if b.content {
		b.byte('\r')
		b.byte('\n')
	} else {
		b.empty++
	}
	b.content, b.wsp = false, false
}

// crlfs hashes the empty lines that wait.
func (b *BodyHash) crlfs() {
	for ; b.empty > 0; b.empty-- {
		b.byte('\r')
		b.byte('\n')
	}
}

func (b *BodyHash) byte(c byte) {
	if b.n == len(b.out) {
		b.flushOut()
	}
	b.out[b.n] = c
	b.n++
}

// direct hashes bytes as they stand, after what out holds.
func (b *BodyHash) direct(p []byte) {
	if len(p) == 0 {
		return
	}
	b.flushOut()
	b.h.Write(p)
}

func (b *BodyHash) flushOut() {
	if b.n > 0 {
		b.h.Write(b.out[:b.n])
		b.n = 0
	}
}

// Sum ends the body and appends its hash to dst. A body that does not end
// with a line end gets one (§3.4.4 "If the body is non-empty but does not
// end with a CRLF, a CRLF is added"); empty lines at the end are not hashed.
// b is not usable afterwards until Reset.
func (b *BodyHash) Sum(dst []byte) []byte {
	if b.cr {
		b.cr = false
		b.bareText()
	}
	if b.content {
		b.endLine()
	}
	b.flushOut()
	return b.h.Sum(dst)
}
