#!/bin/bash
# webinfra: record this load balancer's VRRP state (keepalived's notify scripts call it), for the
# certificate service (only the active load balancer asks for a certificate) and for people:
#   cat /run/webinfra/lb-state
set -euo pipefail
state=$1
case $state in
    MASTER|BACKUP|FAULT|STOPPED) ;;
    *) echo "webinfra-lb-state: unknown state $state" >&2; exit 2 ;;
esac
install -d -m 0755 /run/webinfra
printf '%s\n' "$state" > /run/webinfra/lb-state.new
mv /run/webinfra/lb-state.new /run/webinfra/lb-state
logger -t webinfra-lb-state -- "this load balancer is now $state"
