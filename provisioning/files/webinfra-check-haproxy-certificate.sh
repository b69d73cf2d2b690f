#!/bin/bash
# webinfra: would HAProxy accept CONFIG with the certificate file CANDIDATE in place of PATH?
#   webinfra-check-haproxy-certificate CONFIG PATH CANDIDATE
# Used before a new certificate replaces the served one (webinfra-config-sync, certbot's deploy hook).
set -euo pipefail
config=$1 path=$2 candidate=$3
if ! grep -qF -- "$path" "$config"; then
    # A first boot: the stack's HAProxy configuration (the next entry of webinfra-config-sync) is not
    # installed yet, and is checked with this certificate in place before it is. webinfra-config-sync has
    # checked the certificate on its own (current, matching its key).
    echo "$config does not use $path yet: the configuration that will is checked with it"
    exit 0
fi
check=$(mktemp "${TMPDIR:-/tmp}/webinfra-haproxy-check.XXXXXX.cfg")
trap 'rm -f "$check"' EXIT
sed "s#$path#$candidate#g" "$config" > "$check"
haproxy -c -q -f "$check"
