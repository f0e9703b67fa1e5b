#!/usr/bin/env bash
# Install what shortpath needs on a fresh Debian machine, into a virtual environment.
#   scripts/setup.sh demo   the Python packages only (no root needed)
#   scripts/setup.sh test   also the Debian packages that the tests, the lab and the benchmarks
#                           use (installed when run as root; skipped with a note otherwise)
#
# Python: everything goes into a virtual environment ($VENV, default .venv), made with $PYTHON
# (default python3). That works with Debian's own /usr/bin/python3, which refuses a plain
# `pip install` (PEP 668, "externally-managed-environment"), as well as with any other Python >= 3.11.
# A failed pip install stops this script with pip's own error and a non-zero exit status.
set -euo pipefail
cd "$(dirname "$0")/.."
what=${1:-test}
PY=${PYTHON:-python3}
VENV=${VENV:-.venv}

# Every Debian package that any test, lab tool or benchmark uses, with what it is for. This is the
# one list; README.md and docs/lab.md point here. Format: "package:command-or-library  purpose".
# A package is installed only when its probe (a command on PATH, or a shared library) is missing,
# so repeat runs are quick.
DEBIAN_TEST_PACKAGES=(
    "coturn:turnserver             the TURN/STUN server the lab and the TURN tests run"
    "iptables:iptables             NFQUEUE rules that feed the lab's link emulator"
    "nftables:nft                  the lab's NATs (RFC 4787 types) and firewall presets"
    "iproute2:ip                   network namespaces, veth, addresses, routes (ip); tbf/htb (tc)"
    "procps:sysctl                 per-namespace sysctls (forwarding, conntrack timeouts, TCP CC)"
    "libpcap0.8:lib:libpcap.so.0.8 scapy's packet capture filter in netns_lab.capture"
    "redis-server:redis-server     the shared broker store of a gateway cluster (#14): the tests start their own"
    "chromium:chromium             the real browser of the browser-client tests (#16), driven headless by Playwright"
)
DEBIAN_DEMO_PACKAGES=(
    "python3-venv:venv             creating the virtual environment with Debian's python3"
)

have() {  # have PROBE: a command on PATH, or lib:SONAME known to the dynamic linker
    case "$1" in
        venv) "$PY" -c "import ensurepip, venv" >/dev/null 2>&1 ;;
        lib:*) ldconfig -p 2>/dev/null | grep -q "${1#lib:} " ;;
        *) command -v "$1" >/dev/null 2>&1 ;;
    esac
}

apt_install() {  # apt_install ENTRY... : install the packages whose probes fail (root only)
    local need=() entry pkg probe
    for entry in "$@"; do
        entry=${entry%% *}; pkg=${entry%%:*}; probe=${entry#*:}
        have "$probe" || need+=("$pkg")
    done
    [ ${#need[@]} -eq 0 ] && return 0
    if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null; then
        echo "setup: missing Debian packages: ${need[*]} (run as root to install them; lab tests will be skipped)" >&2
        return 0
    fi
    echo "setup: apt-get install ${need[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
}

apt_install "${DEBIAN_DEMO_PACKAGES[@]}"
[ "$what" = test ] && apt_install "${DEBIAN_TEST_PACKAGES[@]}"

if [ ! -x "$VENV/bin/python" ]; then
    if ! "$PY" -m venv "$VENV"; then
        echo "setup: '$PY -m venv $VENV' failed; on Debian install python3-venv (as root: apt-get install python3-venv)" >&2
        exit 1
    fi
fi
extras=""
[ "$what" = test ] && extras="[test]"
if ! "$VENV/bin/python" -c "import shortpath, aiortc, aioice, cryptography" 2>/dev/null || [ "$what" = test ]; then
    # PIP_ROOT_USER_ACTION: the venv is ours, so pip's warning about running as root is noise.
    PIP_ROOT_USER_ACTION=ignore "$VENV/bin/python" -m pip install -q --disable-pip-version-check -e ".${extras}"
fi
