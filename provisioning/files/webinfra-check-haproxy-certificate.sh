#!/bin/bash
# webinfra: would HAProxy accept CONFIG with the certificate file CANDIDATE in place of PATH?
#   webinfra-check-haproxy-certificate CONFIG PATH CANDIDATE
# Used before a new certificate replaces the served one (webinfra-config-sync, certbot's deploy hook).
set -euo pipefail
config=$1 path=$2 candidate=$3
grep -qF -- "$path" "$config" || { echo "$config does not use $path" >&2; exit 1; }
check=$(mktemp "${TMPDIR:-/tmp}/webinfra-haproxy-check.XXXXXX.cfg")
trap 'rm -f "$check"' EXIT
sed "s#$path#$candidate#g" "$config" > "$check"
haproxy -c -q -f "$check"
