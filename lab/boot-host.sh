#!/bin/bash
# webinfra lab: keeps one host running like an EC2 instance: boots it with systemd-nspawn in its
# network namespace, and boots it again when the guest asks for a reboot (exit status 133).
# Any other end (poweroff, a hard kill) ends this loop, as an instance that stopped.
#   boot-host.sh NAME ROOT NETNS
set -u
name=$1 root=$2 netns=$3
while :; do
    # --register=no --keep-unit: this host has no systemd/dbus to register the container with.
    # CAP_NET_ADMIN: the guest owns its network namespace (its firewall), as an instance owns its OS.
    systemd-nspawn --quiet --register=no --keep-unit --machine="$name" --capability=CAP_NET_ADMIN \
        --network-namespace-path="/run/netns/$netns" --boot --directory="$root" </dev/null
    status=$?
    [ "$status" -eq 133 ] || exit "$status"
    echo "boot-host: $name rebooting"
done
