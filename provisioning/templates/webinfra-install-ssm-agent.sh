#!/bin/bash
# webinfra: AWS Systems Manager agent, for Session Manager access instead of open SSH. Debian's
# images do not ship it: fetched from AWS's regional bucket over HTTPS. Skipped where the AWS APIs
# are stood in (the local lab), since the agent can only talk to the real service.
set -euo pipefail
. /etc/webinfra/webinfra.env
if [ "${WEBINFRA_SESSION_MANAGER:-no}" != yes ]; then
    echo "webinfra-install-ssm-agent: skipped (AWS endpoint override: $WEBINFRA_AWS_ENDPOINT_URL)"
    exit 0
fi
if systemctl is-enabled --quiet amazon-ssm-agent 2>/dev/null; then
    exit 0
fi
arch=$(dpkg --print-architecture)
url="https://s3.$WEBINFRA_AWS_REGION.amazonaws.com/amazon-ssm-$WEBINFRA_AWS_REGION/latest/debian_$arch/amazon-ssm-agent.deb"
package=$(mktemp --suffix=.deb)
trap 'rm -f "$package"' EXIT
curl -fsS --retry 5 --retry-delay 3 --max-time 120 -o "$package" "$url"
dpkg -i "$package"
systemctl enable --now amazon-ssm-agent
echo "webinfra-install-ssm-agent: $(dpkg-query -W -f='${Version}' amazon-ssm-agent) running"
