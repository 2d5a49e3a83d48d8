package milter

import (
	"bytes"
	"errors"
	"io"
	"testing"

	"dkimd/internal/signer/signertest"
)

// FuzzPacket: any bytes are a packet or a protocol error, never a panic,
// and a packet's fields lie within it.
func FuzzPacket(f *testing.F) {
	for _, tc := range malformedPackets {
		f.Add(tc.wire)
	}
	f.Add(optneg(6, 0x1ff, postfixOffer))
	f.Add(packet(cmdConnect, "client.example\x004\x00\x19192.0.2.1\x00"))
	f.Add(packet(cmdHeader, "Subject\x00hello\x00"))
	f.Add(packet(cmdMacro, "Ni\x00ABC\x00"))
	f.Fuzz(func(t *testing.T, wire []byte) {
		if len(wire) < 4 {
			return
		}
		err := parseWire(wire)
		var pe *protocolError
		if err != nil && !errors.As(err, &pe) {
			t.Fatalf("not a protocol error: %v", err)
		}
		if err != nil {
			return
		}
		n, _ := packetLength(wire)
		c, _ := parsePacket(wire[4 : 4+n])
		fields := [][]byte{c.name, c.value}
		if c.code == cmdMacro {
			fields = fields[1:] // name is the stage, a byte
		}
		for _, s := range fields {
			if bytes.IndexByte(s, 0) >= 0 {
				t.Fatalf("field %q holds a NUL", s)
			}
		}
	})
}

// FuzzSession: any stream through the reader and the session, signer
// included, ends in a quit, the end of the stream or a protocol error;
// never a panic, and what the session holds stays within its caps.
func FuzzSession(f *testing.F) {
	fx := signertest.New(f)
	s := testServer(f, fx, Options{})
	neg := optneg(6, 0x1ff, postfixOffer)
	f.Add(append(neg, conversation(signertest.AlignedRSA, "body\r\n")...))
	f.Add(append(optneg(2, 1, 0), conversation(signertest.Unknown, "x")...))
	f.Add(append(append(neg, conversation(signertest.AlignedEd, "a\n")...), append(packet(cmdQuitNC), neg...)...))
	for _, tc := range malformedPackets {
		f.Add(append(neg, tc.wire...))
	}
	f.Fuzz(func(t *testing.T, stream []byte) {
		m := &session{s: s}
		defer m.abort()
		r := newPacketReader(bytes.NewReader(stream), nil)
		for {
			p, err := r.next()
			if err == nil {
				var done bool
				if done, err = m.handle(p); done {
					return
				}
			}
			var pe *protocolError
			switch {
			case err == io.EOF:
				return
			case errors.As(err, &pe):
				return
			case err != nil:
				t.Fatalf("error %v, want a protocol error", err)
			}
			if len(m.header) > maxHeaderBlock || cap(r.buf) > maxPacket || m.fields > maxHeaderFields+1 {
				t.Fatalf("holds %d header bytes, %d fields, a %d-byte packet buffer", len(m.header), m.fields, cap(r.buf))
			}
			if len(m.out) > 8<<10 {
				t.Fatalf("%d bytes of replies to one packet", len(m.out))
			}
			m.out = m.out[:0]
		}
	})
}
