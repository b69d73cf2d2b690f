"""The lab's network, made only of namespaces the lab creates (all named `wi-*`).

    wi-client ──(203.0.113.0/24)── wi-cloud ══ bridge vpc0 (the VPC) ══ wi-lb-01, wi-web-01, ...
     "internet"                     gateway: 1:1 NAT for public addresses, security groups,
                                    10.x.0.1 router, 10.x.0.2 AWS API stand-in (moto)

Forwarding is enabled only inside wi-cloud, which has routes to the lab's own prefixes and nothing
else: no route or NAT leads out of the lab.
"""

from __future__ import annotations

import ipaddress
import json
import pathlib
import subprocess

from lab.topology import (
    CLIENT_ADDRESS,
    GATEWAY_INTERNET_ADDRESS,
    INTERNET_NETWORK,
    PUBLIC_NETWORK,
    Host,
    LabPlan,
    gateway_ruleset,
    security_groups_ruleset,
)

PREFIX = "wi-"
CLOUD_NS = "wi-cloud"
CLIENT_NS = "wi-client"
BRIDGE = "vpc0"
INTERNET_LINK = "v-inet"
SG_TABLE = "webinfra_sg"
BLACKHOLE_TABLE = "webinfra_blackhole"
SPLIT_TABLE = "webinfra_split"


def ip(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(["ip", *args], check=check, capture_output=True, text=True)


def in_ns(ns: str, *command: str, check: bool = True, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(["ip", "netns", "exec", ns, *command], check=check, capture_output=True, text=True, **kwargs)


def lab_namespaces() -> list[str]:
    names = [line.split()[0] for line in ip("netns", "list").stdout.splitlines() if line.strip()]
    return [n for n in names if n.startswith(PREFIX)]


def create_cloud(plan: LabPlan) -> None:
    """The VPC bridge, the gateway and the client namespace, with their nftables rules."""
    vpc = ipaddress.IPv4Network(plan.vpc_cidr)
    ip("netns", "add", CLOUD_NS)
    ip("-n", CLOUD_NS, "link", "set", "lo", "up")
    ip("-n", CLOUD_NS, "link", "add", BRIDGE, "type", "bridge")
    for address in (plan.router_address, plan.api_address):
        ip("-n", CLOUD_NS, "addr", "add", f"{address}/{vpc.prefixlen}", "dev", BRIDGE)
    ip("-n", CLOUD_NS, "link", "set", BRIDGE, "up")
    # Bridged IPv4 goes through the IP hooks, where the security groups are enforced with state.
    in_ns(CLOUD_NS, "sysctl", "-qw", "net.bridge.bridge-nf-call-iptables=1")
    in_ns(CLOUD_NS, "sysctl", "-qw", "net.ipv4.ip_forward=1")

    ip("netns", "add", CLIENT_NS)
    ip("-n", CLIENT_NS, "link", "set", "lo", "up")
    ip("link", "add", INTERNET_LINK, "netns", CLOUD_NS, "type", "veth", "peer", "name", "eth0", "netns", CLIENT_NS)
    ip("-n", CLOUD_NS, "addr", "add", f"{GATEWAY_INTERNET_ADDRESS}/{INTERNET_NETWORK.prefixlen}", "dev", INTERNET_LINK)
    ip("-n", CLOUD_NS, "link", "set", INTERNET_LINK, "up")
    ip("-n", CLIENT_NS, "addr", "add", f"{CLIENT_ADDRESS}/{INTERNET_NETWORK.prefixlen}", "dev", "eth0")
    ip("-n", CLIENT_NS, "link", "set", "eth0", "up")
    # The client reaches public addresses through the gateway, and nothing else.
    ip("-n", CLIENT_NS, "route", "add", str(PUBLIC_NETWORK), "via", GATEWAY_INTERNET_ADDRESS)
    apply_ruleset(gateway_ruleset(plan, bridge=BRIDGE, internet_link=INTERNET_LINK))
    apply_ruleset(BLACKHOLE_RULESET)
    set_security_groups(plan, enabled=True)


def attach_host(plan: LabPlan, host: Host) -> None:
    vpc = ipaddress.IPv4Network(plan.vpc_cidr)
    ip("netns", "add", host.netns)
    ip("link", "add", host.veth, "netns", CLOUD_NS, "type", "veth", "peer", "name", "eth0", "netns", host.netns)
    ip("-n", CLOUD_NS, "link", "set", host.veth, "master", BRIDGE, "up")
    ip("-n", host.netns, "link", "set", "lo", "up")
    ip("-n", host.netns, "addr", "add", f"{host.private_ip}/{vpc.prefixlen}", "dev", "eth0")
    ip("-n", host.netns, "link", "set", "eth0", "up")
    # Like the VPC route table: local traffic direct, everything else to the gateway (which
    # forwards only to the lab's own prefixes).
    ip("-n", host.netns, "route", "add", "default", "via", plan.router_address)


def set_link(host: Host, up: bool) -> None:
    """A dead host's port goes quiet (no ARP, no RST), as an EC2 instance that lost power."""
    ip("-n", CLOUD_NS, "link", "set", host.veth, "up" if up else "down")


# A black-holed host keeps running, but every IP packet to or from its port on the VPC's bridge
# vanishes: no RST, no ICMP, as an EC2 instance whose network died. ARP still passes, as in a VPC,
# where no neighbour ever fails: senders see silence, not "host unreachable".
BLACKHOLE_RULESET = f"""
table bridge {BLACKHOLE_TABLE} {{
    set ports {{ type ifname; }}
    chain forward {{
        type filter hook forward priority -200; policy accept;
        ether type {{ ip, ip6 }} iifname @ports drop
        ether type {{ ip, ip6 }} oifname @ports drop
    }}
    chain input {{
        type filter hook input priority -200; policy accept;
        ether type {{ ip, ip6 }} iifname @ports drop
    }}
    chain output {{
        type filter hook output priority -200; policy accept;
        ether type {{ ip, ip6 }} oifname @ports drop
    }}
}}
"""


def set_blackhole(host: Host, on: bool) -> None:
    """Cut (or restore) every IP packet of a host's link, silently."""
    action = "add" if on else "delete"
    result = in_ns(
        CLOUD_NS, "nft", action, "element", "bridge", BLACKHOLE_TABLE, "ports", f"{{ {host.veth} }}", check=False
    )
    if result.returncode != 0 and on:
        raise RuntimeError(f"cannot black-hole {host.name}: {result.stderr.strip()}")


def _ports_in(table: str, name: str) -> set[str]:
    """The ports (veths) in a bridge table's set now (none: no such table)."""
    listed = in_ns(CLOUD_NS, "nft", "-j", "list", "set", "bridge", table, name, check=False)
    if listed.returncode != 0:
        return set()
    for item in json.loads(listed.stdout)["nftables"]:
        if "set" in item:
            return {e for e in item["set"].get("elem", []) if isinstance(e, str)}
    return set()


def blackholed() -> set[str]:
    """The ports (veths) black-holed now."""
    return _ports_in(BLACKHOLE_TABLE, "ports")


# A split: the hosts on one side (an availability zone's) and the others exchange no IP packet, silently,
# as when the network between two zones fails; each side still reaches the gateway and the AWS API
# stand-in (regional services), and the lab's internet. Host-to-host traffic crosses the bridge's
# forward hook only.
SPLIT_RULESET = f"""
table bridge {SPLIT_TABLE} {{
    set side {{ type ifname; }}
    chain forward {{
        type filter hook forward priority -190; policy accept;
        ether type {{ ip, ip6 }} iifname @side oifname != @side drop
        ether type {{ ip, ip6 }} iifname != @side oifname @side drop
    }}
}}
"""


def set_split(side: list[Host] | None) -> None:
    """Cut `side` off from every other host (None: heal the split)."""
    in_ns(CLOUD_NS, "nft", "delete", "table", "bridge", SPLIT_TABLE, check=False)
    if not side:
        # During the split both load balancers were keepalived's MASTER and announced the floating
        # address; after it the one left MASTER announces nothing, and the router's cache may still
        # name the other (seen: the site timed out for 6 s after a heal). The floating address stands in
        # for the Elastic IP, whose association AWS applies at once: forget the stale answer.
        ip("-n", CLOUD_NS, "neigh", "flush", "dev", BRIDGE, check=False)
    if side:
        apply_ruleset(SPLIT_RULESET)
        ports = ", ".join(host.veth for host in side)
        in_ns(CLOUD_NS, "nft", "add", "element", "bridge", SPLIT_TABLE, "side", f"{{ {ports} }}")


def split_side() -> set[str]:
    """The ports on the cut-off side of a split now (empty: no split)."""
    return _ports_in(SPLIT_TABLE, "side")


def apply_ruleset(text: str) -> None:
    in_ns(CLOUD_NS, "nft", "-f", "-", input=text)


def replace_table(family: str, table: str, ruleset: str) -> None:
    """A table swapped for a new one in one nft transaction: no packet sees the lab without it (a
    connection opened in between would find no NAT, or no security group)."""
    apply_ruleset(f"add table {family} {table}\ndelete table {family} {table}\n{ruleset}")


def set_security_groups(plan: LabPlan, enabled: bool) -> None:
    if enabled:
        replace_table("ip", SG_TABLE, security_groups_ruleset(plan, table=SG_TABLE))
    else:
        in_ns(CLOUD_NS, "nft", "delete", "table", "ip", SG_TABLE, check=False)


def security_groups_enabled() -> bool:
    return in_ns(CLOUD_NS, "nft", "list", "table", "ip", SG_TABLE, check=False).returncode == 0


def remove_all() -> list[str]:
    """Delete every lab namespace (their veths go with them). Returns what was removed."""
    removed = []
    for ns in lab_namespaces():
        if ip("netns", "delete", ns, check=False).returncode == 0:
            removed.append(ns)
    # a namespace whose mount point lingers after a crash
    for path in pathlib.Path("/run/netns").glob(f"{PREFIX}*") if pathlib.Path("/run/netns").exists() else []:
        subprocess.run(["umount", "-l", str(path)], check=False, capture_output=True)
        path.unlink(missing_ok=True)
    return removed
