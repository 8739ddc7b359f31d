#!/usr/bin/env bash
# The billd demo: start a local i'mport sandbox on a free port, bill the example schedules.toml day by day from
# 2025-01-31 to 2025-04-01 with `billd tick --simulate --as-of`, then show the charges, the subscriptions, what the
# gateway recorded and a summary. The demo's database stays in demo/last-run/ (ignored by git) for you to explore.
set -euo pipefail
cd "$(dirname "$0")"

# The first build takes minutes on a fresh machine: cargo's progress shows (on stderr) that it is working.
echo "== building billd (cargo build; the first build takes a few minutes)" >&2
cargo build --bin billd
billd="${CARGO_TARGET_DIR:-target}/debug/billd"
run="$PWD/demo/last-run"
rm -rf "$run" && mkdir -p "$run"
# A free port unless one is asked for (another sandbox may be listening on the default 8787).
port=${BILLD_DEMO_PORT:-$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')}
export BILLD_CONFIG="$PWD/schedules.toml"
export BILLD_BILLING__DATABASE="$run/billd.sqlite3"   # the demo's database, out of the way of a real one
export BILLD_GATEWAY__BASE_URL="http://127.0.0.1:$port"

"$billd" sandbox --listen "127.0.0.1:$port" --sandbox-config demo/sandbox.toml >"$run/sandbox.log" 2>&1 &
sandbox=$!
trap 'kill $sandbox 2>/dev/null || true' EXIT
for _ in $(seq 100); do
  curl -s -o /dev/null "http://127.0.0.1:$port/__sandbox/payments" && break
  sleep 0.1
done
if ! kill -0 "$sandbox" 2>/dev/null; then
  echo "demo: the sandbox did not start on 127.0.0.1:$port:" >&2
  cat "$run/sandbox.log" >&2
  exit 1
fi

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

echo
echo "== summary"
"$billd" charges --json >"$run/charges.json"
"$billd" subscriptions --json >"$run/subscriptions.json"
python3 - "$run" <<'PY'
import collections, json, sys
run = sys.argv[1]
charges = json.load(open(f"{run}/charges.json"))
subs = json.load(open(f"{run}/subscriptions.json"))
by = collections.Counter(c["failure"] or c["status"] for c in charges)
print(f"  {len(charges)} charge attempts: {by.get('paid', 0)} paid, {by.get('declined', 0)} declined, "
      f"{by.get('rejected', 0)} rejected")
for s in subs:
    if s["status"] in ("canceled", "suspended"):
        what = f"{s['status']}: {s['why'] or 'no reason recorded'}"
    elif s["next_charge"]:
        n = s["next_charge"]
        what = f"{s['status']}: next {n['kind']} {n['at']} ({s['retries_left']} retries left)"
    else:
        what = f"{s['status']}: nothing further to charge"
    print(f"  {s['id']:<10} {what}")
PY
echo
echo "The demo's database is $run/billd.sqlite3. Explore it, for example:"
echo "  BILLD_CONFIG=$PWD/schedules.toml BILLD_BILLING__DATABASE=$run/billd.sqlite3 $billd subscriptions show sub-0005"
echo "  BILLD_CONFIG=$PWD/schedules.toml BILLD_BILLING__DATABASE=$run/billd.sqlite3 $billd charges --failed"
