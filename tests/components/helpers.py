"""What the component tests share."""

# The security-group rule resources' type tokens, as the recording mocks see them.
INGRESS = "aws:vpc/securityGroupIngressRule:SecurityGroupIngressRule"
EGRESS = "aws:vpc/securityGroupEgressRule:SecurityGroupEgressRule"
