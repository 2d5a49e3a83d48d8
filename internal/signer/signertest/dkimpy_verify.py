"""Verify every DKIM-Signature of each message file with dkimpy (Debian's
python3-dkim), resolving keys through one DNS server given as host:port.

Usage: dkimpy_verify.py HOST:PORT FILE...
Prints one JSON object per file: {"file", "signatures", "results": [{"d", "s", "a", "ok", "error"}]}.
"""
import json
import sys

import dkim
import dns.flags
import dns.message
import dns.query
import dns.rdatatype


def make_dnsfunc(host, port):
    def dnsfunc(name, timeout=5):
        if isinstance(name, bytes):
            name = name.decode("ascii")
        q = dns.message.make_query(name, dns.rdatatype.TXT)
        r = dns.query.tcp(q, host, port=port, timeout=timeout)
        want = name.lower().rstrip(".") + "."
        for rrset in r.answer:
            owner = rrset.name.to_text().lower()
            if owner != want:
                continue
            if rrset.rdtype == dns.rdatatype.CNAME:
                want = list(rrset)[0].target.to_text().lower()
            elif rrset.rdtype == dns.rdatatype.TXT:
                return b"".join(list(rrset)[0].strings)
        return None
    return dnsfunc


def main():
    host, port = sys.argv[1].rsplit(":", 1)
    dnsfunc = make_dnsfunc(host, int(port))
    for path in sys.argv[2:]:
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
