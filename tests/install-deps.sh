#!/usr/bin/env bash
# install-deps.sh -- installs the Debian 12 packages cs-pdns builds, tests and demos with.
# Must not: install anything when everything is already there (it is called by every run).
set -euo pipefail
PKGS=(build-essential cmake pkg-config
      librdkafka-dev liblua5.4-dev lua5.4 lua-cjson lua-cjson-dev libmariadb-dev
      libcurl4-openssl-dev libssl-dev libmicrohttpd-dev
      mariadb-server mariadb-client pdns-server pdns-backend-mysql dnsutils kcat python3)
missing=()
for p in "${PKGS[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
    if [[ $(id -u) -ne 0 ]]; then
        echo "install-deps.sh: missing packages (${missing[*]}); run as root or install them" >&2
        exit 1
    fi
    echo "installing: ${missing[*]}"
    apt-get update -q
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${missing[@]}"
fi
