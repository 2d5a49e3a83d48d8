"""Verify every DKIM-Signature of each message file with dkimpy (Debian's
python3-dkim), resolving keys as a recursive resolver would: names in the
zone at dkimd's DNS server, other names (the customers' CNAMEs) at the
customers' server, following CNAMEs from one to the other.

Usage: dkimpy_verify.py CUSTOMER_HOST:PORT ZONE_HOST:PORT ZONE FILE...
Prints one JSON object per file: {"file", "signatures", "results": [{"d", "s", "a", "ok", "error"}]}.
"""
import json
import sys

import dkim
import dns.message
import dns.query
import dns.rdatatype


def hostport(s):
    host, port = s.rsplit(":", 1)
    return host, int(port)


def make_dnsfunc(customer, zone_server, zone):
    zone = zone.lower().rstrip(".") + "."

    def server_for(name):
        return zone_server if name == zone or name.endswith("." + zone) else customer

    def dnsfunc(name, timeout=5):
        if isinstance(name, bytes):
            name = name.decode("ascii")
        name = name.lower().rstrip(".") + "."
        for _ in range(8):
            host, port = server_for(name)
            q = dns.message.make_query(name, dns.rdatatype.TXT)
            r = dns.query.tcp(q, host, port=port, timeout=timeout)
            want, nxt = name, None
            for rrset in r.answer:
                if rrset.name.to_text().lower() != want:
                    continue
                if rrset.rdtype == dns.rdatatype.CNAME:
                    want = nxt = list(rrset)[0].target.to_text().lower()
                elif rrset.rdtype == dns.rdatatype.TXT:
                    return b"".join(list(rrset)[0].strings)
            if nxt is None:
                return None
            name = nxt
        return None

    return dnsfunc


def main():
    dnsfunc = make_dnsfunc(hostport(sys.argv[1]), hostport(sys.argv[2]), sys.argv[3])
    for path in sys.argv[4:]:
        with open(path, "rb") as f:
            msg = f.read()
        d = dkim.DKIM(msg)
        n = sum(1 for k, _ in d.headers if k.lower() == b"dkim-signature")
        results = []
        for i in range(n):
            d = dkim.DKIM(msg)
            try:
                ok = d.verify(idx=i, dnsfunc=dnsfunc)
                err = ""
            except Exception as e:  # dkimpy raises on malformed input
                ok, err = False, repr(e)
            sig = d.signature_fields or {}
            results.append({
                "d": sig.get(b"d", b"").decode(),
                "s": sig.get(b"s", b"").decode(),
                "a": sig.get(b"a", b"").decode(),
                "ok": bool(ok),
                "error": err,
            })
        print(json.dumps({"file": path, "signatures": n, "results": results}), flush=True)


main()
