package milter

import (
	"encoding/binary"
	"net"
	"testing"
)

func packet(code byte, data string) []byte {
	return append(binary.BigEndian.AppendUint32(nil, uint32(len(data)+1)), append([]byte{code}, data...)...)
}

func TestReplyComplete(t *testing.T) {
	insert := packet('i', "\x00\x00\x00\x00DKIM-Signature\x00v=1\x00")
	accept := packet('a', "")
	for _, tc := range []struct {
		name string
		b    []byte
		want bool
	}{
		{"continue", packet('c', ""), true},
		{"negotiation", packet('O', "\x00\x00\x00\x06\x00\x00\x00\x01\x00\x00\x00\x00"), true},
		{"length and code only", packet('i', "abc")[:5], false},
		{"part of the length", accept[:2], false},
		{"inserted field", insert, false},
		{"inserted fields", append(append([]byte{}, insert...), insert...), false},
		{"inserted field and accept", append(append([]byte{}, insert...), accept...), true},
		{"inserted field and half an accept", append(append([]byte{}, insert...), accept[:3]...), false},
		{"zero length", []byte{0, 0, 0, 0, 'x'}, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := replyComplete(tc.b); got != tc.want {
				t.Errorf("replyComplete(%q) = %v, want %v", tc.b, got, tc.want)
			}
		})
	}
}

// TestBufferedConnSendsAReplyInOneWrite: the packets of the end of
// message's reply, written in pieces, reach the MTA in one write.
func TestBufferedConnSendsAReplyInOneWrite(t *testing.T) {
	server, client := net.Pipe()
	defer client.Close()
	c := &bufferedConn{Conn: server}
	reply := append(packet('i', "\x00\x00\x00\x00DKIM-Signature\x00v=1\x00"), packet('a', "")...)
	done := make(chan error, 1)
	go func() {
		// As go-milter writes: each packet's length and code, then its data.
		for _, p := range [][]byte{reply[:5], reply[5:29], reply[29:]} {
			if _, err := c.Write(p); err != nil {
				done <- err
				return
			}
		}
		done <- nil
	}()
	buf := make([]byte, 100)
	n, err := client.Read(buf) // net.Pipe: one Read per Write
	if err != nil {
		t.Fatal(err)
	}
	if string(buf[:n]) != string(reply) {
		t.Fatalf("first write %q, want the whole reply %q", buf[:n], reply)
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}
