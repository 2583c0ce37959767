# Sourced by scripts/test and scripts/run-example: installs what is missing, and only that.
# Debian packages need root (or sudo); Python test tools come from PyPI.

APT_PACKAGES=(pkg-config libssl-dev libwebsockets-dev libsqlite3-dev libpq-dev libcurl4 curl python3 python3-pip openssl procps)
# The operator console's browser tests: headless Chromium and its driver (Debian's), driven by selenium (PyPI);
# the PostgreSQL tests: a throwaway server started from Debian's postgresql binaries; the load-balancer test:
# nginx in front of two replicas (docs/deploying.md's configuration).
TEST_APT_PACKAGES=(chromium chromium-driver postgresql nginx-light)
PY_MODULES=("jwt:PyJWT" "websockets:websockets" "cryptography:cryptography" "selenium:selenium")

say() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }

as_root() {
    if [ "$(id -u)" = 0 ]; then "$@"
    elif command -v sudo >/dev/null; then sudo "$@"
    else echo "error: '$*' needs root and sudo is not installed" >&2; return 1
    fi
}

ensure_apt() {
    local missing=() p
    for p in "${APT_PACKAGES[@]}" "$@"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing+=("$p")
    done
    if [ ${#missing[@]} -gt 0 ]; then
        say "installing Debian packages: ${missing[*]}"
        as_root apt-get update -qq
        as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
    fi
}

ensure_python_modules() {
    local missing=() entry
    for entry in "${PY_MODULES[@]}"; do
        python3 -c "import ${entry%%:*}" 2>/dev/null || missing+=("${entry#*:}")
    done
    if [ ${#missing[@]} -gt 0 ]; then
        say "installing Python test tools: ${missing[*]}"
        python3 -m pip install -q --disable-pip-version-check "${missing[@]}" 2>/dev/null \
            || python3 -m pip install -q --disable-pip-version-check --break-system-packages "${missing[@]}"
    fi
}

ensure_swift() {
    if ! command -v swift >/dev/null; then
        for d in /opt/swift/usr/bin /usr/share/swift/usr/bin; do
            if [ -x "$d/swift" ]; then export PATH="$d:$PATH"; break; fi
        done
    fi
    command -v swift >/dev/null || {
        echo "error: Swift 6 is needed and was not found; install a Swift 6 toolchain (swift.org) and retry" >&2
        return 1
    }
}
