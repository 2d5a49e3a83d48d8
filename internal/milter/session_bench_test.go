package milter

import (
	"bytes"
	"strings"
	"testing"

	"dkimd/internal/signer/signertest"
)

// BenchmarkSessionHeader is what the header of a message costs a session,
// socket aside: the packets of bench/sign's 2 KB message parsed, its
// header block rebuilt, and at the end of the header the signer's Begin
// (key choice, header parse, signed fields). The message is then aborted,
// which leaves the signer's per-message state to the collector: each
// iteration allocates one, as a real message's Close would not.
func BenchmarkSessionHeader(b *testing.B) {
	f := signertest.New(b)
	s := testServer(b, f, Options{})
	m := &session{s: s}
	if _, err := m.handle(optneg(6, 0x1ff, postfixOffer)[4:]); err != nil {
		b.Fatal(err)
	}
	msg := signertest.Message(signertest.AlignedRSA, 2<<10)
	head := string(msg[:bytes.Index(msg, []byte("\r\n\r\n"))])
	// As Postfix sends the fields: one packet each, no space after the
	// colon, LF inside folded values.
	pkts := [][]byte{packet(cmdMacro, "Mi\x004A1B2C3D\x00{auth_authen}\x00alice\x00")}
	for _, l := range strings.Split(strings.ReplaceAll(head, "\r\n\t", "\n\t"), "\r\n") {
		name, value, _ := strings.Cut(l, ":")
		pkts = append(pkts, packet(cmdHeader, name, "\x00", strings.TrimPrefix(value, " "), "\x00"))
	}
	pkts = append(pkts, packet(cmdEOH))
	abort := packet(cmdAbort)
	b.ReportAllocs()
	cpu := signertest.StartCPU()
	for b.Loop() {
		for _, p := range pkts {
			if _, err := m.handle(p[4:]); err != nil {
				b.Fatal(err)
			}
		}
		if m.msg == nil {
			b.Fatalf("not begun: %s", m.refusal)
		}
		if _, err := m.handle(abort[4:]); err != nil {
			b.Fatal(err)
		}
	}
	cpu.Report(b)
}
