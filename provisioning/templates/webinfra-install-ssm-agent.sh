#!/bin/bash
# webinfra: AWS Systems Manager agent, for Session Manager access instead of open SSH.
set -euo pipefail
webinfra-install-aws-package amazon-ssm-agent \
    'https://s3.{region}.amazonaws.com/amazon-ssm-{region}/latest/debian_{arch}/amazon-ssm-agent.deb'
if dpkg-query -W amazon-ssm-agent >/dev/null 2>&1; then
    systemctl enable --now amazon-ssm-agent
fi
