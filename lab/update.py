"""scripts/lab update: `pulumi up` on the running lab, with Pulumi's semantics, as the program declares them.

    scripts/lab update --set webCount=3 [--set ...] [--replace RESOURCE ...] [--preview]

1. The program is evaluated with the running lab's settings plus these changes, and with what the
   lab's state keeps (lab/cli.py, save_program_state): the instances' ids, the outputs of passwords
   and keys made earlier.
2. lab/changes.py compares it with the state and prints the plan, as `pulumi preview` does: what is
   created, updated, replaced (and what forces it) or deleted. `--preview` stops there.
3. The changes are carried out in the plan's order: SSM parameters put into (or deleted from) the AWS
   API stand-in; instances created (booted from their user-data), replaced (deleted first, as the
   program declares: a fresh root, the new user-data), stopped and started (a new instance type), or
   terminated; the declared commands that are created, replaced or updated run exactly as declared
   (a pair's readiness gate, the smoke test). Security groups and the gateway follow the new plan
   before any instance boots; the Elastic IP follows EC2's association (the AWS API stand-in): a
   second load balancer joining a single one gets it when it associates it with itself, the program's
   association moves it when it is created. What has no counterpart in the lab (IAM, alarms, KMS) is
   only listed. `--replace NAME` replaces that resource whatever its inputs (`pulumi up --replace`);
   a replaced certificate or key is made anew. lbCount 2 -> 1 is refused (`refused`).
4. The state is saved: a later update compares with what this one left.
"""

from __future__ import annotations

import dataclasses
import json
import time

from lab import aws_downloads, network
from lab import hosts as lab_hosts
from lab import image as lab_image
from lab.changes import INSTANCE, LOCAL_COMMAND, PARAMETER, Change, plan
from lab.cli import (
    DOWNLOADS,
    LOGS,
    LabError,
    Steps,
    aws_api,
    evaluate,
    load_program_state,
    load_state,
    run_declared_gate,
    save_program_state,
    save_state,
    smoke_test,
)
from lab.mock_cloud import ELASTIC_IP
from lab.mounts import unmount_below
from lab.topology import Host, LabPlan

SYMBOLS = {"create": "+", "update": "~", "replace": "+-", "delete": "-"}
EIP_ASSOCIATION = "aws:ec2/eipAssociation:EipAssociation"
GATE_SUFFIX = "-ready"


def settings_after(config: dict, overrides: dict[str, str]) -> dict:
    """The running lab's settings with these changes. lbCount 1 drops the floating address (a pair's)."""
    changed = {**config, **overrides}
    if str(changed.get("lbCount")) == "1":
        changed.pop("lbVirtualIp", None)
    return changed


def refused(config: dict, overrides: dict[str, str]) -> str:
    """Why this change is not rehearsed on a running lab ("" when it is)."""
    if str(config.get("lbCount", "1")) == "2" and str(overrides.get("lbCount", "2")) == "1":
        return (
            "lbCount 2 -> 1 is not rehearsed in the lab (README, 'Changing a running stack'): on AWS the role's "
            "update takes lb-02's right to move the Elastic IP before lb-01 is replaced, and the site is down "
            "until the new single load balancer serves; the lab does not evaluate IAM, so its lb-02 would go on "
            "moving the address"
        )
    return ""


def describe(change: Change) -> str:
    kind = change.type.split(":")[-1]
    detail = ""
    if change.action == "replace":
        detail = f"[{', '.join(change.forced_by)}]" + (" delete first" if change.delete_first else "")
    elif change.action == "update":
        detail = f"[{', '.join(change.properties)}]"
    why = f" ({change.why})" if change.why else ""
    return f"  {SYMBOLS[change.action]:<3}{kind:<28}{change.name:<44}{change.action} {detail}{why}".rstrip()


def preview(changes: list[Change]) -> str:
    lines = [describe(c) for c in changes]
    counts = {action: sum(1 for c in changes if c.action == action) for action in SYMBOLS}
    lines.append(
        "  resources: " + ", ".join(f"{n} to {action}" for action, n in counts.items() if n)
        if changes
        else "  no changes"
    )
    return "\n".join(lines)


def hostname_of(run, name: str) -> str:
    return run.named(name).inputs["tags"]["Name"]


def update(overrides: dict[str, str], preview_only: bool = False, replace: tuple[str, ...] = ()) -> int:
    steps = Steps()
    current = load_state()
    config, recorded, kept = load_program_state()
    if refusal := refused(config, overrides):
        raise LabError(refusal)
    # A replaced certificate or key is made anew: its earlier outputs are not given back.
    kept = {name: outputs for name, outputs in kept.items() if name not in replace}
    if config.get("domain"):
        raise LabError("scripts/lab update does not carry out a lab started with --acme (its ACME server's trust)")
    changed_config = settings_after(config, overrides)
    ids = {h.name: h.instance_id for h in current.hosts} | {ELASTIC_IP: current.elastic_ip_allocation}
    label = ", ".join([*(f"{k}={v}" for k, v in overrides.items()), *(f"--replace {r}" for r in replace)])
    label = label or "no setting changed"
    run, new_plan = steps.run(
        f"evaluate the program ({label}) with the lab's state", evaluate, changed_config, ids, kept
    )
    changes = plan(recorded, run, replace)
    print(f"Previewing update (lab):\n{preview(changes)}", flush=True)
    if preview_only or not changes:
        return 0

    # EC2 gives a created or replaced instance its id when it launches: the program, evaluated again with
    # them, names the new instances where it names an instance (a readiness gate, the smoke test).
    launched = {
        hostname_of(run, c.name): c for c in changes if c.type == INSTANCE and c.action in ("create", "replace")
    }
    if launched:
        tags = {
            host: {
                k: v for k, v in run.named(c.name).inputs["tags"].items() if k in ("Project", "Stack", "Role", "Name")
            }
            for host, c in launched.items()
        }
        result = aws_api(current, "run-instances", input=json.dumps(tags))
        if result.returncode != 0:
            raise LabError(f"EC2 (the AWS API stand-in) did not launch {', '.join(launched)}:\n{result.stderr}")
        ids.update(json.loads(result.stdout))
        run, new_plan = steps.run(
            "evaluate the program with the new instances' ids", evaluate, changed_config, ids, kept
        )
        changes = plan(recorded, run, replace)
    new_plan = dataclasses.replace(
        new_plan,
        elastic_ip_allocation=current.elastic_ip_allocation,
        eip_associated_with=new_plan.eip_associated_with,
    )
    # A second load balancer joins a single one (lbCount 1 -> 2): the Elastic IP stays with lb-01 until the
    # pair's active load balancer associates it with itself through EC2, as on AWS.
    joining = bool(new_plan.floating_address) and not current.floating_address
    held_by = current.host(current.eip_associated_with).private_ip if joining else ""
    steps.run("security groups and gateway as the program now declares them", apply_network, current, new_plan, held_by)
    follower = ElasticIpFollower(new_plan) if joining else None
    began = time.monotonic()
    try:
        for change in changes:
            carry_out(steps, change, run, current, new_plan)
    finally:
        if follower:
            follower.stop()
    if follower and not follower.moved_to:
        raise LabError("the Elastic IP never moved to the load-balancer pair (EC2: still on lb-01)")
    save_state(new_plan)
    save_program_state(changed_config, run)
    print(
        f"\n✓ lab update in {time.monotonic() - steps.started:.0f}s ({time.monotonic() - began:.0f}s carrying it out)"
    )
    return 0


def apply_network(current: LabPlan, new: LabPlan, elastic_ip_to: str = "") -> None:
    """New hosts' ports, and the rulesets (security groups, gateway NAT) rebuilt from the new plan."""
    existing = {h.name for h in current.hosts}
    for host in new.hosts:
        if host.name not in existing:
            network.attach_host(new, host)
    set_gateway(new, elastic_ip_to)
    network.set_security_groups(new, enabled=network.security_groups_enabled())


def set_gateway(plan: LabPlan, elastic_ip_to: str = "") -> None:
    gateway = network.gateway_ruleset(
        plan, bridge=network.BRIDGE, internet_link=network.INTERNET_LINK, elastic_ip_to=elastic_ip_to
    )
    network.replace_table("ip", "webinfra_igw", gateway)


class ElasticIpFollower:
    """While a single load balancer's Elastic IP waits for the new pair: when EC2 (the AWS API stand-in)
    has it associated with a load balancer other than lb-01, the gateway sends it to the pair's floating
    address (which the active one holds), as AWS sends an Elastic IP wherever it is associated."""

    def __init__(self, plan: LabPlan, interval: float = 0.5):
        import threading

        self.plan, self.interval = plan, interval
        self.moved_to = ""
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._follow, name="elastic-ip-follower", daemon=True)
        self._thread.start()

    def _follow(self) -> None:
        from lab.cli import elastic_ip_holder

        while not self._stop.wait(self.interval):
            try:
                holder = elastic_ip_holder(self.plan)
            except LabError:
                continue  # the stand-in busy: ask again
            if holder and holder != "lb-01" and holder.startswith("lb-"):
                set_gateway(self.plan)
                self.moved_to = holder
                print(f"  · EC2: the Elastic IP is associated with {holder}: the gateway follows it", flush=True)
                return

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=30)


def carry_out(steps: Steps, change: Change, run, current: LabPlan, new: LabPlan) -> None:
    if change.type == PARAMETER:
        if change.action == "delete":
            steps.run(f"delete SSM parameter {change.label}", _delete_parameters, current, [change.label])
            return
        name = run.named(change.name).inputs["name"]
        kind, value = new.parameters[name]
        steps.run(
            f"{change.action} SSM parameter {name}",
            _put_parameters,
            current,
            {name: (kind, value)},
        )
    elif change.type == INSTANCE:
        _instance(steps, change, run, current, new)
    elif change.type == EIP_ASSOCIATION:
        if change.action == "delete":
            old = current.host(current.eip_associated_with or "lb-01")
            steps.run(f"delete the Elastic IP's association with {old.name}", _disassociate, current, old)
        else:
            holder = new.host(new.eip_associated_with)
            steps.run(f"{change.action}: the Elastic IP associated with {holder.name}", _associate, new, holder)
    elif change.type == LOCAL_COMMAND and change.action != "delete":
        if change.name.endswith(GATE_SUFFIX):
            action = "update" if change.action == "update" else "create"
            steps.run(f"{change.action}: the gate {change.name}, as declared", _gate, new, change.name, action)
        else:
            steps.run(f"{change.action}: {change.name}, as declared", smoke_test, new, False)
    else:
        print(f"  · {change.action} {change.type.split(':')[-1]} {change.name}: nothing to do in the lab")


def _associate(plan: LabPlan, host: Host) -> None:
    result = aws_api(plan, "associate", plan.elastic_ip_allocation, host.instance_id)
    if result.returncode != 0:
        raise LabError(f"EC2 (the AWS API stand-in) did not associate the Elastic IP:\n{result.stderr}")
    set_gateway(plan)  # AWS sends the address to the instance now


def _disassociate(plan: LabPlan, host: Host) -> None:
    result = aws_api(plan, "disassociate", plan.elastic_ip_allocation, host.instance_id)
    if result.returncode != 0:
        raise LabError(f"EC2 (the AWS API stand-in) refused the disassociation:\n{result.stderr}")
    print(f"  · {result.stdout.strip()}")


def _put_parameters(plan: LabPlan, parameters: dict[str, tuple[str, str]]) -> None:
    result = aws_api(plan, "load", input=json.dumps({k: list(v) for k, v in parameters.items()}))
    if result.returncode != 0:
        raise LabError(f"the AWS API stand-in refused {', '.join(parameters)}:\n{result.stderr}")


def _delete_parameters(plan: LabPlan, names: list[str]) -> None:
    result = aws_api(plan, "delete-parameters", input=json.dumps(names))
    if result.returncode != 0:
        raise LabError(f"the AWS API stand-in did not delete {', '.join(names)}:\n{result.stderr}")


def _gate(plan: LabPlan, name: str, action: str) -> None:
    if run_declared_gate(plan, name, action) != 0:
        raise LabError(f"the readiness gate {name} failed: `pulumi up` stops here")


def _instance(steps: Steps, change: Change, run, current: LabPlan, new: LabPlan) -> None:
    if change.action == "delete":
        host = current.host(change.label)
        steps.run(f"delete {host.name} (terminate the instance)", terminate, current, host, remove_port=True)
        return
    host = new.host(hostname_of(run, change.name))
    if change.action == "create":
        steps.run(f"create {host.name}: boot it from its user-data", launch, new, host)
    elif change.action == "replace":
        old = current.host(host.name)
        steps.run(f"replace {host.name} ({', '.join(change.forced_by)}): delete it first", terminate, current, old)
        steps.run(f"replace {host.name}: boot the new instance from its user-data", launch, new, host)
    elif "instanceType" in change.properties:
        steps.run(f"update {host.name} in place: stop, new instance type, start", stop_and_start, host)
    else:
        print(f"  · update {host.name} [{', '.join(change.properties)}]: nothing to do in the lab")


def launch(plan: LabPlan, host: Host) -> None:
    # every host's package set, not only this one's: the build prunes the images it is not asked for
    images = lab_image.build({h.packages for h in plan.hosts}, LOGS)
    lab_hosts.prepare(host, images[tuple(sorted(host.packages))])
    lab_hosts.trust_ca(host, (DOWNLOADS / "ca.pem").read_text(), "webinfra-lab-aws-downloads")
    arch = aws_downloads.native_arch()
    lab_hosts.add_hosts_entry(host, aws_downloads.hosts_entry(plan.api_address, plan.region, arch))
    network.set_link(host, up=True)
    lab_hosts.boot(host)
    deadline = time.monotonic() + 60
    while not lab_hosts.is_running(host):  # EC2 reports "running": `pulumi up` goes on from here
        if time.monotonic() > deadline:
            raise LabError(f"{host.name} did not start")
        time.sleep(0.2)


def terminate(plan: LabPlan, host: Host, remove_port: bool = False) -> None:
    """The instance and its root volume go (delete_on_termination), and EC2 forgets it."""
    network.set_link(host, up=False)
    lab_hosts.kill(host)
    unmount_below(lab_hosts.host_dir(host.name))
    import shutil

    shutil.rmtree(lab_hosts.host_dir(host.name), ignore_errors=True)
    if remove_port:
        network.ip("netns", "delete", host.netns, check=False)
    aws_api(plan, "terminate-instances", host.instance_id)


def stop_and_start(host: Host) -> None:
    """EC2's stop (a clean shutdown), then start: the root volume and its data stay."""
    lab_hosts.guest_command(host, ["systemctl", "poweroff"], timeout=30)
    deadline = time.monotonic() + 120
    while lab_hosts.is_running(host):
        if time.monotonic() > deadline:
            lab_hosts.kill(host)  # EC2 forces a stop that hangs
            break
        time.sleep(0.5)
    lab_hosts.boot(host)
    while not lab_hosts.is_running(host):
        if time.monotonic() > deadline + 60:
            raise LabError(f"{host.name} did not start again")
        time.sleep(0.2)
