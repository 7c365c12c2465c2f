#!/usr/bin/env bash
# Checks deploy/systemd/tsoracle-paxos.service with `systemd-analyze verify`.
#
#   deploy/systemd/verify.sh [BINARY]
#
# `systemd-analyze verify` reports an ExecStart= binary that does not exist,
# so the unit is checked from a copy in a temporary directory whose
# /usr/local/bin/tsoracle-paxos is replaced by BINARY (default:
# target/debug/tsoracle-paxos when it was built, else /bin/true). Any output
# line that names the unit (an unknown key, a value that does not parse, a
# missing command) fails the check, and so does a non-zero exit status.
# Other lines are about the host's own units (their own unknown keys or
# missing commands, on some hosts) and are only shown. On a Debian 12 host
# (systemd 252) without systemd running as init, there are none.
#
# The sysusers.d file is checked too (into an empty temporary root), when
# systemd-sysusers is installed.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/../.." && pwd)
unit_name=tsoracle-paxos.service
installed_binary=/usr/local/bin/tsoracle-paxos

if [[ $# -gt 1 ]]; then
    echo "usage: $0 [BINARY]" >&2
    exit 2
fi
if [[ $# -eq 1 ]]; then
    binary=$1
elif [[ -x $repo/target/debug/tsoracle-paxos ]]; then
    binary=$repo/target/debug/tsoracle-paxos
else
    binary=/bin/true
fi
# ExecStart= needs an absolute path.
binary=$(realpath -- "$binary")
if [[ ! -x $binary ]]; then
    echo "verify.sh: $binary is not an executable file" >&2
    exit 2
fi
command -v systemd-analyze >/dev/null || {
    echo "verify.sh: systemd-analyze is not installed (Debian: apt-get install systemd)" >&2
    exit 2
}

tmp=$(mktemp -d)
trap 'rm -rf -- "$tmp"' EXIT

# Bash substitution rather than sed: the path may hold any character. The
# quotes around "$binary" keep a '&' in it literal (bash 5.2's
# patsub_replacement).
while IFS= read -r line || [[ -n $line ]]; do
    printf '%s\n' "${line//"$installed_binary"/"$binary"}"
done <"$here/$unit_name" >"$tmp/$unit_name"

echo "systemd-analyze verify $unit_name (ExecStart binary: $binary)"
status=0
output=$(systemd-analyze verify "$tmp/$unit_name" 2>&1) || status=$?

failed=0
if [[ -n $output ]]; then
    while IFS= read -r line; do
        if [[ $line == *"$unit_name"* ]]; then
            echo "  UNIT: $line"
            failed=1
        else
            echo "  host (ignored): $line"
        fi
    done <<<"$output"
fi
if [[ $status -ne 0 ]]; then
    echo "  systemd-analyze exited with status $status"
    failed=1
fi

if command -v systemd-sysusers >/dev/null; then
    echo "systemd-sysusers tsoracle-paxos.sysusers (into an empty root)"
    mkdir -p "$tmp/root/etc"
    if sysusers=$(systemd-sysusers --root="$tmp/root" "$here/tsoracle-paxos.sysusers" 2>&1) &&
        grep -q '^tsoracle:' "$tmp/root/etc/passwd"; then
        sed 's/^/  /' <<<"$sysusers"
    else
        echo "  FAILED: $sysusers"
        failed=1
    fi
fi

if [[ $failed -ne 0 ]]; then
    echo "FAIL"
    exit 1
fi
echo "OK"
