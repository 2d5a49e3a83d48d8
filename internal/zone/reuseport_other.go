//go:build !linux

package zone

// SO_REUSEPORT as the BSDs number it.
const reusePort = 0x200
