#!/bin/bash
# webinfra: the Session Manager and CloudWatch agents, at first boot (both roles' bootstraps).
#
# Not fatal, by choice: the agents are for access and monitoring, and first boot stopping here
# would leave a host that serves nothing (the site down, or a pair without its standby, for want
# of an agent). Loud instead:
#   - the reason is in the boot log (cloud-init-output.log, EC2's console output) and the journal
#     (tag webinfra-install-agents, priority err);
#   - /var/lib/webinfra/agents-missing names the missing agents until a run installs them;
#   - without the CloudWatch agent, the host's process alarms (procstat, missing data breaching)
#     fire within minutes.
# Run it again to retry (it skips what is installed): sudo webinfra-install-agents
set -uo pipefail
marker=/var/lib/webinfra/agents-missing
missing=()
webinfra-install-ssm-agent || missing+=(amazon-ssm-agent)
webinfra-install-cloudwatch-agent || missing+=(amazon-cloudwatch-agent)
if [ ${#missing[@]} -eq 0 ]; then
    rm -f "$marker"
    exit 0
fi
mkdir -p "${marker%/*}"
printf '%s\n' "${missing[@]}" > "$marker"
message="NOT INSTALLED: ${missing[*]}; this host goes on without them (the reason is above; retry: webinfra-install-agents)"
echo "webinfra-install-agents: $message" >&2
logger -p user.err -t webinfra-install-agents "$message" || true
