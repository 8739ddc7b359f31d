#!/usr/bin/env bash
# The billd demo: start a local i'mport sandbox, bill the example schedules.toml day by day from 2025-01-31 to
# 2025-04-01 with `billd tick --as-of`, then show the charges, the subscriptions and what the gateway recorded.
set -euo pipefail
cd "$(dirname "$0")"

cargo build --quiet --bin billd
billd="${CARGO_TARGET_DIR:-target}/debug/billd"
work=$(mktemp -d)
port=${BILLD_DEMO_PORT:-8787}
export BILLD_CONFIG="$PWD/schedules.toml"
export BILLD_BILLING__DATABASE="$work/billd.sqlite3"   # keep the demo's database out of the repo
export BILLD_GATEWAY__BASE_URL="http://127.0.0.1:$port"

"$billd" sandbox --listen "127.0.0.1:$port" --sandbox-config demo/sandbox.toml >"$work/sandbox.log" 2>&1 &
sandbox=$!
trap 'kill $sandbox 2>/dev/null; rm -rf "$work"' EXIT
for _ in $(seq 50); do
  curl -s -o /dev/null "http://127.0.0.1:$port/__sandbox/payments" && break
  sleep 0.1
done

echo "== billing every day at 10:00 Asia/Seoul from 2025-01-31 to 2025-04-01 (failures are logged as they happen)"
day=2025-01-31
while [[ "$day" < 2025-04-02 ]]; do
  BILLD_LOG=warn "$billd" tick --simulate --as-of "${day}T10:00:00+09:00"
  day=$(date -u -d "$day + 1 day" +%F)
done

echo
echo "== billd charges"
"$billd" charges
echo
echo "== billd subscriptions"
"$billd" subscriptions
echo
echo "== what the gateway (sandbox) charged: paid payments per customer"
curl -s "http://127.0.0.1:$port/__sandbox/payments" | python3 -c '
import collections, json, sys
paid = collections.Counter(p["customer_uid"] for p in json.load(sys.stdin) if p["status"] == "paid")
for c, n in sorted(paid.items()): print(f"  {c}: {n} paid")'
echo
echo "== running the same days again charges nobody twice:"
BILLD_LOG=warn "$billd" tick --simulate --as-of "2025-04-01T10:00:00+09:00"
curl -s "http://127.0.0.1:$port/__sandbox/payments" | python3 -c '
import json, sys
ps = json.load(sys.stdin); paid = [p for p in ps if p["status"] == "paid"]
uids = {p["merchant_uid"] for p in paid}
print(f"  {len(paid)} paid payments, {len(uids)} distinct merchant_uids")'
