package zone

import "golang.org/x/sys/unix"

const reusePort = unix.SO_REUSEPORT
