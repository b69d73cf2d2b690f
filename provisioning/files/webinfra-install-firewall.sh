#!/bin/bash
# webinfra: install this host's firewall after nft has checked it; enabled at every boot.
set -euo pipefail
nft -c -f /etc/webinfra/nftables.conf
install -m 0755 /etc/webinfra/nftables.conf /etc/nftables.conf
systemctl enable nftables
systemctl restart nftables
nft list table inet webinfra_host >/dev/null
echo "webinfra-install-firewall: input policy drop, $(grep -c ' accept comment' /etc/nftables.conf) allow rules"
