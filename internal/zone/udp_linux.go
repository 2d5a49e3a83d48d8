package zone

import (
	"net"
	"net/netip"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

// mmsghdr is struct mmsghdr of recvmmsg(2).
type mmsghdr struct {
	hdr unix.Msghdr
	len uint32
	_   [4]byte
}

// mmsgConn calls recvmmsg and sendmmsg directly: the replies go to the
// sender's address exactly as the kernel gave it, so no address is parsed
// or allocated per query (golang.org/x/net's batch API allocates two per
// datagram, and at a million domains each collection marks gigabytes).
type mmsgConn struct {
	rc    syscall.RawConn
	in    []mmsghdr
	names []unix.RawSockaddrInet6 // big enough for IPv4 and IPv6
	iovs  []unix.Iovec
	bufs  [][]byte
	out   []mmsghdr
	oiovs []unix.Iovec
}

func newBatchIO(c *net.UDPConn) (batchIO, error) {
	rc, err := c.SyscallConn()
	if err != nil {
		return nil, err
	}
	m := &mmsgConn{rc: rc, in: make([]mmsghdr, batchSize), names: make([]unix.RawSockaddrInet6, batchSize),
		iovs: make([]unix.Iovec, batchSize), bufs: make([][]byte, batchSize),
		out: make([]mmsghdr, batchSize), oiovs: make([]unix.Iovec, batchSize)}
	for i := range m.in {
		m.bufs[i] = make([]byte, maxTCPSize)
		m.iovs[i].Base = &m.bufs[i][0]
		m.iovs[i].SetLen(len(m.bufs[i]))
		m.in[i].hdr.Name = (*byte)(unsafe.Pointer(&m.names[i]))
		m.in[i].hdr.Iov = &m.iovs[i]
		m.in[i].hdr.SetIovlen(1)
		m.out[i].hdr.Iov = &m.oiovs[i]
		m.out[i].hdr.SetIovlen(1)
	}
	return m, nil
}

// The sockets are non-blocking (the runtime's poller waits for them), so
// recvmmsg and sendmmsg return at once: they are made as raw system calls,
// without telling the scheduler. Through Syscall6 a batch that took longer
// than sysmon's 20 µs let it hand the P to another thread, and the context
// switches to get it back were a fifth of the CPU at small zones (perf, in
// docs/performance.md).
func (m *mmsgConn) read() (int, error) {
	for i := range m.in {
		m.in[i].hdr.Namelen = uint32(unsafe.Sizeof(m.names[i]))
		m.in[i].hdr.Flags = 0
		m.in[i].len = 0
	}
	var n int
	var errno syscall.Errno
	err := m.rc.Read(func(fd uintptr) bool {
		r, _, e := unix.RawSyscall6(unix.SYS_RECVMMSG, fd, uintptr(unsafe.Pointer(&m.in[0])), uintptr(len(m.in)), 0, 0, 0)
		if e == unix.EAGAIN || e == unix.EINTR {
			return false // wait until readable
		}
		n, errno = int(r), e
		return true
	})
	if err != nil {
		return 0, err
	}
	if errno != 0 {
		return 0, errno
	}
	return n, nil
}

func (m *mmsgConn) packet(i int) []byte { return m.bufs[i][:m.in[i].len] }

func (m *mmsgConn) from(i int) netip.Addr {
	sa := &m.names[i]
	switch sa.Family {
	case unix.AF_INET:
		return netip.AddrFrom4((*unix.RawSockaddrInet4)(unsafe.Pointer(sa)).Addr)
	case unix.AF_INET6:
		return netip.AddrFrom16(sa.Addr).Unmap()
	}
	return netip.Addr{}
}

func (m *mmsgConn) reply(k, i int, resp []byte) {
	m.oiovs[k].Base = unsafe.SliceData(resp)
	m.oiovs[k].SetLen(len(resp))
	m.out[k].hdr.Name = (*byte)(unsafe.Pointer(&m.names[i]))
	m.out[k].hdr.Namelen = m.in[i].hdr.Namelen
}

func (m *mmsgConn) write(k int) error {
	for sent := 0; sent < k; {
		var n int
		var errno syscall.Errno
		err := m.rc.Write(func(fd uintptr) bool {
			r, _, e := unix.RawSyscall6(unix.SYS_SENDMMSG, fd, uintptr(unsafe.Pointer(&m.out[sent])), uintptr(k-sent), 0, 0, 0)
			if e == unix.EAGAIN || e == unix.EINTR {
				return false // wait until writable
			}
			n, errno = int(r), e
			return true
		})
		if err != nil {
			return err
		}
		if errno != 0 {
			sent++ // this datagram cannot be sent (e.g. unreachable): skip it
			continue
		}
		sent += n
	}
	return nil
}
