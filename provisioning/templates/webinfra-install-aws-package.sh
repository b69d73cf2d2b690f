#!/bin/bash
# webinfra: install a package AWS publishes for Debian (its agents), from AWS's own regional bucket
# over HTTPS; Debian does not package them. Skipped where the AWS APIs are stood in (the local lab),
# since the agents only talk to the real services.
#   webinfra-install-aws-package NAME URL     (URL may use {region} and {arch})
# Exits 0 when installed or skipped (callers check the package), non-zero when installing failed.
set -euo pipefail
. /etc/webinfra/webinfra.env
name=$1 url=$2
if [ "${WEBINFRA_AWS_AGENTS:-no}" != yes ]; then
    echo "webinfra-install-aws-package: $name skipped (AWS endpoint override: $WEBINFRA_AWS_ENDPOINT_URL)"
    exit 0
fi
if dpkg-query -W -f='${Status}' "$name" 2>/dev/null | grep -q "install ok installed"; then
    exit 0
fi
url=${url//\{region\}/$WEBINFRA_AWS_REGION}
url=${url//\{arch\}/$(dpkg --print-architecture)}
package=$(mktemp --suffix=.deb)
trap 'rm -f "$package"' EXIT
curl -fsS --retry 5 --retry-delay 3 --max-time 180 -o "$package" "$url"
dpkg -i "$package"
echo "webinfra-install-aws-package: $name $(dpkg-query -W -f='${Version}' "$name") installed"
