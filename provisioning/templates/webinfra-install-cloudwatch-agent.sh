#!/bin/bash
# webinfra: the CloudWatch agent (memory, disk, and the role's processes), from AWS's regional
# bucket over HTTPS (Debian does not package it). Skipped where the AWS APIs are stood in (the lab).
set -euo pipefail
. /etc/webinfra/webinfra.env
if [ "${WEBINFRA_SESSION_MANAGER:-no}" != yes ]; then
    echo "webinfra-install-cloudwatch-agent: skipped (AWS endpoint override: $WEBINFRA_AWS_ENDPOINT_URL)"
    exit 0
fi
arch=$(dpkg --print-architecture)
url="https://amazoncloudwatch-agent-$WEBINFRA_AWS_REGION.s3.$WEBINFRA_AWS_REGION.amazonaws.com/debian/$arch/latest/amazon-cloudwatch-agent.deb"
package=$(mktemp --suffix=.deb)
trap 'rm -f "$package"' EXIT
curl -fsS --retry 5 --retry-delay 3 --max-time 180 -o "$package" "$url"
dpkg -i "$package"
/opt/aws/amazon-cloudwatch-agent/bin/amazon-cloudwatch-agent-ctl -a fetch-config -m ec2 -s \
    -c file:/etc/webinfra/cloudwatch-agent.json
echo "webinfra-install-cloudwatch-agent: running"
