#!/usr/bin/env bash
# The full test suite: installs test dependencies, then format check, clippy, and every test.
set -euo pipefail
ROOT="$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

"$ROOT/scripts/deps.sh"
# shellcheck source=/dev/null
source "$ROOT/.deps/env.sh"
export ANVIL_BIN DBIP_V4_MMDB DBIP_V6_MMDB WEB3PY_PYTHON VIEM_DIR REDIS_SERVER_BIN

echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== cargo clippy"
cargo clippy --workspace --all-targets -- -D warnings
echo "== cargo build --bins (the failover tests run edge nodes and gateways as real processes)"
cargo build --workspace --bins
echo "== cargo test"
cargo test --workspace
