#!/bin/bash
# webinfra: would HAProxy accept CONFIG and RUNTIME with the certificate file CANDIDATE in place of PATH?
#   webinfra-check-haproxy-certificate CONFIG RUNTIME PATH CANDIDATE
# Used before a new certificate replaces the served one (webinfra-config-sync, certbot's deploy hook).
set -euo pipefail
config=$1 runtime=$2 path=$3 candidate=$4
if [ ! -e "$runtime" ]; then
    # A first boot: the stack's runtime file (the next entry of webinfra-config-sync) is not installed
    # yet, and is checked with this certificate in place before it is. webinfra-config-sync has checked
    # the certificate on its own (current, matching its key).
    echo "$runtime is not installed yet: it is checked with this certificate when it is"
    exit 0
fi
check=$(mktemp "${TMPDIR:-/tmp}/webinfra-haproxy-check.XXXXXX.cfg")
trap 'rm -f "$check"' EXIT
sed "s#$path#$candidate#g" "$config" > "$check"
haproxy -c -q -f "$check" -f "$runtime"
