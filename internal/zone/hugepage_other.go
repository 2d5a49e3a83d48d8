//go:build !linux

package zone

func adviseHugePages([]byte) {}
