"""scripts/lab: boot the stack's exact user-data on local Debian 12 hosts.

scripts/lab up [--web-count N] [--lb-count 1|2] [--acme] [--set SETTING=VALUE ...]
                                   build (cached) and boot every instance of the `lab` stack;
                                   --acme: with a domain, certified by the lab's ACME server
scripts/lab update [--set SETTING=VALUE]... [--replace RESOURCE]... [--preview]
                                   `pulumi up` on the running lab: the plan (as `pulumi preview`), then
                                   carried out with Pulumi's semantics (lab/update.py)
scripts/lab status [--json]        hosts, roles, addresses, cloud-init state, the URL
scripts/lab images                 build (or find cached) the images of every lab the tests boot
scripts/lab exec HOST -- CMD...    run a command inside a host
scripts/lab client -- CMD...       run a command on the lab's "internet" (e.g. curl the URL)
scripts/lab smoke                  run the program's declared smoke test again, from the lab's internet
scripts/lab ready                  run a pair's declared readiness gate (lb-01 waits for lb-02 to serve)
scripts/lab kill HOST              power a host off hard (its port goes quiet, like a dead instance)
scripts/lab start HOST             boot a stopped host again (cloud-init does not run twice)
scripts/lab blackhole HOST         cut a running host's network silently (every packet lost, no RST, no ICMP)
scripts/lab heal HOST              give a black-holed host its network back
scripts/lab split HOST...          cut those hosts (a zone's) off from the others, silently; --heal ends it
scripts/lab sg on|off              enforce the declared security groups, or let every flow through
scripts/lab down                   remove everything the lab made (idempotent, also after a crash)
    --keep-backups                 ... but keep its backup bucket: the next `up` has it (a kept bucket)
    --delete-backups               ... and delete every kept bucket
"""

from __future__ import annotations

import argparse
import concurrent.futures
import dataclasses
import json
import os
import pathlib
import shutil
import subprocess
import sys
import textwrap
import time
from typing import TYPE_CHECKING

from lab import acme as lab_acme
from lab import aws_downloads, network
from lab import hosts as lab_hosts
from lab import image as lab_image
from lab.declared import run_local_command
from lab.mounts import unmount_below
from lab.topology import CLIENT_ADDRESS, Host, LabPlan, Rule

if TYPE_CHECKING:
    from lab.mock_cloud import ProgramRun

REPO = pathlib.Path(__file__).resolve().parent.parent
STATE_FILE = lab_hosts.STATE / "state.json"
CERTIFICATE_FILE = lab_hosts.STATE / "lb-certificate.pem"  # the exported certificate, for clients
LOGS = lab_hosts.STATE / "logs"
DOWNLOADS = lab_hosts.STATE / "aws-downloads"  # the agent packages, the listener's certificate, the access log
STACK_FILE = REPO / "Pulumi.lab.yaml"
PROGRAM_STATE = lab_hosts.STATE / "program-state.json"  # the lab's stack state (scripts/lab update)
PROGRAM_SECRETS = lab_hosts.STATE / "program-secrets.json"  # root-only: what Pulumi keeps encrypted
KEPT_BUCKETS = lab_hosts.STATE / "kept-buckets"  # what `down --keep-backups` keeps of the S3 stand-in
CLOUD_INIT_TIMEOUT = 900


class LabError(RuntimeError):
    pass


# --- output -----------------------------------------------------------------------------------------


class Steps:
    def __init__(self):
        self.started = time.monotonic()

    def run(self, label: str, action, *args, **kwargs):
        print(f"▸ {label}", flush=True)
        began = time.monotonic()
        result = action(*args, **kwargs)
        print(f"  ✓ {label} ({time.monotonic() - began:.1f}s)", flush=True)
        return result


# --- state (no secrets: user-data and parameter values stay out of it) ---------------------------------


def save_state(plan: LabPlan) -> None:
    state = {
        "stack": plan.stack,
        "region": plan.region,
        "vpc_cidr": plan.vpc_cidr,
        "url": plan.url,
        "aws_endpoint_url": plan.aws_endpoint_url,
        "elastic_ip": plan.elastic_ip,
        "elastic_ip_allocation": plan.elastic_ip_allocation,
        "eip_associated_with": plan.eip_associated_with,
        "floating_address": plan.floating_address,
        "local_commands": plan.local_commands,
        "buckets": plan.buckets,
        "hosts": [{k: v for k, v in dataclasses.asdict(h).items() if k != "user_data_gzip"} for h in plan.hosts],
        "rules": [dataclasses.asdict(r) for r in plan.rules],
    }
    lab_hosts.STATE.mkdir(parents=True, exist_ok=True)
    STATE_FILE.write_text(json.dumps(state, indent=2))
    STATE_FILE.chmod(0o600)
    CERTIFICATE_FILE.write_text(plan.certificate_pem)


def load_state() -> LabPlan:
    if not STATE_FILE.exists():
        raise LabError("no lab is up (run: scripts/lab up)")
    state = json.loads(STATE_FILE.read_text())
    hosts = tuple(
        Host(
            **{
                **h,
                "security_groups": tuple(h["security_groups"]),
                "packages": tuple(h["packages"]),
                "user_data_gzip": b"",
            }
        )
        for h in state["hosts"]
    )
    return LabPlan(
        stack=state["stack"],
        region=state["region"],
        vpc_cidr=state["vpc_cidr"],
        hosts=hosts,
        rules=tuple(Rule(**r) for r in state["rules"]),
        url=state["url"],
        aws_endpoint_url=state["aws_endpoint_url"],
        elastic_ip=state["elastic_ip"],
        elastic_ip_allocation=state["elastic_ip_allocation"],
        floating_address=state["floating_address"],
        local_commands=state.get("local_commands", {}),
        eip_associated_with=state.get("eip_associated_with", ""),
        buckets=state.get("buckets", {}),
    )


# --- the program, evaluated under mocks -------------------------------------------------------------------


def lab_config(
    web_count: int | None,
    acme: bool = False,
    lb_count: int | None = None,
    overrides: dict[str, str] | None = None,
) -> dict:
    """The lab stack's settings: Pulumi.lab.yaml's, with these changes (as `pulumi config set` makes them)."""
    config, _ = stack_config()
    if web_count is not None:
        config["webCount"] = web_count
    if lb_count == 1:  # one load balancer: nothing floats
        config["lbCount"] = 1
        config.pop("lbVirtualIp", None)
    if acme:
        config.update(lab_acme.overrides())
    config.update(overrides or {})
    return config


def stack_config() -> tuple[dict, str]:
    from lab.mock_cloud import stack_config as read  # imports Pulumi: only when needed

    return read(STACK_FILE)


def evaluate(
    config: dict, instance_ids: dict[str, str] | None = None, kept: dict[str, dict] | None = None
) -> tuple[ProgramRun, LabPlan]:
    """The program run under mocks with these settings (and, as a stack's state holds them, the ids EC2
    gave the instances and the outputs of passwords and keys made earlier), and the lab's plan of it."""
    from lab.mock_cloud import run_program
    from lab.topology import lab_plan

    _, region = stack_config()
    run = run_program(dict(config), stack="lab", region=region, instance_ids=instance_ids, kept=kept)
    return run, lab_plan(run, config, region)


def save_program_state(config: dict, run: ProgramRun) -> None:
    """What `pulumi up` keeps in a stack's state, for `scripts/lab update`: the settings, every resource's
    inputs (as digests: lab/changes.py) and, root-only, the outputs of passwords and keys made once."""
    from lab import changes

    PROGRAM_STATE.write_text(
        json.dumps({"config": config, "resources": changes.state_to_json(changes.record(run))}, indent=1)
    )
    PROGRAM_STATE.chmod(0o600)
    PROGRAM_SECRETS.touch(mode=0o600)
    PROGRAM_SECRETS.chmod(0o600)
    PROGRAM_SECRETS.write_text(json.dumps(changes.generated_outputs(run)))


def load_program_state() -> tuple[dict, dict, dict]:
    """(settings, recorded resources, kept outputs) of the running lab."""
    from lab import changes

    if not PROGRAM_STATE.exists():
        raise LabError("the running lab has no program state (made by an older scripts/lab up): scripts/lab up again")
    state = json.loads(PROGRAM_STATE.read_text())
    return state["config"], changes.state_from_json(state["resources"]), json.loads(PROGRAM_SECRETS.read_text())


# --- up ---------------------------------------------------------------------------------------------------


def aws_api(
    plan: LabPlan, command: str, *args: str, input: str | None = None, timeout: float = 60
) -> subprocess.CompletedProcess:
    """lab/aws_api.py's COMMAND against the AWS API stand-in, from the cloud namespace where it listens."""
    return network.in_ns(
        network.CLOUD_NS,
        sys.executable,
        "-m",
        "lab.aws_api",
        command,
        plan.aws_endpoint_url,
        plan.region,
        *args,
        input=input,
        cwd=REPO,
        check=False,
        timeout=timeout,
    )


def start_aws_api(plan: LabPlan) -> None:
    LOGS.mkdir(parents=True, exist_ok=True)
    log = open(LOGS / "aws-api.log", "ab")  # noqa: SIM115 - the server started below writes to it after we return
    subprocess.Popen(
        [
            "ip",
            "netns",
            "exec",
            network.CLOUD_NS,
            sys.executable,
            "-m",
            "moto.server",
            "-H",
            plan.api_address,
            "-p",
            "80",
        ],
        stdin=subprocess.DEVNULL,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
        cwd=REPO,
    )


def load_parameters(plan: LabPlan) -> None:
    parameters = json.dumps({name: list(value) for name, value in plan.parameters.items()})
    result = aws_api(plan, "load", input=parameters)
    if result.returncode != 0:
        raise LabError(f"loading SSM parameters into the AWS API stand-in failed:\n{result.stderr}")
    print(f"  {result.stdout.strip()}")


def create_buckets(plan: LabPlan) -> None:
    """The S3 buckets the program declares (the stack's backups), as `pulumi up` leaves them."""
    result = aws_api(plan, "create-buckets", input=json.dumps(plan.buckets))
    if result.returncode != 0:
        raise LabError(f"creating S3 buckets in the AWS API stand-in failed:\n{result.stderr}")
    print(f"  {result.stdout.strip()}")


def kept_buckets() -> list[pathlib.Path]:
    return sorted(p for p in KEPT_BUCKETS.glob("*") if (p / "bucket.json").exists())


def import_kept_buckets(plan: LabPlan) -> None:
    """The buckets an earlier lab kept (`down --keep-backups`), in this lab's S3 stand-in as they were: as a
    bucket `pulumi destroy` kept stays in the account, beside the new stack's own."""
    for kept in kept_buckets():
        result = aws_api(plan, "import-bucket", str(kept), timeout=600)
        if result.returncode != 0:
            raise LabError(f"importing the kept bucket {kept.name} failed:\n{result.stderr}")
        print(f"  {result.stdout.strip()}")


def keep_buckets(plan: LabPlan) -> None:
    """Every bucket the lab declared, kept on disk (the S3 stand-in forgets everything at `down`)."""
    if not plan.buckets:
        raise LabError("the lab's state names no backup bucket (an older scripts/lab up): nothing was taken down")
    for bucket in plan.buckets:
        result = aws_api(plan, "export-bucket", bucket, str(KEPT_BUCKETS / bucket), timeout=600)
        if result.returncode != 0:
            raise LabError(f"keeping the bucket {bucket} failed (nothing was taken down):\n{result.stderr}")
        print(f"kept: {result.stdout.strip()} (in {KEPT_BUCKETS}; the next `scripts/lab up` has it)")


def seed_ec2(plan: LabPlan) -> tuple[dict[str, str], str]:
    """The instances and the Elastic IP in the AWS API stand-in's EC2, as `pulumi up` leaves them.
    Returns the instance ids EC2 gave (by hostname) and the Elastic IP's allocation id: the program is
    evaluated again with them, and the hosts take their ids from it (their NoCloud meta-data), as from
    EC2's metadata service."""
    request = {
        "instances": {
            h.name: {"Project": "webinfra", "Stack": plan.stack, "Role": h.role, "Name": h.name} for h in plan.hosts
        },
        "elastic_ip_tags": plan.elastic_ip_tags,
        "associate_with": plan.eip_associated_with,  # none for a pair: keepalived's active LB associates it
    }
    result = aws_api(plan, "seed-ec2", input=json.dumps(request))
    if result.returncode != 0:
        raise LabError(f"seeding EC2 in the AWS API stand-in failed:\n{result.stderr}")
    seeded = json.loads(result.stdout)
    ids = seeded["instances"]
    holder = request["associate_with"]
    print(
        f"  {len(ids)} instances, Elastic IP {seeded['allocation_id']} "
        + (f"on {holder} ({ids[holder]})" if holder else "not associated (the active load balancer will associate it)")
    )
    return ids, seeded["allocation_id"]


def topology(plan: LabPlan) -> tuple:
    """What the lab's network is built from: the same for every evaluation of the same settings."""
    # rules in any order: the program registers them concurrently
    return (
        plan.vpc_cidr,
        frozenset(plan.rules),
        plan.floating_address,
        plan.elastic_ip,
        tuple(
            (h.name, h.role, h.db_role, h.private_ip, h.public_ip, h.security_groups, h.packages) for h in plan.hosts
        ),
    )


def elastic_ip_holder(plan: LabPlan) -> str:
    """The hostname the AWS API stand-in has the Elastic IP associated with ("" when none)."""
    result = aws_api(plan, "eip-holder", plan.elastic_ip_allocation)
    if result.returncode != 0:
        raise LabError(f"asking the AWS API stand-in for the Elastic IP failed:\n{result.stderr}")
    by_id = {h.instance_id: h.name for h in plan.hosts}
    return by_id.get(result.stdout.strip(), result.stdout.strip())


def floating_address_holder(plan: LabPlan) -> str:
    """The load balancer that holds the floating address now ("" when none does)."""
    for host in plan.load_balancers:
        if plan.floating_address and lab_hosts.is_running(host):
            shown = lab_hosts.guest_command(
                host, ["ip", "-4", "-o", "addr", "show", "to", f"{plan.floating_address}/32"], timeout=20
            )
            if plan.floating_address in shown.stdout:
                return host.name
    return ""


def cloud_init_state(host: Host) -> str:
    if not lab_hosts.is_running(host):
        return "stopped"
    try:
        result = lab_hosts.guest_command(host, ["cloud-init", "status"], timeout=20)
    except (RuntimeError, subprocess.TimeoutExpired):
        return "booting"
    for line in result.stdout.splitlines():
        if line.startswith("status:"):
            return line.split(":", 1)[1].strip()
    return "booting"


def wait_for_cloud_init(plan: LabPlan, began: float, timeout: float) -> dict[str, str]:
    final: dict[str, str] = {}
    deadline = time.monotonic() + timeout
    print(f"  waiting for cloud-init on {len(plan.hosts)} hosts (at most {timeout:.0f}s)", flush=True)
    while len(final) < len(plan.hosts) and time.monotonic() < deadline:
        for host in plan.hosts:
            if host.name in final:
                continue
            state = cloud_init_state(host)
            if state in ("done", "error", "degraded done", "disabled") or (
                state == "stopped" and time.monotonic() - began > 30
            ):
                final[host.name] = state
                mark = "✓" if state == "done" else "✗"
                print(
                    f"  {mark} {host.name:<7} {host.role:<3} {host.db_role or '':<7} "
                    f"cloud-init {state} after {time.monotonic() - began:.1f}s",
                    flush=True,
                )
        time.sleep(1)
    for host in plan.hosts:
        final.setdefault(host.name, "timed out")
    return final


def report_failure(host: Host, state: str) -> None:
    print(f"\n── {host.name}: cloud-init {state} ──", file=sys.stderr)
    if not lab_hosts.is_running(host):
        console = lab_hosts.host_dir(host.name) / "console.log"
        if console.exists():
            print("\n".join(console.read_text(errors="replace").splitlines()[-30:]), file=sys.stderr)
        return
    for command in (
        ["cloud-init", "status", "--long"],
        # a unit that failed says why in its journal (nftables, haproxy, ...)
        [
            "sh",
            "-c",
            "systemctl --failed --no-legend --plain | awk '{print $1}' | xargs -r -n1 journalctl --no-pager -n 15 -u",
        ],
        ["sh", "-c", "grep -E 'WARNING|ERROR|Traceback|failed' /var/log/cloud-init.log | tail -n 15"],
        ["tail", "-n", "40", "/var/log/cloud-init-output.log"],
    ):
        result = lab_hosts.guest_command(host, command, timeout=30)
        print(result.stdout + result.stderr, file=sys.stderr)


def up(
    web_count: int | None,
    timeout: float,
    acme: bool = False,
    lb_count: int | None = None,
    overrides: dict[str, str] | None = None,
) -> int:
    steps = Steps()
    steps.run("remove leftovers of an earlier lab", down, quiet=True)
    label = "".join(
        [
            f", webCount={web_count}" if web_count else "",
            f", lbCount={lb_count}" if lb_count else "",
            f", domain={lab_acme.DOMAIN} with ACME" if acme else "",
        ]
        + [f", {key}={value}" for key, value in (overrides or {}).items()]
    )
    config = lab_config(web_count, acme, lb_count, overrides)
    _, plan = steps.run(f"evaluate the Pulumi program under mocks (stack lab{label})", evaluate, config)
    LOGS.mkdir(parents=True, exist_ok=True)
    package_sets = {h.packages for h in plan.hosts}
    cached = lab_image.is_built(package_sets)
    images = steps.run(
        f"Debian 12 images ({'cached' if cached else 'first build, a few minutes'})",
        lab_image.build,
        package_sets,
        LOGS,
    )
    save_state(plan)  # from here on, `down` finds what to remove

    def make_network():
        network.create_cloud(plan)
        for host in plan.hosts:
            network.attach_host(plan, host)

    steps.run(
        f"network: VPC {plan.vpc_cidr}, gateway, security groups, {len(plan.hosts)} host namespaces", make_network
    )
    steps.run(f"AWS API stand-in on {plan.aws_endpoint_url}", start_aws_api, plan)
    ids, allocation = steps.run("EC2 in the AWS API stand-in: the instances and the Elastic IP", seed_ec2, plan)
    # As on AWS, what the program declares from an instance's id (a pair's readiness gate, the alarms)
    # names the instances EC2 made: evaluate it again with their ids. Everything the network was built
    # from must come out the same.
    first = plan
    from lab.mock_cloud import ELASTIC_IP

    run, plan = steps.run(
        "evaluate the program with the instance ids EC2 gave", evaluate, config, {**ids, ELASTIC_IP: allocation}
    )
    if topology(plan) != topology(first):
        raise LabError("the program declared a different topology on its second evaluation")
    plan = dataclasses.replace(plan, elastic_ip_allocation=allocation)
    steps.run(f"SSM parameters in the AWS API stand-in ({len(plan.parameters)})", load_parameters, plan)
    steps.run(f"S3 buckets in the AWS API stand-in ({len(plan.buckets)})", create_buckets, plan)
    if kept := kept_buckets():
        steps.run(f"kept buckets of earlier labs ({len(kept)})", import_kept_buckets, plan)
    save_state(plan)
    save_program_state(config, run)
    arch = aws_downloads.native_arch()
    downloads_ca = steps.run(
        f"AWS's agent buckets, stood in on https://{plan.api_address} "
        f"({', '.join(aws_downloads.server_names(plan.region, arch))})",
        aws_downloads.start,
        DOWNLOADS,
        network.CLOUD_NS,
        plan.api_address,
        plan.region,
        arch,
        REPO,
    )
    acme_ca = None
    if acme:
        acme_ca = steps.run(
            f"ACME server (pebble) on the lab's internet at {lab_acme.DIRECTORY}",
            lab_acme.start,
            LOGS / "acme",
            plan.elastic_ip,
        )
        etc = pathlib.Path("/etc/netns") / network.CLIENT_NS
        etc.mkdir(parents=True, exist_ok=True)
        (etc / "hosts").write_text(f"127.0.0.1 localhost\n{plan.elastic_ip} {lab_acme.DOMAIN}\n")

    def boot_all():
        for host in plan.hosts:
            lab_hosts.prepare(host, images[tuple(sorted(host.packages))])
            lab_hosts.trust_ca(host, downloads_ca, "webinfra-lab-aws-downloads")
            lab_hosts.add_hosts_entry(host, aws_downloads.hosts_entry(plan.api_address, plan.region, arch))
            if acme_ca and host.role == "lb":
                lab_hosts.trust_ca(host, acme_ca, "webinfra-lab-acme")
            lab_hosts.boot(host)

    began = time.monotonic()
    steps.run("boot " + ", ".join(h.name for h in plan.hosts), boot_all)
    states = wait_for_cloud_init(plan, began, timeout)
    failed = [h for h in plan.hosts if states[h.name] != "done"]
    for host in failed:
        report_failure(host, states[host.name])
    total = time.monotonic() - steps.started
    if failed:
        print(
            f"\n✗ lab up failed after {total:.0f}s: {', '.join(h.name for h in failed)} did not finish cloud-init. "
            "Inspect with scripts/lab exec HOST -- ..., remove with scripts/lab down.",
            file=sys.stderr,
        )
        return 1
    steps.run("the program's smoke test from the lab's internet, as `pulumi up` runs it", smoke_test, plan, acme)
    total = time.monotonic() - steps.started
    print(f"\n✓ lab up in {total:.0f}s. The site: {plan.url}")
    print(
        f"  curl from the lab's internet:  sudo scripts/lab client -- curl -si --cacert {CERTIFICATE_FILE} {plan.url}"
    )
    print("  hosts and addresses:           sudo scripts/lab status")
    print("  remove everything:             sudo scripts/lab down")
    return 0


SMOKE_CA_FILE = lab_hosts.STATE / "smoke-ca.pem"
SMOKE_TIMEOUT = 1000  # the declared command bounds itself (--timeout 900)


def images() -> int:
    """The images of every lab the tests boot (a pair, one load balancer, --acme), built or found cached:
    scripts/test builds them while the tests without the lab run."""
    began = time.monotonic()
    package_sets: set[tuple[str, ...]] = set()
    for config in (lab_config(None), lab_config(None, lb_count=1), lab_config(None, acme=True)):
        _, plan = evaluate(config)
        package_sets |= {h.packages for h in plan.hosts}
    logs = lab_image.CACHE / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    cached = lab_image.is_built(package_sets)
    lab_image.build(package_sets, logs)
    print(
        f"✓ {len(package_sets)} images over the Debian 12 base "
        + ("cached" if cached else f"built in {time.monotonic() - began:.0f}s (log: {logs / 'image-build.log'})")
    )
    return 0


def smoke_test(plan: LabPlan, acme: bool) -> subprocess.CompletedProcess | None:
    """The program's SmokeTest command exactly as declared (its create string, environment and the
    project directory, with /bin/sh -c as pulumi-command runs it), from the lab's internet. With ACME the
    lab's internet trusts the lab's ACME root in place of Let's Encrypt's, as the operator's machine
    trusts Let's Encrypt's: that trust store is the only thing added."""
    if not plan.smoke_command:
        print("  smokeTest is false: the program declares no smoke test")
        return None
    extra = {}
    if acme:
        SMOKE_CA_FILE.write_text(lab_acme.root_certificate())
        extra["SSL_CERT_FILE"] = str(SMOKE_CA_FILE)
    print(f"  $ {plan.smoke_command['create'][:160]}…", flush=True)
    result = run_local_command(
        plan.smoke_command, namespace=network.CLIENT_NS, extra_environment=extra, timeout=SMOKE_TIMEOUT
    )
    print("\n".join("  " + line for line in (result.stdout + result.stderr).splitlines()), flush=True)
    if result.returncode != 0:
        raise LabError(
            "the hosts booted but the site does not pass the smoke test (above); "
            "inspect with scripts/lab status and exec, remove with scripts/lab down"
        )
    return result


def smoke() -> int:
    plan = load_state()
    smoke_test(plan, acme=bool(plan.smoke_command) and "--server-name" in plan.smoke_command.get("create", ""))
    return 0


def ready() -> int:
    """The readiness gates a load-balancer pair declares (lb-01 waits for lb-02), exactly as declared."""
    plan = load_state()
    gates = sorted(name for name in plan.local_commands if name.startswith("lb-") and name.endswith("-ready"))
    if not gates:
        print("the program declares no readiness gate (one load balancer)")
        return 0
    status = 0
    for name in gates:
        status = status or run_declared_gate(plan, name)
    return status


def run_declared_gate(plan: LabPlan, name: str, action: str = "create") -> int:
    """One declared gate, its `create` (or, for `action` "update", its `update` when it declares one), where
    `pulumi up` would reach what it checks: the site from the lab's internet (scripts/smoke), the AWS API
    from the cloud namespace (scripts/wait-healthy). What the operator's machine has and this one lacks is
    added: the API's endpoint and (dummy) credentials."""
    inputs = dict(plan.local_commands[name])
    if action == "update" and inputs.get("update"):
        inputs["create"] = inputs["update"]
    site = inputs["create"].startswith("scripts/smoke")
    environment = (
        {}
        if site
        else {"AWS_ENDPOINT_URL": plan.aws_endpoint_url, "AWS_ACCESS_KEY_ID": "lab", "AWS_SECRET_ACCESS_KEY": "lab"}
    )
    print(f"{name}: $ {inputs['create']}", flush=True)
    result = run_local_command(
        inputs,
        namespace=network.CLIENT_NS if site else network.CLOUD_NS,
        extra_environment=environment,
        timeout=SMOKE_TIMEOUT,
    )
    print(result.stdout + result.stderr, end="", flush=True)
    return result.returncode


# --- down -------------------------------------------------------------------------------------------------


def down(quiet: bool = False, keep_backups: bool = False, delete_backups: bool = False) -> dict[str, int]:
    """Everything the lab made goes, whatever state a crash left it in; the image cache stays, and the
    buckets kept: this lab's too with `keep_backups` (as `pulumi destroy` keeps a stack's), every kept one
    goes with `delete_backups`."""
    if keep_backups:
        keep_buckets(load_state())
    counts = {"supervisors": 0, "processes": 0, "mounts": 0, "namespaces": 0}
    for pid in lab_hosts.supervisors():
        try:
            os.kill(pid, 9)
            counts["supervisors"] += 1
        except ProcessLookupError:
            pass
    namespaces = network.lab_namespaces()
    for ns in namespaces:
        pids = lab_hosts.netns_pids(ns)
        counts["processes"] += len(pids)
        lab_hosts.kill_namespace_processes(ns)
    deadline = time.monotonic() + 20
    while any(lab_hosts.netns_pids(ns) for ns in namespaces) and time.monotonic() < deadline:
        time.sleep(0.1)
    counts["mounts"] = len(lab_hosts.unmount_and_delete())
    lab_hosts.remove_cgroups()
    if not lab_image.building():
        unmount_below(lab_image.CACHE)  # an image build interrupted mid-chroot
    counts["namespaces"] = len(network.remove_all())
    for path in (STATE_FILE, CERTIFICATE_FILE, SMOKE_CA_FILE, PROGRAM_STATE, PROGRAM_SECRETS):
        path.unlink(missing_ok=True)
    shutil.rmtree(LOGS, ignore_errors=True)
    shutil.rmtree(DOWNLOADS, ignore_errors=True)
    if delete_backups:
        for kept in kept_buckets():
            shutil.rmtree(kept)
            print(f"deleted the kept bucket {kept.name}")
    shutil.rmtree(pathlib.Path("/etc/netns") / network.CLIENT_NS, ignore_errors=True)
    for leftover in (
        pathlib.Path("/run/systemd/nspawn/propagate").glob("*")
        if pathlib.Path("/run/systemd/nspawn/propagate").exists()
        else []
    ):
        shutil.rmtree(leftover, ignore_errors=True)
    if not quiet:
        print(
            f"lab down: stopped {counts['supervisors']} hosts ({counts['processes']} processes), "
            f"unmounted {counts['mounts']} overlays, deleted {counts['namespaces']} namespaces"
        )
    return counts


# --- status, exec, kill, start, sg --------------------------------------------------------------------------


def status_report() -> dict:
    """What `scripts/lab status --json` prints: the lab's hosts and addresses, as they are now."""
    plan = load_state()
    cut, split_off = network.blackholed(), network.split_side()
    # Each answer below is a process (entering a host's namespace, or the AWS API's): asked at once
    with concurrent.futures.ThreadPoolExecutor(max_workers=8) as pool:
        cloud_init = pool.map(cloud_init_state, plan.hosts)
        failover = pool.submit(failover_report, plan)
        eip_holder = pool.submit(elastic_ip_holder, plan)
        floating_holder = pool.submit(floating_address_holder, plan)
        cloud_init_states = list(cloud_init)
    rows = []
    for host, cloud_init_now in zip(plan.hosts, cloud_init_states, strict=True):
        rows.append(
            {
                "name": host.name,
                "role": host.role,
                "db_role": host.db_role,
                "address": host.private_ip,
                "public_address": host.public_ip,
                "netns": host.netns,
                "running": lab_hosts.is_running(host),
                "blackholed": host.veth in cut,
                "split_off": host.veth in split_off,  # on the cut-off side of a split (scripts/lab split)
                "cloud_init": cloud_init_now,
            }
        )
    report = {
        "url": plan.url,
        "failover": failover.result(),
        "ca_file": str(CERTIFICATE_FILE),
        "client_netns": network.CLIENT_NS,
        "client_address": CLIENT_ADDRESS,
        "security_groups": network.security_groups_enabled(),
        "aws_endpoint_url": plan.aws_endpoint_url,
        "elastic_ip": plan.elastic_ip,
        "elastic_ip_holder": eip_holder.result(),
        "floating_address": plan.floating_address,
        "floating_address_holder": floating_holder.result(),
        "backup_buckets": sorted(plan.buckets),
        "kept_buckets": [kept.name for kept in kept_buckets()],
        "hosts": rows,
    }
    return report


def failover_report(plan: LabPlan) -> dict | None:
    """The active load balancer's failover controller, as its state file says: which server is the
    primary, armed or not and why, its last verdict and what it did."""
    for host in plan.hosts:
        if host.role != "lb" or not lab_hosts.is_running(host):
            continue
        try:
            result = lab_hosts.guest_command(host, ["cat", "/run/webinfra-failover/state.json"], timeout=5)
            state = json.loads(result.stdout) if result.returncode == 0 else None
        except (RuntimeError, subprocess.SubprocessError, ValueError):
            state = None
        if state and state.get("active"):
            return {"controller": host.name, **state}
    return None


def status(as_json: bool) -> int:
    plan = load_state()
    report = status_report()
    rows = report["hosts"]
    if as_json:
        print(json.dumps(report, indent=2))
        return 0
    print(
        f"url: {plan.url}   "
        f"(from the lab's internet: sudo scripts/lab client -- curl -si --cacert {CERTIFICATE_FILE} {plan.url})"
    )
    print(f"security groups enforced: {'yes' if report['security_groups'] else 'NO (scripts/lab sg on)'}")
    print(
        f"Elastic IP {plan.elastic_ip}: associated with {report['elastic_ip_holder'] or 'nothing'} (EC2 API)"
        + (
            f"; floating address {plan.floating_address} on {report['floating_address_holder'] or 'no host'}"
            if plan.floating_address
            else ""
        )
    )
    failover = report["failover"]
    if failover:
        print(
            f"database primary: {failover['primary'] or 'none'} (failover controller on {failover['controller']}: "
            f"{'armed' if failover['armed'] else 'DISARMED'}, {failover['arming']}; {failover['verdict']})"
        )
    else:
        print("database primary: no failover controller answers")
    print(f"{'host':<8}{'role':<6}{'db':<9}{'private':<14}{'public':<17}{'running':<12}cloud-init")
    for r in rows:
        running = (
            ("black-holed" if r["blackholed"] else "split off" if r["split_off"] else "yes") if r["running"] else "no"
        )
        print(
            f"{r['name']:<8}{r['role']:<6}{(r['db_role'] or '-'):<9}{r['address']:<14}{r['public_address']:<17}"
            f"{running:<12}{r['cloud_init']}"
        )
    return 0


def exec_in(name: str, command: list[str]) -> int:
    host = load_state().host(name)
    if not command:
        raise LabError("give a command after --, e.g. scripts/lab exec web-01 -- cloud-init status")
    return lab_hosts.guest_command(host, command, timeout=None, capture=False).returncode


def client(command: list[str]) -> int:
    load_state()
    return subprocess.run(["ip", "netns", "exec", network.CLIENT_NS, *command]).returncode


def kill(name: str) -> int:
    host = load_state().host(name)
    network.set_link(host, up=False)
    lab_hosts.kill(host)
    print(f"{name} powered off hard")
    return 0


def start(name: str) -> int:
    host = load_state().host(name)
    if lab_hosts.is_running(host):
        print(f"{name} is already running")
        return 0
    network.set_link(host, up=True)
    lab_hosts.boot(host)
    deadline = time.monotonic() + 60
    while not lab_hosts.is_running(host) and time.monotonic() < deadline:
        time.sleep(0.2)
    print(f"{name} booting")
    return 0 if lab_hosts.is_running(host) else 1


def blackhole(name: str, on: bool) -> int:
    host = load_state().host(name)
    network.set_blackhole(host, on=on)
    print(f"{name} black-holed: its packets vanish" if on else f"{name} reachable again")
    return 0


def split(names: list[str], heal: bool) -> int:
    """Cut some hosts (an availability zone's, say) off from all the others, or heal the split."""
    plan = load_state()
    if heal:
        network.set_split(None)
        print("split healed: every host reaches every other")
        return 0
    if not names:
        raise LabError("name the hosts of one side, e.g. scripts/lab split lb-01 web-01 (or --heal)")
    side = [plan.host(name) for name in names]
    network.set_split(side)
    others = [h.name for h in plan.hosts if h not in side]
    print(
        f"split: {' '.join(names)} and {' '.join(others)} no longer reach each other "
        "(each side still reaches the AWS API and the internet)"
    )
    return 0


def security_groups(setting: str) -> int:
    plan = load_state()
    network.set_security_groups(plan, enabled=setting == "on")
    print(f"security groups {'enforced' if setting == 'on' else 'NOT enforced: every flow between lab hosts passes'}")
    return 0


# --- entry point -------------------------------------------------------------------------------------------


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="scripts/lab",
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=textwrap.indent(__doc__.split("\n\n", 1)[1], "    "),
    )
    sub = parser.add_subparsers(dest="command", required=True)
    p_up = sub.add_parser("up", help="boot the lab stack")
    p_up.add_argument("--web-count", type=int, help="web servers (default: Pulumi.lab.yaml)")
    p_up.add_argument("--timeout", type=float, default=CLOUD_INIT_TIMEOUT, help="seconds to wait for cloud-init")
    p_up.add_argument("--lb-count", type=int, choices=(1, 2), help="load balancers (default: Pulumi.lab.yaml)")
    p_up.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="SETTING=VALUE",
        help="override a setting of Pulumi.lab.yaml (e.g. rateLimitPer10s=100000); validated like any other",
    )
    p_up.add_argument(
        "--acme", action="store_true", help=f"set domain {lab_acme.DOMAIN}: certbot gets its certificate from pebble"
    )
    sub.add_parser("images", help="build (or find cached) the images of every lab the tests boot")
    p_update = sub.add_parser("update", help="apply changed settings to the running lab, as `pulumi up` would")
    p_update.add_argument("--set", action="append", default=[], metavar="SETTING=VALUE")
    p_update.add_argument("--preview", action="store_true", help="print the plan only, as `pulumi preview`")
    p_update.add_argument(
        "--replace",
        action="append",
        default=[],
        metavar="RESOURCE",
        help="replace this resource (its name in the plan) whatever its inputs, as `pulumi up --replace URN`",
    )
    p_status = sub.add_parser("status", help="hosts, roles, addresses, cloud-init state, URL")
    p_status.add_argument("--json", action="store_true")
    p_down = sub.add_parser("down", help="remove everything the lab made (kept buckets stay)")
    backups = p_down.add_mutually_exclusive_group()
    backups.add_argument(
        "--keep-backups", action="store_true", help="keep the backup bucket: the next `up` has it beside its own"
    )
    backups.add_argument("--delete-backups", action="store_true", help="delete every bucket kept so far")
    sub.add_parser("smoke", help="run the program's declared smoke test from the lab's internet")
    sub.add_parser("ready", help="run a pair's declared readiness gate against the AWS API stand-in")
    p_exec = sub.add_parser("exec", help="run a command inside a host")
    p_exec.add_argument("host")
    p_exec.add_argument("cmd", nargs=argparse.REMAINDER)
    p_client = sub.add_parser("client", help="run a command in the client namespace (the internet)")
    p_client.add_argument("cmd", nargs=argparse.REMAINDER)
    for name, text in (
        ("kill", "power a host off hard"),
        ("start", "boot a stopped host"),
        ("blackhole", "cut a host's network silently"),
        ("heal", "give a black-holed host its network back"),
    ):
        sub.add_parser(name, help=text).add_argument("host")
    p_split = sub.add_parser("split", help="cut some hosts off from the others (a zone from a zone)")
    p_split.add_argument("host", nargs="*")
    p_split.add_argument("--heal", action="store_true", help="end the split")
    p_sg = sub.add_parser("sg", help="security-group enforcement on or off")
    p_sg.add_argument("setting", choices=("on", "off"))
    args = parser.parse_args(argv)

    if os.geteuid() != 0:
        print("scripts/lab needs root (namespaces, mounts, systemd-nspawn): sudo scripts/lab ...", file=sys.stderr)
        return 1
    strip = lambda cmd: cmd[1:] if cmd and cmd[0] == "--" else cmd  # noqa: E731
    overrides = {}
    for item in getattr(args, "set", []):
        key, sep, value = item.partition("=")
        if not sep or not key:
            parser.error(f"--set wants SETTING=VALUE, got {item!r}")
        overrides[key.removeprefix("webinfra:")] = value
    try:
        if args.command == "up":
            if args.web_count is not None and not 2 <= args.web_count <= 20:
                parser.error("--web-count must be from 2 to 20")
            return up(args.web_count, args.timeout, args.acme, args.lb_count, overrides)
        if args.command == "update":
            from lab import update as lab_update

            return lab_update.update(overrides, args.preview, tuple(args.replace))
        if args.command == "images":
            return images()
        if args.command == "down":
            down(keep_backups=args.keep_backups, delete_backups=args.delete_backups)
            return 0
        if args.command == "smoke":
            return smoke()
        if args.command == "ready":
            return ready()
        if args.command == "status":
            return status(args.json)
        if args.command == "exec":
            return exec_in(args.host, strip(args.cmd))
        if args.command == "client":
            return client(strip(args.cmd))
        if args.command == "kill":
            return kill(args.host)
        if args.command == "start":
            return start(args.host)
        if args.command in ("blackhole", "heal"):
            return blackhole(args.host, on=args.command == "blackhole")
        if args.command == "split":
            return split(args.host, args.heal)
        if args.command == "sg":
            return security_groups(args.setting)
    except (LabError, KeyError, RuntimeError, ValueError) as error:
        print(f"scripts/lab: {error}", file=sys.stderr)
        return 1
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
