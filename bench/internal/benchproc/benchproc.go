// Package benchproc is what the benchmark commands (bench/sign,
// bench/postfix) share to run and measure the servers they compare: a
// process's CPU time from /proc, a free loopback port, waiting for a
// listener, and the -sizes flag.
package benchproc

import (
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
	"time"
)

// Stat is a process's own CPU time (utime+stime, all its threads), that
// of its reaped children (cutime+cstime), and its parent, from
// /proc/<pid>/stat (clock ticks of 1/100 s on Linux).
func Stat(pid int) (self, children time.Duration, ppid int, err error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, 0, 0, err
	}
	s := string(b)
	// The command name, in parentheses, may hold spaces: count from its end.
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+2:])
	n := func(i int) int64 { v, _ := strconv.ParseInt(f[i], 10, 64); return v }
	const tick = 10 * time.Millisecond
	return time.Duration(n(11)+n(12)) * tick, time.Duration(n(13)+n(14)) * tick, int(n(1)), nil
}

// FreePort is a TCP port on 127.0.0.1 that nothing listened on a moment ago.
func FreePort() (int, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port, nil
}

// WaitListening waits up to 20 s for each address to accept a TCP connection.
func WaitListening(addrs ...string) error {
	for _, a := range addrs {
		for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(50 * time.Millisecond) {
			c, err := net.Dial("tcp", a)
			if err == nil {
				c.Close()
				break
			}
			if time.Now().After(deadline) {
				return fmt.Errorf("nothing listens on %s", a)
			}
		}
	}
	return nil
}

// MessageSizes parses a -sizes flag: kilobyte counts, comma-separated; it
// returns bytes.
func MessageSizes(list string) ([]int, error) {
	var sizes []int
	for _, f := range strings.Split(list, ",") {
		kb, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || kb <= 0 {
			return nil, fmt.Errorf("-sizes: %q is not a size in KB", f)
		}
		sizes = append(sizes, kb<<10)
	}
	return sizes, nil
}
