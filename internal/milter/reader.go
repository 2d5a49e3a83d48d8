package milter

import (
	"bufio"
	"errors"
	"io"
)

// readBuffer is the read buffer of a session. With no replies awaited the
// MTA sends a whole small message (macros, header fields, end of header,
// body chunks) in one go: read into one buffer, they cost one system call,
// and a packet that fits is handed over in place, not copied.
const readBuffer = 16 << 10

// keepBuffer is the largest packet buffer a session keeps between packets;
// a larger one (a long header field, a 1 MiB chunk) is dropped after use so
// that idle sessions hold little.
const keepBuffer = 64 << 10

// packetReader splits a stream into packets. It checks each length before
// it reads or allocates anything for the packet, and grows a buffer for a
// packet larger than readBuffer only as the packet's bytes arrive, so a
// length prefix alone makes it hold nothing.
type packetReader struct {
	br      *bufio.Reader
	buf     []byte
	pending int // bytes of the last packet still in br, discarded on the next call
	// wait, when set, is called before a read that may block on the
	// stream: the session sends its replies and sets the read deadline
	// there, so the MTA's next packet finds them sent, and every read of
	// the socket has a deadline.
	wait func() error
}

func newPacketReader(r io.Reader, wait func() error) *packetReader {
	return &packetReader{br: bufio.NewReaderSize(r, readBuffer), wait: wait}
}

// errTruncated is a stream that ended inside a packet.
var errTruncated = malformed(reasonTruncated, "the connection ended inside a packet")

// next returns the next packet (code and data). io.EOF means the stream
// ended between packets; a protocol error, a malformed length or a packet
// cut short. The packet is valid until the next call.
func (r *packetReader) next() ([]byte, error) {
	if _, err := r.br.Discard(r.pending); err != nil {
		return nil, err
	}
	r.pending = 0
	if cap(r.buf) > keepBuffer {
		r.buf = nil
	}
	if err := r.fill(4); err != nil {
		if errors.Is(err, io.EOF) && r.br.Buffered() == 0 {
			return nil, io.EOF
		}
		return nil, eofTruncated(err)
	}
	prefix, _ := r.br.Peek(4)
	n, err := packetLength(prefix)
	if err != nil {
		return nil, err
	}
	if 4+n <= r.br.Size() {
		if err := r.fill(4 + n); err != nil {
			return nil, eofTruncated(err)
		}
		p, _ := r.br.Peek(4 + n)
		r.pending = 4 + n
		return p[4:], nil
	}
	if _, err := r.br.Discard(4); err != nil {
		return nil, err
	}
	if err := r.waitStream(); err != nil {
		return nil, err
	}
	r.buf = r.buf[:0]
	for len(r.buf) < n {
		if len(r.buf) == cap(r.buf) {
			// Double as the bytes arrive, never past the packet.
			grown := make([]byte, len(r.buf), min(n, max(2*cap(r.buf), readBuffer)))
			copy(grown, r.buf)
			r.buf = grown
		}
		m, err := r.br.Read(r.buf[len(r.buf):min(cap(r.buf), n)])
		r.buf = r.buf[:len(r.buf)+m]
		if err != nil {
			return nil, eofTruncated(err)
		}
	}
	return r.buf, nil
}

// fill makes n bytes available in the buffer, reading only if they are not.
func (r *packetReader) fill(n int) error {
	if r.br.Buffered() >= n {
		return nil
	}
	if err := r.waitStream(); err != nil {
		return err
	}
	_, err := r.br.Peek(n)
	return err
}

func (r *packetReader) waitStream() error {
	if r.wait == nil {
		return nil
	}
	return r.wait()
}

func eofTruncated(err error) error {
	if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
		return errTruncated
	}
	return err
}
