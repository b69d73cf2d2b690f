#!/bin/bash
# webinfra lab: keeps one host running like an EC2 instance: boots it with systemd-nspawn in its
# network namespace, and boots it again when the guest asks for a reboot (exit status 133).
# Any other end (poweroff, a hard kill) ends this loop, as an instance that stopped.
#   boot-host.sh NAME ROOT NETNS
set -u
name=$1 root=$2 netns=$3
# A cgroup of its own, in each hierarchy systemd uses (the named "systemd" one and the unified one):
# nspawn --keep-unit puts the container below the cgroup it starts in. Without this every host started
# in the same one, so every host's systemd managed the same /payload/system.slice/<unit>.service: one
# host removed a unit's cgroup while another was starting the same unit in it, and that start failed
# ("Failed at step CGROUP spawning ...: No such file or directory"). lab/hosts.py removes them at `down`.
for hierarchy in /sys/fs/cgroup/systemd /sys/fs/cgroup/unified /sys/fs/cgroup; do
    [ -e "$hierarchy/cgroup.procs" ] || continue
    mkdir -p "$hierarchy/webinfra-lab/$name"
    echo $$ > "$hierarchy/webinfra-lab/$name/cgroup.procs"
done
while :; do
    # --register=no --keep-unit: this host has no systemd/dbus to register the container with.
    # CAP_NET_ADMIN: the guest owns its network namespace (its firewall), as an instance owns its OS.
    systemd-nspawn --quiet --register=no --keep-unit --machine="$name" --capability=CAP_NET_ADMIN \
        --network-namespace-path="/run/netns/$netns" --boot --directory="$root" </dev/null
    status=$?
    [ "$status" -eq 133 ] || exit "$status"
    echo "boot-host: $name rebooting"
done
