#!/usr/bin/env bash
# Hedged reads (issue 15) in the slow-node workload: the p99 through the gateway with and
# without hedging, and the hedge share.
#
#   loadtests/hedge.sh        HEDGE_RUNS=3 HEDGE_READS=2000 HEDGE_WORKERS=4 by default
#
# Runs the bench client `tests/e2e/examples/hedge.rs` (the e2e test's workload, larger): anvil
# behind two edge nodes, the one nearer the caller (London; geo routing ranks it first) behind
# an upstream that holds every HEDGE_EVERY-th (25th) `eth_getBalance` for HEDGE_SLOW_MS (300);
# reads of distinct accounts, so every read misses every cache and reaches an upstream. Per run
# a gateway with `[hedge] enabled = false`, then one with hedging on (`max_share` =
# HEDGE_MAX_SHARE, 0.1), each after HEDGE_WARM_UP (100) reads. Prints a Markdown table; it does
# not write RESULTS.md (paste the table into its "Hedged reads" section).
#
# Knobs: HEDGE_RUNS, HEDGE_READS, HEDGE_WORKERS (sequential clients at once), HEDGE_EVERY,
# HEDGE_SLOW_MS, HEDGE_MAX_SHARE, HEDGE_WARM_UP, HEDGE_PROFILE (debug, or release),
# HEDGE_NO_BUILD=1.
set -euo pipefail
ROOT="$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
PROFILE=${HEDGE_PROFILE:-debug}
TD=${CARGO_TARGET_DIR:-$ROOT/target}
[ -f .deps/env.sh ] || bash scripts/deps.sh >/dev/null
# shellcheck source=/dev/null
source .deps/env.sh

if [ -z "${HEDGE_NO_BUILD:-}" ]; then
  flag=()
  [ "$PROFILE" = release ] && flag=(--release)
  cargo build "${flag[@]}" --quiet -p e2e --example hedge
fi
LOAD_START=$(cut -d' ' -f1-3 /proc/loadavg)
OUT=$(mktemp)
trap 'rm -f "$OUT"' EXIT
RUST_LOG=warn "$TD/$PROFILE/examples/hedge" --runs "${HEDGE_RUNS:-3}" --reads "${HEDGE_READS:-2000}" \
  --warm-up "${HEDGE_WARM_UP:-100}" --workers "${HEDGE_WORKERS:-4}" --every "${HEDGE_EVERY:-25}" \
  --slow-ms "${HEDGE_SLOW_MS:-300}" --max-share "${HEDGE_MAX_SHARE:-0.1}" | sed -n 's/^HEDGERESULT //p' >"$OUT"
python3 - "$OUT" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
print("| run | hedging | reads | p50 ms | p95 ms | **p99 ms** | p99.9 ms | max ms | hedges sent (**share**) | won / lost | budget exhausted | answered by | errors |")
print("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- | ---: |")
for r in rows:
    share = r["hedges_sent"] / r["reads"]
    regions = ", ".join(f"{k} {v:,}" for k, v in sorted(r["by_region"].items()))
    mode = "on" if r["hedging"] else "off"
    print(f"| {r['run']} | {mode} | {r['reads']:,} | {r['p50_ms']:.1f} | {r['p95_ms']:.1f} "
          f"| **{r['p99_ms']:.1f}** | {r['p999_ms']:.1f} | {r['max_ms']:.1f} | {r['hedges_sent']} (**{share:.1%}**) "
          f"| {r['hedges_won']} / {r['hedges_lost']} | {r['budget_exhausted']} | {regions} | {r['errors']} |")
PY
echo "load average at start: $LOAD_START; profile: $PROFILE; commit $(git rev-parse --short HEAD)"
