#!/usr/bin/env bash
# make demo: walks the whole brand guide (docs/brand-guide.md) on one machine,
# as a brand and its customer would, and stops at the first answer that is
# not what the guide says.
#
# It starts, from a fresh temporary data dir (./data is left alone):
#   - cmd/dkimd-standin-resolver on 127.0.0.1:5354, standing in for public
#     DNS: it answers the customer's records from a zone file that this
#     script edits as the customer would edit their DNS, and forwards the
#     names of oxcloud.zone to dkimd's DNS server;
#   - dkimd serve on the README's ports (API :8080, DNS :5353, sign
#     127.0.0.1:8081, ops 127.0.0.1:9090), with --resolver pointing at the
#     stand-in, so that no check of customer DNS goes to the system's
#     resolver.
# Both are stopped on exit. DEMO_API_ADDR, DEMO_DNS_ADDR, DEMO_SIGN_ADDR,
# DEMO_OPS_ADDR, DEMO_RESOLVER_ADDR and DEMO_DIR move it elsewhere (the test
# that runs it does, so as not to clash with a dkimd already running);
# DKIMD and STANDIN name prebuilt binaries (otherwise both are built).
set -euo pipefail
cd "$(dirname "$0")/.."

API=${DEMO_API_ADDR:-127.0.0.1:8080}
DNS=${DEMO_DNS_ADDR:-127.0.0.1:5353}
SIGN=${DEMO_SIGN_ADDR:-127.0.0.1:8081}
OPS=${DEMO_OPS_ADDR:-127.0.0.1:9090}
RESOLVER=${DEMO_RESOLVER_ADDR:-127.0.0.1:5354}
WORK=${DEMO_DIR:-$(mktemp -d -t dkimd-demo.XXXXXX)}
DKIMD=${DKIMD:-}
STANDIN=${STANDIN:-}
if [ -z "$DKIMD" ] || [ -z "$STANDIN" ]; then
  make -s build
  go build -o bin/dkimd-standin-resolver ./cmd/dkimd-standin-resolver
  DKIMD=bin/dkimd STANDIN=bin/dkimd-standin-resolver
fi
for tool in curl dig; do
  command -v "$tool" >/dev/null || { echo "demo: $tool is needed (apt-get install curl bind9-dnsutils)" >&2; exit 1; }
done

DOMAIN=spamtrap.dk
ZONE=oxcloud.zone
CUSTOMER_ZONE=$WORK/customer.zone
export DKIMD_DATA_DIR=$WORK/data
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
}
trap cleanup EXIT

# say prints a heading; run shows a command and runs it.
say() { printf '\n== %s\n' "$*"; }
run() { printf '$ %s\n' "$*"; "$@"; }
fail() { echo "demo: FAILED: $*" >&2; exit 1; }
# call METHOD PATH [curl args]: an API call as the brand; the body goes to
# $WORK/body, the status to $code, and both are shown.
call() {
  local method=$1 path=$2; shift 2
  printf '$ curl -u "$BRAND:$SECRET" -X %s %s %s\n' "$method" "\$B$path" "$*"
  code=$(curl -s -o "$WORK/body" -w '%{http_code}' -u "$BRAND:$SECRET" -X "$method" "$@" "$B$path")
  echo "HTTP $code"
  cat "$WORK/body"
  [ -s "$WORK/body" ] && echo
  return 0
}
want() { [ "$code" = "$1" ] || fail "status $code, want $1"; }
has() { grep -q -- "$1" "$WORK/body" || fail "the answer lacks $1"; }
host() { echo "${1%:*}"; }
port() { echo "${1##*:}"; }
# digz asks dkimd's DNS server; digp asks the stand-in public resolver.
digz() { run dig "$@" +norec @"$(host "$DNS")" -p "$(port "$DNS")"; }
digp() { run dig "$@" @"$(host "$RESOLVER")" -p "$(port "$RESOLVER")"; }

say "start: the stand-in public resolver on $RESOLVER and dkimd serve (API $API, DNS $DNS)"
echo "; the customer's DNS for $DOMAIN: nothing yet" > "$CUSTOMER_ZONE"
"$STANDIN" --listen "$RESOLVER" --forward "$DNS" --zone "$ZONE" --records "$CUSTOMER_ZONE" 2>"$WORK/standin.log" &
pids+=($!)
"$DKIMD" serve --api-addr "$API" --dns-addr "$DNS" --sign-addr "$SIGN" --ops-addr "$OPS" --milter-addr off \
  --zone "$ZONE" --resolver "$RESOLVER" 2>"$WORK/dkimd.log" &
pids+=($!)
for _ in $(seq 1 100); do
  curl -sf "http://$OPS/readyz" >/dev/null 2>&1 && break
  kill -0 "${pids[1]}" 2>/dev/null || { cat "$WORK/dkimd.log" >&2; fail "dkimd serve exited"; }
  sleep 0.1
done
curl -sf "http://$OPS/readyz" >/dev/null || fail "dkimd is not ready after 10 s"

say "the operator provisions the brand acme and its maildomain $DOMAIN"
printf '$ SECRET=$(dkimd brand create acme)\n'
SECRET=$("$DKIMD" brand create acme)
run "$DKIMD" maildomain add acme "$DOMAIN"
BRAND=acme
B=http://$API/cloudapi/v2/mail/dkim

say "step 1: check for existing DKIM keys"
digp TXT "selector1._domainkey.$DOMAIN" +short

say "step 2b: check that access works"
call GET "/$BRAND"
want 404; has NO_DKIM_ENTRIES
printf '$ curl -u "$BRAND:wrong" $B/%s\n' "$BRAND"
code=$(curl -s -o "$WORK/body" -w '%{http_code}' -u "$BRAND:wrong" "$B/$BRAND"); echo "HTTP $code"; cat "$WORK/body"
want 401

say "step 2c: does the domain have keys?"
call GET "/$BRAND/$DOMAIN"
want 404; has DOMAIN_NOT_FOUND

say "mail sent now is signed with the brand's fallback key (d=acme.$ZONE)"
printf 'From: Alice <alice@%s>\nTo: bob@example.org\nSubject: hello\nDate: Sun, 29 Nov 2026 06:10:00 +0000\nMessage-ID: <1@%s>\n\nHi Bob.\n' \
  "$DOMAIN" "$DOMAIN" > "$WORK/msg.eml"
run curl -s -i --data-binary @"$WORK/msg.eml" "http://$SIGN/v1/sign" | tee "$WORK/body"
has "Dkim-Mode: fallback"; has "d=acme.$ZONE"

say "step 2d: generate the keys"
call PUT "/$BRAND/$DOMAIN"
want 201; has '"status":"pending-dns"'
cp "$WORK/body" "$WORK/first-put"
call PUT "/$BRAND/$DOMAIN"
want 200
cmp -s "$WORK/body" "$WORK/first-put" || fail "a repeated PUT changed the entry"
echo "(the repeat answered the same entry)"
call PUT "/$BRAND/$DOMAIN" -H 'Content-Type: application/json' -d '{"keyBits":1024}'
want 400; has INVALID_BODY

say "the public keys are in the provider's zone right away"
digz TXT "selector1-spamtrap-dk._domainkey.$ZONE" | tee "$WORK/body"
has "status: NOERROR"; has "v=DKIM1; k=rsa; p="

say "step 3: before the CNAMEs exist, dkimd's check says missing"
call GET "/$BRAND/$DOMAIN/dns"
want 200; has '"verdict":"missing"'

say "step 3: the customer creates both CNAMEs in their DNS"
run tee -a "$CUSTOMER_ZONE" <<EOF
selector1._domainkey.$DOMAIN. 300 IN CNAME selector1-spamtrap-dk._domainkey.$ZONE.
selector2._domainkey.$DOMAIN. 300 IN CNAME selector2-spamtrap-dk._domainkey.$ZONE.
EOF
call GET "/$BRAND/$DOMAIN/dns"
want 200; has '"verdict":"ok"'
grep -q '"verdict":"missing"' "$WORK/body" && fail "a selector is still missing"
call GET "/$BRAND/$DOMAIN"
want 200; has '"status":"active"'

say "step 4a: the keys exist"
call GET "/$BRAND/$DOMAIN/selector1"
want 200; has '"state":"active"'
call GET "/$BRAND/$DOMAIN/selector9"
want 404; has SELECTOR_NOT_FOUND

say "step 4b: the public key resolves through the CNAME"
digp TXT "selector1._domainkey.$DOMAIN" +short | tee "$WORK/body"
has "selector1-spamtrap-dk._domainkey.$ZONE."; has "v=DKIM1; k=rsa; p="

say "step 4c: mail is now signed with the domain's own key"
run curl -s -i --data-binary @"$WORK/msg.eml" "http://$SIGN/v1/sign" | tee "$WORK/body"
has "Dkim-Mode: aligned"; has "d=$DOMAIN"
printf 'From: someone@unknown.example\nSubject: x\n\nx\n' > "$WORK/unknown.eml"
run curl -s -i --data-binary @"$WORK/unknown.eml" "http://$SIGN/v1/sign" | tee "$WORK/body"
has UNKNOWN_DOMAIN

say "Ed25519: add the pair to the domain"
call PUT "/$BRAND/$DOMAIN" -H 'Content-Type: application/json' -d '{"ed25519":true}'
want 200; has '"selector":"selector2-ed25519"'
run tee -a "$CUSTOMER_ZONE" <<EOF
selector1-ed25519._domainkey.$DOMAIN. 300 IN CNAME selector1-ed25519-spamtrap-dk._domainkey.$ZONE.
selector2-ed25519._domainkey.$DOMAIN. 300 IN CNAME selector2-ed25519-spamtrap-dk._domainkey.$ZONE.
EOF
digp TXT "selector1-ed25519._domainkey.$DOMAIN" +short | tee "$WORK/body"
has "v=DKIM1; k=ed25519; p="
call GET "/$BRAND/$DOMAIN/dns"
want 200
grep -q '"verdict":"missing"' "$WORK/body" && fail "a selector is still missing"
call GET "/$BRAND/$DOMAIN/selector1-ed25519"
want 200; has '"state":"active"'
run curl -s -i --data-binary @"$WORK/msg.eml" "http://$SIGN/v1/sign" | tee "$WORK/body"
has "a=rsa-sha256"; has "a=ed25519-sha256"; has "s=selector1-ed25519"

say "Ed25519: retire the pair again"
call PUT "/$BRAND/$DOMAIN" -H 'Content-Type: application/json' -d '{"ed25519":false}'
want 200; has '"selector":"selector1-ed25519","state":"retiring"'
digz TXT "selector1-ed25519-spamtrap-dk._domainkey.$ZONE" +short | tee "$WORK/body"
has "v=DKIM1; k=ed25519; p="
run curl -s -i --data-binary @"$WORK/msg.eml" "http://$SIGN/v1/sign" | tee "$WORK/body"
has "a=rsa-sha256"
grep -q "a=ed25519-sha256" "$WORK/body" && fail "a retiring Ed25519 key still signs"

say "key rotation: ask for a switch"
call POST "/$BRAND/$DOMAIN/rotate"
want 202; has '"pendingSwitchAt":"'
call POST "/$BRAND/$DOMAIN/rotate"
want 409; has ROTATION_PENDING

say "emergency rotation: switch now"
call POST "/$BRAND/$DOMAIN/rotate?emergency=true"
want 202; has '"activeSelector":"selector2"'; has '"state":"revoked"'
digz TXT "selector1-spamtrap-dk._domainkey.$ZONE" +short | tee "$WORK/body"
has '"v=DKIM1; k=rsa; p="'

say "listing"
call GET "/$BRAND?limit=100"
want 200; has "\"domain\":\"$DOMAIN\""

say "deleting keys before deprovisioning the domain"
call DELETE "/$BRAND/$DOMAIN"
want 204
call GET "/$BRAND/$DOMAIN"
want 404; has DOMAIN_NOT_FOUND
digz TXT "selector1-spamtrap-dk._domainkey.$ZONE" | tee "$WORK/body"
has "status: NXDOMAIN"

say "the customer removes the CNAMEs"
printf '; the customer removed the CNAMEs of %s\n' "$DOMAIN" > "$CUSTOMER_ZONE"
digp TXT "selector1._domainkey.$DOMAIN" +short | tee "$WORK/body"
digp TXT "selector2._domainkey.$DOMAIN" +short | tee -a "$WORK/body"
grep -v '^\$ ' "$WORK/body" | grep -q . && fail "the CNAMEs still resolve"

say "demo done: every step answered as docs/brand-guide.md says"
