// Package config turns flags and their DKIMD_* environment twins into a
// validated Config. Flags come in groups (Group): every subcommand reads the
// store flags, so `dkimd brand create` acts on the store that `dkimd serve`
// uses, and only serve reads the listener flags. It also prints the flags,
// for help and for the operator guide's table. It owns no behaviour beyond
// parsing, validation and printing, and keeps no mutable state.
package config

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// Config is everything dkimd can be told at start.
type Config struct {
	DataDir       string
	DatabaseURL   string
	MasterKeyFile string

	APIAddr           string
	OperatorTokenFile string
	TLSCertFile       string
	TLSKeyFile        string

	DNSAddr      string
	Zone         string
	NS           []string                // name servers of the zone, FQDN without trailing dot
	NSAddrs      map[string][]netip.Addr // glue for name servers inside the zone
	SOAMbox      string
	SOARefresh   time.Duration
	SOARetry     time.Duration
	SOAExpire    time.Duration
	SOAMinimum   time.Duration
	RecordTTL    time.Duration
	Secondaries  []string       // host:port to NOTIFY
	XFRAllow     []netip.Prefix // who may transfer the zone
	TSIGKeyFile  string         // "name algorithm base64secret"
	ReconcileInt time.Duration

	// DNS edges: response-rate limiting on UDP and the TCP connection cap.
	DNSRRL       int            // answers per second per source prefix and answer; 0 disables
	DNSRRLSlip   int            // every Nth limited answer goes out truncated (TC); 0 or 1: see Validate
	DNSRRLExempt []netip.Prefix // sources never limited
	DNSTCPMax    int            // concurrent DNS TCP connections

	SignAddr      string
	SignToken     string
	SignTokenFile string
	SignMaxBytes  int64
	SignExpiry    time.Duration // x= is t= plus this; 0 sets no x=
	RSABackend    string        // auto, openssl or go

	MilterAddr     string
	MilterTimeout  time.Duration // idle time allowed between two packets of a session
	MilterMaxConns int           // concurrent milter sessions
	MilterOnError  string        // accept or tempfail: the answer for a message that cannot be signed

	OpsAddr string

	Resolver         string
	PublishLeadTime  time.Duration
	RotationInterval time.Duration
	RetireGrace      time.Duration
	KeyPoolSize      int

	LogLevel string
}

// envName maps a flag to its environment twin: --api-addr -> DKIMD_API_ADDR.
func envName(flagName string) string {
	return "DKIMD_" + strings.ToUpper(strings.ReplaceAll(flagName, "-", "_"))
}

type listFlag struct{ v *[]string }

func (l listFlag) String() string {
	if l.v == nil {
		return ""
	}
	return strings.Join(*l.v, ",")
}

func (l listFlag) Set(s string) error {
	*l.v = nil
	for _, part := range strings.Split(s, ",") {
		if part = strings.TrimSpace(part); part != "" {
			*l.v = append(*l.v, part)
		}
	}
	return nil
}

// Group is a set of flags that go together: every subcommand takes the
// store flags, and only serve takes the listener, DNS, signing and rotation
// flags, so `dkimd brand list --help` lists what brand list reads and
// nothing else (docs/operator-guide.md, "Configure").
type Group uint8

// Flag groups.
const (
	// StoreFlags say which store to act on and how much to log: every
	// subcommand.
	StoreFlags Group = 1 << iota
	// KEKFlags locate the key-encryption key: commands that seal or open
	// private keys.
	KEKFlags
	// ZoneFlags name the service's zone: commands that normalise customer
	// domains (a maildomain may not lie inside the zone).
	ZoneFlags
	// ServeFlags are the listeners, DNS, signing and rotation: serve only.
	ServeFlags

	// AllFlags is what serve reads.
	AllFlags = StoreFlags | KEKFlags | ZoneFlags | ServeFlags
)

// dynamicDefaults are the defaults that depend on other flags, as help and
// the operator guide's table show them; the flag itself defaults to empty.
var dynamicDefaults = map[string]struct{ value, note string }{
	"master-key-file":     {"<data-dir>/master.key", "generated only by the first serve of an empty embedded store"},
	"operator-token-file": {"<data-dir>/operator.token", "generated on first start"},
	"ns":                  {"ns1.<zone>", ""},
	"ns-addrs":            {"ns1.<zone>=127.0.0.1", "when --ns is the default"},
	"soa-mbox":            {"hostmaster.<zone>", ""},
	"resolver":            {"", "the system's resolvers"},
}

// FlagSet declares every flag (serve's set) on fs, bound to c; see Flags.
func (c *Config) FlagSet(fs *flag.FlagSet, getenv func(string) string) (finish func() error) {
	return c.Flags(fs, AllFlags, getenv)
}

// Flags declares the flags of groups on fs, with defaults, bound to c.
// Defaults come from the environment where set, so flags still win over env;
// only the environment twins of declared flags are read. finish, called after
// fs.Parse, completes and validates what groups cover.
func (c *Config) Flags(fs *flag.FlagSet, groups Group, getenv func(string) string) (finish func() error) {
	var nsAddrs, xfrAllow, rrlExempt []string
	str := func(p *string, name, def, usage string) {
		fs.StringVar(p, name, def, usage+" (env "+envName(name)+")")
	}
	dur := func(p *time.Duration, name string, def time.Duration, usage string) {
		fs.DurationVar(p, name, def, usage+" (env "+envName(name)+")")
	}
	intf := func(p *int, name string, def int, usage string) {
		fs.IntVar(p, name, def, usage+" (env "+envName(name)+")")
	}
	list := func(p *[]string, name, def, usage string) {
		_ = listFlag{p}.Set(def)
		fs.Var(listFlag{p}, name, usage+", comma-separated (env "+envName(name)+")")
	}
	if groups&StoreFlags != 0 {
		str(&c.DataDir, "data-dir", "./data", "directory of the embedded SQLite database, the serve lock and generated secrets")
		str(&c.DatabaseURL, "database-url", "", "postgres://… to use Postgres; empty for embedded SQLite")
		str(&c.LogLevel, "log-level", "info", "debug, info, warn or error; debug also shows the cause of a failed command")
	}
	if groups&KEKFlags != 0 {
		str(&c.MasterKeyFile, "master-key-file", "", "key-encryption key file; required with --database-url")
	}
	if groups&ZoneFlags != 0 {
		str(&c.Zone, "zone", "oxcloud.zone", "the service's own DNS zone")
	}
	if groups&ServeFlags != 0 {
		str(&c.APIAddr, "api-addr", ":8080", "listen address of the brand and admin API")
		str(&c.OperatorTokenFile, "operator-token-file", "", "file holding the admin API bearer token")
		str(&c.TLSCertFile, "tls-cert-file", "", "TLS certificate for the API listener (reloaded on SIGHUP)")
		str(&c.TLSKeyFile, "tls-key-file", "", "TLS private key for the API listener")
		str(&c.DNSAddr, "dns-addr", ":5353", "listen address of the authoritative DNS server (UDP and TCP); empty or off disables")
		list(&c.NS, "ns", "", "name servers of the zone")
		list(&nsAddrs, "ns-addrs", "", "glue addresses of in-zone name servers as name=ip")
		str(&c.SOAMbox, "soa-mbox", "", "SOA responsible mailbox as a domain name")
		dur(&c.SOARefresh, "soa-refresh", 4*time.Hour, "SOA refresh")
		dur(&c.SOARetry, "soa-retry", time.Hour, "SOA retry")
		dur(&c.SOAExpire, "soa-expire", 14*24*time.Hour, "SOA expire")
		dur(&c.SOAMinimum, "soa-minimum", 300*time.Second, "SOA minimum (negative caching TTL)")
		dur(&c.RecordTTL, "record-ttl", time.Hour, "TTL of the zone's records")
		list(&c.Secondaries, "secondaries", "", "secondary servers (host:port) to NOTIFY on every change")
		list(&xfrAllow, "xfr-allow", "", "addresses or prefixes allowed to transfer the zone (with TSIG)")
		str(&c.TSIGKeyFile, "tsig-key-file", "", `TSIG key for zone transfers and NOTIFY: a file holding "name algorithm base64-secret"`)
		intf(&c.DNSRRL, "dns-rrl", 200, "UDP answers per second for one answer to one source prefix (/24, /56); 0 disables response-rate limiting")
		intf(&c.DNSRRLSlip, "dns-rrl-slip", 2, "every Nth answer over the rate limit goes out empty and truncated, so resolvers retry over TCP; 1 truncates all, 0 drops all")
		list(&rrlExempt, "dns-rrl-exempt", "", "source addresses or prefixes never rate-limited")
		intf(&c.DNSTCPMax, "dns-tcp-max", 1000, "most DNS TCP connections at once; more are closed at once")
		dur(&c.ReconcileInt, "reconcile-interval", 30*time.Second, "how often DNS compares its serial with the database, healing missed notifications")
		str(&c.SignAddr, "sign-addr", "127.0.0.1:8081", "listen address of the MTA sign endpoint; empty or off disables")
		str(&c.SignToken, "sign-token", "", "bearer token of the sign endpoint (required when it listens off loopback); prefer --sign-token-file")
		str(&c.SignTokenFile, "sign-token-file", "", "file holding the sign endpoint's bearer token")
		fs.Int64Var(&c.SignMaxBytes, "sign-max-bytes", 64<<20, "largest message the sign endpoint accepts (env "+envName("sign-max-bytes")+")")
		dur(&c.SignExpiry, "sign-expiry", 0, "signature lifetime: x= is t= plus this; 0 sets no x=")
		str(&c.RSABackend, "rsa-backend", "auto", "RSA signatures through auto (OpenSSL's libcrypto when present, else Go), openssl or go")
		str(&c.MilterAddr, "milter-addr", "127.0.0.1:8891", "listen address of the milter; empty or off disables")
		dur(&c.MilterTimeout, "milter-timeout", 5*time.Minute, "a milter session idle this long between packets is closed")
		intf(&c.MilterMaxConns, "milter-max-conns", 1000, "most milter sessions at once; more connections are closed at once")
		str(&c.MilterOnError, "milter-on-error", "accept", "answer to a message the milter cannot sign: accept (pass it unsigned) or tempfail")
		str(&c.OpsAddr, "ops-addr", "127.0.0.1:9090", "listen address of /metrics, /healthz and /readyz; empty or off disables")
		str(&c.Resolver, "resolver", "", "host:port of the resolver used to check customers' DNS")
		dur(&c.PublishLeadTime, "publish-lead-time", 96*time.Hour, "how long a fresh key is published before it may sign")
		dur(&c.RotationInterval, "rotation-interval", 180*24*time.Hour, "default interval between automatic rotations (brands may override)")
		dur(&c.RetireGrace, "retire-grace", 7*24*time.Hour, "how long a retired key stays published before its slot gets a fresh key")
		intf(&c.KeyPoolSize, "key-pool-size", 16, "RSA keys generated ahead in the background; 0 generates on demand")
	}

	// Environment values become the flags' starting values; explicit flags
	// parsed afterwards override them.
	var envErr error
	fs.VisitAll(func(f *flag.Flag) {
		if v := getenv(envName(f.Name)); v != "" {
			if err := f.Value.Set(v); err != nil && envErr == nil {
				envErr = fmt.Errorf("%s=%q: %w (flag --%s)", envName(f.Name), v, err, f.Name)
			}
		}
	})
	return func() error {
		if envErr != nil {
			return envErr
		}
		if groups&ServeFlags != 0 {
			var err error
			if c.NSAddrs, err = parseNSAddrs(nsAddrs); err != nil {
				return err
			}
			if c.XFRAllow, err = parsePrefixes("xfr-allow", xfrAllow); err != nil {
				return err
			}
			if c.DNSRRLExempt, err = parsePrefixes("dns-rrl-exempt", rrlExempt); err != nil {
				return err
			}
			if c.SignTokenFile != "" {
				if c.SignToken, err = readSecretFile("sign-token-file", c.SignTokenFile); err != nil {
					return err
				}
			}
		}
		c.applyDefaults(groups)
		return c.validate(groups)
	}
}

// Parse reads args (without the subcommand) into a Config, with every flag
// (serve's set).
func Parse(name string, args []string, getenv func(string) string, out io.Writer) (Config, []string, error) {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(out)
	return ParseFlags(fs, AllFlags, args, getenv)
}

// ParseFlags declares the flags of groups on fs, which may already hold a
// command's own flags, and parses args (without the subcommand) into a
// Config and the positional arguments. A request for help is flag.ErrHelp.
func ParseFlags(fs *flag.FlagSet, groups Group, args []string, getenv func(string) string) (Config, []string, error) {
	var c Config
	finish := c.Flags(fs, groups, getenv)
	positional, err := ParseArgs(fs, args)
	if err != nil {
		return c, nil, err
	}
	if err := finish(); err != nil {
		return c, nil, err
	}
	return c, positional, nil
}

// ParseArgs parses args with fs and returns the positional arguments. Flags
// may follow them ("brand create acme --data-dir x"): the flag package stops
// at the first positional, so parse again after each one. "--" ends the
// flags for good.
func ParseArgs(fs *flag.FlagSet, args []string) ([]string, error) {
	var positional []string
	for {
		if err := fs.Parse(args); err != nil {
			return nil, err
		}
		rest := fs.Args()
		if len(rest) == 0 {
			return positional, nil
		}
		if len(args) > len(rest) && args[len(args)-len(rest)-1] == "--" {
			return append(positional, rest...), nil
		}
		positional = append(positional, rest[0])
		args = rest[1:]
	}
}

// Off disables a listener, like an empty address. It exists because an
// empty environment variable counts as unset (as in most deployment tools),
// so DKIMD_MILTER_ADDR=off is how the environment turns the milter off.
const Off = "off"

func (c *Config) applyDefaults(groups Group) {
	if groups&ZoneFlags != 0 {
		c.Zone = strings.ToLower(strings.TrimSuffix(c.Zone, "."))
	}
	if groups&ServeFlags == 0 {
		return
	}
	for _, addr := range []*string{&c.DNSAddr, &c.SignAddr, &c.MilterAddr, &c.OpsAddr} {
		if strings.EqualFold(*addr, Off) {
			*addr = ""
		}
	}
	if len(c.NS) == 0 {
		c.NS = []string{"ns1." + c.Zone}
	}
	for i, ns := range c.NS {
		c.NS[i] = strings.ToLower(strings.TrimSuffix(ns, "."))
	}
	if c.NSAddrs == nil {
		c.NSAddrs = map[string][]netip.Addr{}
	}
	if len(c.NSAddrs) == 0 && len(c.NS) == 1 && c.NS[0] == "ns1."+c.Zone {
		c.NSAddrs[c.NS[0]] = []netip.Addr{netip.MustParseAddr("127.0.0.1")}
	}
	if c.SOAMbox == "" {
		c.SOAMbox = "hostmaster." + c.Zone
	}
	if c.OperatorTokenFile == "" {
		c.OperatorTokenFile = filepath.Join(c.DataDir, "operator.token")
	}
}

// Validate refuses invalid values and combinations of every flag, naming
// the flag.
func (c *Config) Validate() error { return c.validate(AllFlags) }

func (c *Config) validate(groups Group) error {
	var errs []error
	bad := func(flagName, format string, args ...any) {
		errs = append(errs, fmt.Errorf("--%s: %s", flagName, fmt.Sprintf(format, args...)))
	}
	if groups&StoreFlags != 0 {
		if c.DatabaseURL == "" && c.DataDir == "" {
			bad("data-dir", "must not be empty when --database-url is not set")
		}
		if c.DatabaseURL != "" && !strings.HasPrefix(c.DatabaseURL, "postgres://") && !strings.HasPrefix(c.DatabaseURL, "postgresql://") {
			bad("database-url", "must start with postgres:// or postgresql://")
		}
		switch c.LogLevel {
		case "debug", "info", "warn", "error":
		default:
			bad("log-level", "%q is not debug, info, warn or error", c.LogLevel)
		}
	}
	if groups&ZoneFlags != 0 && (c.Zone == "" || strings.Count(c.Zone, ".") < 1) {
		bad("zone", "%q must be a domain of two labels or more", c.Zone)
	}
	if groups&ServeFlags == 0 {
		return errors.Join(errs...)
	}
	for _, a := range []struct{ flag, addr string }{
		{"api-addr", c.APIAddr}, {"dns-addr", c.DNSAddr}, {"sign-addr", c.SignAddr}, {"milter-addr", c.MilterAddr}, {"ops-addr", c.OpsAddr},
	} {
		if a.addr == "" {
			continue
		}
		if _, _, err := net.SplitHostPort(a.addr); err != nil {
			bad(a.flag, "%q is not host:port: %v", a.addr, err)
		}
	}
	if c.APIAddr == "" {
		bad("api-addr", "must not be empty")
	}
	if (c.TLSCertFile == "") != (c.TLSKeyFile == "") {
		bad("tls-cert-file", "--tls-cert-file and --tls-key-file go together")
	}
	for _, ns := range c.NS {
		if inZone(ns, c.Zone) && len(c.NSAddrs[ns]) == 0 {
			bad("ns-addrs", "name server %s lies inside the zone and needs glue (name=ip)", ns)
		}
	}
	for name := range c.NSAddrs {
		if !inZone(name, c.Zone) {
			bad("ns-addrs", "glue is only for name servers inside %s, not %s", c.Zone, name)
		}
	}
	if c.SOARefresh < 14400*time.Second || c.SOARetry < time.Hour || c.SOAExpire < 604800*time.Second {
		bad("soa-refresh", "SOA refresh ≥ 4h, retry ≥ 1h and expire ≥ 168h are what zone checkers accept")
	}
	if c.SOAMinimum < 300*time.Second || c.SOAMinimum > 86400*time.Second {
		bad("soa-minimum", "must be between 5m and 24h")
	}
	if c.RecordTTL < time.Second {
		bad("record-ttl", "must be at least 1s")
	}
	for _, s := range c.Secondaries {
		if _, _, err := net.SplitHostPort(s); err != nil {
			bad("secondaries", "%q is not host:port", s)
		}
	}
	if (len(c.Secondaries) > 0 || len(c.XFRAllow) > 0) && c.TSIGKeyFile == "" {
		bad("tsig-key-file", "zone transfers and NOTIFY need a TSIG key")
	}
	if c.ReconcileInt < time.Second {
		bad("reconcile-interval", "must be at least 1s")
	}
	if c.SignAddr != "" && c.SignToken == "" && !isLoopback(c.SignAddr) {
		bad("sign-token", "the sign endpoint listens off loopback on %s and needs a bearer token", c.SignAddr)
	}
	if c.SignMaxBytes < 1024 {
		bad("sign-max-bytes", "must be at least 1024")
	}
	if c.SignExpiry < 0 || (c.SignExpiry > 0 && c.SignExpiry < time.Minute) {
		bad("sign-expiry", "must be 0 (no x=) or at least 1m")
	}
	switch c.RSABackend {
	case "auto", "openssl", "go":
	default:
		bad("rsa-backend", "%q is not auto, openssl or go", c.RSABackend)
	}
	if c.MilterTimeout < time.Second {
		bad("milter-timeout", "must be at least 1s")
	}
	if c.MilterMaxConns < 1 {
		bad("milter-max-conns", "must be at least 1")
	}
	switch c.MilterOnError {
	case "accept", "tempfail":
	default:
		bad("milter-on-error", "%q is not accept or tempfail", c.MilterOnError)
	}
	if c.DNSRRL < 0 {
		bad("dns-rrl", "must be 0 (off) or a positive rate")
	}
	if c.DNSRRLSlip < 0 {
		bad("dns-rrl-slip", "must be 0 or more")
	}
	if c.DNSTCPMax < 1 {
		bad("dns-tcp-max", "must be at least 1")
	}
	if c.Resolver != "" {
		if _, _, err := net.SplitHostPort(c.Resolver); err != nil {
			bad("resolver", "%q is not host:port", c.Resolver)
		}
	}
	if c.PublishLeadTime <= 0 || c.RotationInterval <= 0 || c.RetireGrace <= 0 {
		bad("rotation-interval", "--publish-lead-time, --rotation-interval and --retire-grace must be positive")
	}
	if c.RotationInterval <= c.PublishLeadTime {
		bad("rotation-interval", "must be longer than --publish-lead-time (%s)", c.PublishLeadTime)
	}
	if c.KeyPoolSize < 0 || c.KeyPoolSize > 1024 {
		bad("key-pool-size", "must be between 0 and 1024")
	}
	return errors.Join(errs...)
}

func inZone(name, zone string) bool { return name == zone || strings.HasSuffix(name, "."+zone) }

func isLoopback(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return false
	}
	if host == "localhost" {
		return true
	}
	ip, err := netip.ParseAddr(host)
	return err == nil && ip.IsLoopback()
}

func parseNSAddrs(items []string) (map[string][]netip.Addr, error) {
	out := map[string][]netip.Addr{}
	for _, it := range items {
		name, ip, ok := strings.Cut(it, "=")
		addr, err := netip.ParseAddr(ip)
		if !ok || err != nil {
			return nil, fmt.Errorf("--ns-addrs: %q is not name=ip", it)
		}
		name = strings.ToLower(strings.TrimSuffix(name, "."))
		out[name] = append(out[name], addr)
	}
	return out, nil
}

// readSecretFile reads a one-line secret (a trailing line end is not part
// of it), naming the flag when it cannot.
func readSecretFile(flagName, path string) (string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return "", fmt.Errorf("--%s: %w", flagName, err)
	}
	v := strings.TrimRight(string(b), "\r\n")
	if v == "" {
		return "", fmt.Errorf("--%s: %s is empty", flagName, path)
	}
	return v, nil
}

func parsePrefixes(flagName string, items []string) ([]netip.Prefix, error) {
	var out []netip.Prefix
	for _, it := range items {
		if p, err := netip.ParsePrefix(it); err == nil {
			out = append(out, p.Masked())
			continue
		}
		a, err := netip.ParseAddr(it)
		if err != nil {
			return nil, fmt.Errorf("--%s: %q is not an address or prefix", flagName, it)
		}
		out = append(out, netip.PrefixFrom(a, a.BitLen()))
	}
	return out, nil
}
