//go:build !linux

package zone

import (
	"net"
	"net/netip"
)

// udpOne reads and writes one datagram at a time where recvmmsg is not
// available.
type udpOne struct {
	c    *net.UDPConn
	buf  []byte
	n    int
	addr netip.AddrPort
	resp []byte
}

func newBatchIO(c *net.UDPConn) (batchIO, error) {
	return &udpOne{c: c, buf: make([]byte, maxTCPSize)}, nil
}

func (u *udpOne) read() (int, error) {
	var err error
	u.n, u.addr, err = u.c.ReadFromUDPAddrPort(u.buf)
	if err != nil {
		return 0, err
	}
	return 1, nil
}

func (u *udpOne) packet(int) []byte           { return u.buf[:u.n] }
func (u *udpOne) from(int) netip.Addr         { return u.addr.Addr().Unmap() }
func (u *udpOne) reply(_, _ int, resp []byte) { u.resp = resp }

func (u *udpOne) write(k int) error {
	if k == 0 {
		return nil
	}
	_, err := u.c.WriteToUDPAddrPort(u.resp, u.addr)
	return err
}
