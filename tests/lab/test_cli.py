"""lab/cli.py's state file: what a later `scripts/lab` command (status, down --keep-backups, update) knows of
the lab that `up` made."""

from __future__ import annotations

import dataclasses

from lab import cli
from lab import hosts as lab_hosts


def test_the_state_keeps_what_later_commands_need_the_backup_buckets_too(tmp_path, monkeypatch):
    from lab.mock_cloud import run_program
    from lab.topology import plan_from_program

    monkeypatch.setattr(lab_hosts, "STATE", tmp_path)
    monkeypatch.setattr(cli, "STATE_FILE", tmp_path / "state.json")
    monkeypatch.setattr(cli, "CERTIFICATE_FILE", tmp_path / "lb-certificate.pem")
    run = run_program({}, stack="lab", region="us-east-1")
    plan = plan_from_program(
        run, stack="lab", region="us-east-1", vpc_cidr="10.0.0.0/16", aws_endpoint_url="http://10.0.0.2:5000"
    )
    assert plan.buckets  # the stack's backup bucket: `down --keep-backups` keeps it by this name
    cli.save_state(plan)
    loaded = cli.load_state()
    # secrets stay out of the state file; the Elastic IP's tags are given to EC2 at `up` only
    not_kept = {"certificate_pem", "parameters", "elastic_ip_tags"}
    for field in dataclasses.fields(plan):
        if field.name == "hosts":
            assert loaded.hosts == tuple(dataclasses.replace(h, user_data_gzip=b"") for h in plan.hosts)
        elif field.name not in not_kept:
            assert getattr(loaded, field.name) == getattr(plan, field.name), field.name
