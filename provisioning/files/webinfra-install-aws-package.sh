#!/bin/bash
# webinfra: install a package AWS publishes for Debian (its agents), from AWS's own regional bucket
# over HTTPS; Debian does not package them.
#   webinfra-install-aws-package NAME URL     (URL may use {region} and {arch})
# Exits 0 when the package is installed, non-zero with the reason when it is not.
#
# The package lock. Debian's cloud images run unattended-upgrades. cloud-final.service (cloud-init's
# `packages`, then runcmd) is ordered Before=apt-daily.service, but apt-daily-upgrade.service (the
# unattended upgrade itself) is not ordered against cloud-init, so it can hold dpkg's lock while
# this runs, and a bare `dpkg -i` fails at once. apt-get waits for that lock (fcntl locks on
# /var/lib/dpkg/lock-frontend, then /var/lib/dpkg/lock; flock(1) would not see them) for
# DPkg::Lock::Timeout seconds (apt >= 1.9.11; Debian 12 has 2.6), then fails with the holder's
# pid and name. (cloud-init's own `packages` step waits up to 30 s for the same locks.)
set -euo pipefail
. /etc/webinfra/webinfra.env
name=$1 url=$2
# Long enough for an unattended upgrade of an older image; bounded, so first boot goes on.
lock_timeout=${WEBINFRA_PACKAGE_LOCK_TIMEOUT:-300}
say() { echo "webinfra-install-aws-package: $name: $*"; }
if dpkg-query -W -f='${Status}' "$name" 2>/dev/null | grep -q "install ok installed"; then
    exit 0
fi
url=${url//\{region\}/$WEBINFRA_AWS_REGION}
url=${url//\{arch\}/$(dpkg --print-architecture)}
workdir=$(mktemp -d)
trap 'rm -rf "$workdir"' EXIT
chmod 0755 "$workdir"  # apt reads the package as its unprivileged _apt user
package=$workdir/$name.deb
# Bounded too: retries of transient failures stop after 2 minutes, each attempt after 2 minutes.
if ! curl -fsS --connect-timeout 10 --max-time 120 --retry 5 --retry-delay 3 --retry-max-time 120 \
        -o "$package" "$url"; then
    say "NOT INSTALLED: the download of $url failed" >&2
    exit 1
fi
chmod 0644 "$package"
if ! LC_ALL=C DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
        -o DPkg::Lock::Timeout="$lock_timeout" "$package" 2>&1 | tee "$workdir/apt.log"; then
    if grep -qE "Could not get lock|Unable to acquire the dpkg" "$workdir/apt.log"; then
        say "NOT INSTALLED: the package lock was still held after ${lock_timeout}s (by the process named above)" >&2
    else
        say "NOT INSTALLED: apt-get failed (above)" >&2
    fi
    exit 1
fi
say "$(dpkg-query -W -f='${Version}' "$name") installed from $url"
