package milter

import (
	"bytes"
	"context"
	"testing"

	"dkimd/internal/signer"
)

// recorder is a Handler that keeps what the session hands it and inserts
// one field, or refuses the messages from refuse.
type recorder struct {
	header, body []byte
	closed       int
	refuse       string
}

func (h *recorder) Begin(_ context.Context, header []byte) (Message, error) {
	if h.refuse != "" && bytes.Contains(header, []byte(h.refuse)) {
		return nil, &signer.Refusal{Code: signer.CodeUnknownDomain, Reason: "not ours"}
	}
	h.header, h.body = append([]byte(nil), header...), nil
	return recorderMessage{h}, nil
}

type recorderMessage struct{ h *recorder }

func (m recorderMessage) Write(p []byte) (int, error) {
	m.h.body = append(m.h.body, p...)
	return len(p), nil
}

func (m recorderMessage) Close() (signer.Result, error) {
	m.h.closed++
	return signer.Result{Signatures: []signer.Signature{{Field: "DKIM-Signature: v=1; a=x;\r\n\tb=y\r\n"}}}, nil
}

func (recorderMessage) Abort() {}

// TestHandler: a Server with Options.Handler hands it each message as it
// would the signer (the header block rebuilt, the body as it came) and
// inserts the fields it returns; a refusal passes the message on.
func TestHandler(t *testing.T) {
	h := &recorder{refuse: "stranger.example"}
	s, err := New(Options{Handler: h})
	if err != nil {
		t.Fatal(err)
	}
	stream := append(optneg(6, 0x1ff, postfixOffer), conversation("a.example", "Hello,\r\n", "world\r\n")...)
	stream = append(stream, conversation("stranger.example", "x\r\n")...)
	rs, err := run(t, s, stream)
	if err != nil {
		t.Fatal(err)
	}
	if got := codes(rs); got != "Oiaa" {
		t.Fatalf("replies %q, want Oiaa", got)
	}
	if want := "\x00\x00\x00\x00DKIM-Signature\x00v=1; a=x;\n\tb=y\x00"; string(rs[1].data) != want {
		t.Errorf("insert %q, want %q", rs[1].data, want)
	}
	if want := "From: Alice <alice@a.example>\r\nSubject: hello\r\n"; string(h.header) != want {
		t.Errorf("header block %q, want %q", h.header, want)
	}
	if string(h.body) != "Hello,\r\nworld\r\n" || h.closed != 1 {
		t.Errorf("body %q, closed %d times: want the two chunks, once", h.body, h.closed)
	}
}
