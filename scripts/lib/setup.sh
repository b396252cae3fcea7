# Sourced by scripts/run and scripts/test: installs what a fresh Debian 12 machine lacks.
# Idempotent and quick when everything is present (no apt-get call at all).

PARLEY_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"

# Debian packages the build and the tests need.
PARLEY_DEBS=(
  build-essential cmake ninja-build ccache pkg-config git
  clang-14 libclang-rt-14-dev
  libsodium-dev libssl-dev
  libprotobuf-dev protobuf-compiler
  nlohmann-json3-dev
  libboost1.81-dev libsqlite3-dev sqlite3 libsqlcipher-dev libspdlog-dev libtomlplusplus-dev libcli11-dev
  libjemalloc-dev   # parleyd's allocator (docs/benchmarks.md)
  libgtest-dev libgmock-dev libbenchmark-dev
  nodejs
  microsocks tinyproxy   # tests/transport: a real SOCKS5 and HTTP CONNECT proxy (and obfs4proxy)
  iproute2 nftables iptables openssl python3 obfs4proxy libnetfilter-queue-dev  # tests/reach: the censor simulator
)

parley_log() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }

parley_install_debs() {
  local missing=()
  for p in "${PARLEY_DEBS[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
  done
  # npm may come from Debian's package or with the machine's Node.js; either will do.
  command -v npm >/dev/null 2>&1 || missing+=(npm)
  if [ ${#missing[@]} -gt 0 ]; then
    parley_log "installing Debian packages: ${missing[*]}"
    local sudo=""
    [ "$(id -u)" -ne 0 ] && sudo="sudo"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}"
  fi
}

# npm packages for the interop tests, exactly as locked.
parley_install_npm() {
  local dir="$PARLEY_ROOT/tests/interop"
  if [ ! -f "$dir/node_modules/.package-lock.json" ] ||
     ! cmp -s "$dir/package-lock.json" "$dir/node_modules/.parley-lock"; then
    parley_log "npm ci in tests/interop"
    (cd "$dir" && npm ci --no-audit --no-fund --loglevel=error)
    cp "$dir/package-lock.json" "$dir/node_modules/.parley-lock"
  fi
}

# parley_build DIR [cmake args...]: configures and builds everything with Ninja.
# PARLEY_TARGETS (optional): build only these targets.
parley_build() {
  local dir="$1"; shift
  cmake -S "$PARLEY_ROOT" -B "$dir" -G Ninja "$@" >/dev/null
  # shellcheck disable=SC2086
  ninja -C "$dir" ${PARLEY_TARGETS:-}
}

export CCACHE_DIR="${CCACHE_DIR:-$HOME/.cache/parley-ccache}"
export CCACHE_MAXSIZE="${CCACHE_MAXSIZE:-5G}"
