package zone

import (
	"net"
	"syscall"
)

// listenConfig sets SO_REUSEPORT so that several UDP sockets share the port
// and the kernel spreads queries over them, one reading goroutine each.
func listenConfig(reuse bool) *net.ListenConfig {
	if !reuse {
		return &net.ListenConfig{}
	}
	return &net.ListenConfig{Control: func(_, _ string, c syscall.RawConn) error {
		var serr error
		err := c.Control(func(fd uintptr) {
			serr = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, reusePort, 1)
		})
		if err != nil {
			return err
		}
		return serr
	}}
}
