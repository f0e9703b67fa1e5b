#!/usr/bin/env bash
# Install what shortpath needs on a fresh Debian machine.
#   scripts/setup.sh demo   Python packages only (no root needed)
#   scripts/setup.sh test   also Debian packages for the lab tests, when run as root
set -euo pipefail
cd "$(dirname "$0")/.."
what=${1:-test}
PY=${PYTHON:-python3}

if [ "$what" = test ] && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    # command -> Debian package; installed only when missing so repeat runs are quick.
    need=()
    # iptables only for its NFQUEUE target (the lab's link emulator); sysctl from procps.
    for pair in turnserver:coturn iptables:iptables ip:iproute2 nft:nftables tc:iproute2 sysctl:procps; do
        command -v "${pair%%:*}" >/dev/null 2>&1 || need+=("${pair##*:}")
    done
    if [ ${#need[@]} -gt 0 ]; then
        echo "setup: apt-get install ${need[*]}"
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
    fi
fi

extras=""
[ "$what" = test ] && extras="[test]"
if ! $PY -c "import shortpath, aiortc, aioice, cryptography" 2>/dev/null || [ "$what" = test ]; then
    $PY -m pip install -q --disable-pip-version-check -e ".${extras}" 2>&1 | grep -v "Running pip as the 'root' user" || true
fi
