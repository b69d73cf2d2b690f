#!/bin/bash
# webinfra: the CloudWatch agent: memory, disk, and the role's processes (cloudwatch-agent.json).
set -euo pipefail
webinfra-install-aws-package amazon-cloudwatch-agent \
    'https://amazoncloudwatch-agent-{region}.s3.{region}.amazonaws.com/debian/{arch}/latest/amazon-cloudwatch-agent.deb'
if dpkg-query -W amazon-cloudwatch-agent >/dev/null 2>&1; then
    /opt/aws/amazon-cloudwatch-agent/bin/amazon-cloudwatch-agent-ctl -a fetch-config -m ec2 -s \
        -c file:/etc/webinfra/cloudwatch-agent.json
fi
