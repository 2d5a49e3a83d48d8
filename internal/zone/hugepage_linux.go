package zone

import "golang.org/x/sys/unix"

// adviseHugePages asks the kernel to back b with transparent huge pages
// (with THP in "madvise" mode, the Debian default, nothing else does). It
// is advice: when it fails the zone works as before, only with more TLB
// misses, so the error is ignored.
func adviseHugePages(b []byte) { _ = unix.Madvise(b, unix.MADV_HUGEPAGE) }
