package signer

import (
	"bytes"
	"io"
)

// crlfWriter turns bare LF line ends into CRLF on the way to w, so that a
// message handed over with Unix line ends is signed exactly as its CRLF form
// (the form it has on the wire). CRLF input passes through without copying.
type crlfWriter struct {
	w      io.Writer
	lastCR bool // the previous Write ended with CR
}

func newCRLFWriter(w io.Writer) *crlfWriter { return &crlfWriter{w: w} }

var crlf = []byte("\r\n")

func (c *crlfWriter) Write(p []byte) (int, error) {
	start, off := 0, 0
	for {
		j := bytes.IndexByte(p[off:], '\n')
		if j < 0 {
			break
		}
		i := off + j
		off = i + 1
		if (i == 0 && c.lastCR) || (i > 0 && p[i-1] == '\r') {
			continue
		}
		if _, err := c.w.Write(p[start:i]); err != nil {
			return start, err
		}
		if _, err := c.w.Write(crlf); err != nil {
			return start, err
		}
		start = i + 1
	}
	if start < len(p) {
		if _, err := c.w.Write(p[start:]); err != nil {
			return start, err
		}
	}
	if len(p) > 0 {
		c.lastCR = p[len(p)-1] == '\r'
	}
	return len(p), nil
}
