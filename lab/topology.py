"""What the lab boots, derived from the program's declarations (pure: no I/O, no root).

`plan_from_program()` turns a mock run of the Pulumi program into a `LabPlan`: the hosts with their
addresses, security groups and user-data, the security-group rules, and the SSM parameters. The
nftables rulesets that make the lab's network behave like the VPC are rendered here too:

- `security_groups_ruleset`: the declared security groups, enforced outside the hosts (as AWS
  enforces them outside the instance), stateful, default drop.
- `gateway_ruleset`: the internet gateway: 1:1 NAT between public and private addresses, and
  forwarding only between the lab's own prefixes (nothing leads out of the lab).
"""

from __future__ import annotations

import base64
import gzip
import ipaddress
from dataclasses import dataclass, field

import yaml

from lab.mock_cloud import ProgramRun
from lab.mock_tls import unwrap

INGRESS = "aws:vpc/securityGroupIngressRule:SecurityGroupIngressRule"
EGRESS = "aws:vpc/securityGroupEgressRule:SecurityGroupEgressRule"

# The lab network (inside its own namespaces only): the VPC router and the AWS API stand-in take
# .1 and .2 of the VPC, like AWS reserves the first addresses of a subnet. The "internet" is a
# documentation prefix that exists only between the lab's gateway and its client namespace.
INTERNET_NETWORK = ipaddress.IPv4Network("203.0.113.0/24")
GATEWAY_INTERNET_ADDRESS = "203.0.113.1"
CLIENT_ADDRESS = "203.0.113.10"
PUBLIC_NETWORK = ipaddress.IPv4Network("198.51.100.0/24")
SMOKE_COMMAND = "smoke-test-run"  # the SmokeTest component's command


@dataclass(frozen=True)
class Rule:
    direction: str  # ingress | egress
    group: str  # security group id (the mock's "<name>-id")
    protocol: str
    from_port: int
    to_port: int
    cidr: str | None  # IPv4 CIDR, or None when the peer is a security group
    peer_group: str | None
    description: str


@dataclass(frozen=True)
class Host:
    name: str  # hostname: lb-01, web-01, ...
    role: str  # lb | web
    db_role: str | None  # primary | replica for web servers
    private_ip: str
    public_ip: str
    security_groups: tuple[str, ...]
    user_data_gzip: bytes  # exactly what EC2 receives (base64-decoded)
    instance_id: str
    packages: tuple[str, ...] = ()  # what its user-data installs: the lab bakes them into its image

    @property
    def netns(self) -> str:
        return f"wi-{self.name}"

    @property
    def veth(self) -> str:  # the host's port on the lab bridge (in the cloud namespace)
        return f"v-{self.name}"


@dataclass(frozen=True)
class LabPlan:
    stack: str
    region: str
    vpc_cidr: str
    hosts: tuple[Host, ...]
    rules: tuple[Rule, ...]
    parameters: dict[str, tuple[str, str]] = field(default_factory=dict)  # name → (type, value)
    # S3 buckets as declared: name → {"tags": ..., "versioning": "Enabled" or ""} (the stack's backups)
    buckets: dict[str, dict] = field(default_factory=dict)
    url: str = ""
    aws_endpoint_url: str = ""
    certificate_pem: str = ""  # the load balancer's certificate, as exported (public)
    elastic_ip: str = ""  # the stack's Elastic IP (the site's address)
    elastic_ip_tags: dict[str, str] = field(default_factory=dict)
    elastic_ip_allocation: str = ""  # its allocation id in the AWS API stand-in
    # A load-balancer pair: the private address keepalived moves to the active one. The gateway
    # sends the Elastic IP there, as AWS sends it to whichever instance it is associated with.
    floating_address: str = ""
    # The load balancer the program associates the Elastic IP with ("" for a pair: keepalived does).
    eip_associated_with: str = ""
    # The program's local commands as declared (create, environment, ...), by resource name: the
    # smoke test `lab up` ends with, and a pair's readiness gate.
    local_commands: dict[str, dict] = field(default_factory=dict)

    @property
    def smoke_command(self) -> dict:
        return self.local_commands.get(SMOKE_COMMAND, {})

    @property
    def vpc(self) -> ipaddress.IPv4Network:
        return ipaddress.IPv4Network(self.vpc_cidr)

    @property
    def router_address(self) -> str:
        return str(self.vpc[1])

    @property
    def api_address(self) -> str:
        return str(self.vpc[2])

    def host(self, name: str) -> Host:
        for host in self.hosts:
            if host.name == name:
                return host
        raise KeyError(f"no host {name!r}; hosts: {', '.join(h.name for h in self.hosts)}")

    def members(self, group: str) -> list[str]:
        return [h.private_ip for h in self.hosts if group in h.security_groups]

    @property
    def load_balancers(self) -> list[Host]:
        return [h for h in self.hosts if h.role == "lb"]


def plan_from_program(
    run: ProgramRun,
    *,
    stack: str,
    region: str,
    vpc_cidr: str,
    aws_endpoint_url: str,
    floating_address: str | None = None,
) -> LabPlan:
    (eip,) = run.of_type("aws:ec2/eip:Eip")
    # A single load balancer: the program associates the Elastic IP with it (1:1 NAT to it). A pair:
    # no association is declared (keepalived's active one associates it); the gateway sends the
    # Elastic IP to the floating address keepalived moves, and each keeps its own public address.
    associations = run.of_type("aws:ec2/eipAssociation:EipAssociation")
    eip_by_instance = {a.inputs["instanceId"]: eip.outputs["publicIp"] for a in associations}
    hosts = []
    associated_with = ""
    for instance in run.of_type("aws:ec2/instance:Instance"):
        tags = instance.inputs["tags"]
        instance_id = instance.id
        if instance_id in eip_by_instance:
            associated_with = tags["Name"]
        user_data = base64.b64decode(instance.inputs["userDataBase64"])
        hosts.append(
            Host(
                name=tags["Name"],
                role=tags["Role"],
                db_role=tags.get("DbRole"),
                private_ip=instance.outputs["privateIp"],
                public_ip=eip_by_instance.get(instance_id, instance.outputs["publicIp"]),
                security_groups=tuple(instance.inputs["vpcSecurityGroupIds"]),
                user_data_gzip=user_data,
                instance_id=instance_id,
                packages=tuple(yaml.safe_load(gzip.decompress(user_data)).get("packages", ())),
            )
        )
    rules = []
    for declared in run.of_type(INGRESS) + run.of_type(EGRESS):
        inputs = declared.inputs
        if inputs.get("cidrIpv6"):
            continue  # the lab network is IPv4 only
        rules.append(
            Rule(
                direction="ingress" if declared.type == INGRESS else "egress",
                group=inputs["securityGroupId"],
                protocol=inputs["ipProtocol"],
                from_port=int(inputs.get("fromPort", -1)),  # no ports: a protocol such as VRRP (112)
                to_port=int(inputs.get("toPort", -1)),
                cidr=inputs.get("cidrIpv4"),
                peer_group=inputs.get("referencedSecurityGroupId"),
                description=inputs.get("description", ""),
            )
        )
    parameters = {
        p.inputs["name"]: (p.inputs["type"], unwrap(p.inputs["value"]))
        for p in run.of_type("aws:ssm/parameter:Parameter")
    }
    versioning = {
        v.inputs["bucket"]: v.inputs["versioningConfiguration"]["status"]
        for v in run.of_type("aws:s3/bucketVersioning:BucketVersioning")
    }
    buckets = {
        b.outputs["bucket"]: {"tags": dict(b.inputs.get("tags") or {}), "versioning": versioning.get(b.id, "")}
        for b in run.of_type("aws:s3/bucket:Bucket")
    }
    order = {"lb": 0, "web": 1}
    return LabPlan(
        stack=stack,
        region=region,
        vpc_cidr=vpc_cidr,
        hosts=tuple(sorted(hosts, key=lambda h: (order.get(h.role, 2), h.name))),
        rules=tuple(rules),
        parameters=parameters,
        buckets=buckets,
        url=run.exports["url"],
        aws_endpoint_url=aws_endpoint_url,
        certificate_pem=run.exports["lb_certificate_pem"],
        elastic_ip=eip.outputs["publicIp"],
        elastic_ip_tags=dict(eip.inputs["tags"]),
        floating_address=floating_address or "",
        eip_associated_with=associated_with,
        local_commands={
            c.name: {
                key: c.inputs[key]
                for key in ("create", "update", "environment", "dir", "interpreter")
                if key in c.inputs
            }
            for c in run.of_type("command:local:Command")
        },
    )


def lab_plan(run: ProgramRun, config: dict, region: str) -> LabPlan:
    """The plan of a run of the lab stack (`config`: Pulumi.lab.yaml's settings, overrides applied)."""
    return plan_from_program(
        run,
        stack="lab",
        region=region,
        vpc_cidr=config["vpcCidr"],
        aws_endpoint_url=config["awsEndpointUrl"],
        floating_address=config.get("lbVirtualIp"),
    )


# --- nftables ------------------------------------------------------------------------------------


def _set_name(group: str) -> str:
    return "sg_" + "".join(c if c.isalnum() else "_" for c in group)


def _port_match(rule: Rule) -> str:
    if rule.protocol == "-1":
        return ""
    if rule.protocol not in ("tcp", "udp"):  # by number, without ports (VRRP is 112)
        return f"ip protocol {rule.protocol} "
    ports = str(rule.from_port) if rule.from_port == rule.to_port else f"{rule.from_port}-{rule.to_port}"
    return f"{rule.protocol} dport {ports} "


def _rule_line(rule: Rule, peer_field: str, verdict: str) -> str:
    peer = f"@{_set_name(rule.peer_group)}" if rule.peer_group else rule.cidr
    return f'        ip {peer_field} {peer} {_port_match(rule)}{verdict} comment "{rule.description[:60]}"'


def security_groups_ruleset(plan: LabPlan, table: str = "webinfra_sg") -> str:
    """The declared security groups, enforced in the cloud namespace for every flow between hosts.

    The bridge hands bridged IPv4 to the IP hooks (br_netfilter), so one stateful table sees host to
    host traffic (forward), traffic routed from the internet after the gateway's NAT (forward), and
    traffic to the cloud's own addresses such as the AWS API stand-in (input). A new flow passes
    only when an egress rule of the sender and an ingress rule of the receiver allow it, as in a VPC;
    replies pass by connection state. Hosts are known by their private addresses.
    """
    groups = sorted({g for h in plan.hosts for g in h.security_groups} | {r.group for r in plan.rules})
    lines = [f"table ip {table} {{"]
    for group in groups:
        members = plan.members(group)
        elements = f" elements = {{ {', '.join(members)} }};" if members else ""
        lines.append(f"    set {_set_name(group)} {{ type ipv4_addr;{elements} }}")
    for host in plan.hosts:
        for direction, peer_field, verdict in (("egress", "daddr", "return"), ("ingress", "saddr", "accept")):
            lines.append(f"    chain {direction}_{host.name.replace('-', '_')} {{")
            for rule in plan.rules:
                if rule.direction == direction and rule.group in host.security_groups:
                    lines.append(_rule_line(rule, peer_field, verdict))
            lines.append(
                f'        counter drop comment "{direction} of {host.name}: no security group rule allows this"'
            )
            lines.append("    }")
    for hook, checks in (("forward", ("egress", "ingress")), ("input", ("egress",))):
        lines += [
            f"    chain {hook} {{",
            f"        type filter hook {hook} priority filter; policy accept;",
            "        ct state established,related accept",
            "        ct state invalid drop",
        ]
        for direction in checks:
            field_name = "saddr" if direction == "egress" else "daddr"
            for host in plan.hosts:
                lines.append(
                    f"        ip {field_name} {host.private_ip} jump {direction}_{host.name.replace('-', '_')}"
                )
            if plan.floating_address and direction == "ingress":
                # the floating address belongs to the active load balancer: the pair shares its groups
                lb = plan.load_balancers[0]
                lines.append(
                    f"        ip daddr {plan.floating_address} jump ingress_{lb.name.replace('-', '_')} "
                    'comment "the floating address"'
                )
        lines.append("    }")
    lines.append("}")
    return "\n".join(lines) + "\n"


def gateway_ruleset(
    plan: LabPlan, *, bridge: str, internet_link: str, table: str = "webinfra_igw", elastic_ip_to: str = ""
) -> str:
    """The internet gateway: 1:1 NAT for public addresses; forwarding only within the lab. `elastic_ip_to`:
    where the Elastic IP goes instead of a pair's floating address (while a single load balancer still
    holds it, as a second one joins)."""
    lines = [
        f"table ip {table} {{",
        "    chain prerouting {",
        "        type nat hook prerouting priority dstnat; policy accept;",
    ]
    for host in plan.hosts:
        lines.append(f'        iifname "{internet_link}" ip daddr {host.public_ip} dnat to {host.private_ip}')
    if elastic_ip_to or plan.floating_address:
        target = elastic_ip_to or plan.floating_address
        lines.append(
            f'        iifname "{internet_link}" ip daddr {plan.elastic_ip} dnat to {target} comment "the Elastic IP"'
        )
    lines += ["    }", "    chain postrouting {", "        type nat hook postrouting priority srcnat; policy accept;"]
    for host in plan.hosts:
        lines.append(f'        oifname "{internet_link}" ip saddr {host.private_ip} snat to {host.public_ip}')
    lines += [
        "    }",
        "    chain forward {",
        "        type filter hook forward priority 0; policy drop;",
        f'        iifname "{bridge}" oifname "{bridge}" accept '
        'comment "within the VPC (security groups apply on the bridge)"',
        "        ct state established,related accept",
        f'        iifname "{internet_link}" oifname "{bridge}" ct status dnat accept '
        'comment "internet to public addresses only"',
        f'        iifname "{bridge}" oifname "{internet_link}" '
        f"ip saddr {plan.vpc_cidr} ip daddr {INTERNET_NETWORK} accept",
        "        counter drop",
        "    }",
        "}",
    ]
    return "\n".join(lines) + "\n"
