"""The table of fixed server settings: checked when loaded, and every entry read by a rendered file."""

from __future__ import annotations

import dataclasses
import pathlib
import re
import subprocess

import pytest
import yaml

from provisioning import defaults, render
from provisioning.defaults import SERVER_DEFAULTS, ServerDefaultsError
from tests.helpers import require_tool
from tests.provisioning.helpers import ACME, BACKENDS_2, FACTS, PAIR, files_of, lb_config, runtime_files, web_config


def test_the_table_loads_with_every_setting_typed_and_explained():
    raw = yaml.safe_load(defaults.DEFAULTS_FILE.read_text())
    loaded = SERVER_DEFAULTS.for_templates()
    assert set(raw) == set(loaded)
    for section, values in loaded.items():
        assert isinstance(values, object) and dataclasses.is_dataclass(values)
        for setting in dataclasses.fields(values):
            entry = raw[section][setting.name]
            assert getattr(values, setting.name) == entry["value"]
            assert len(entry["why"].split()) >= 3, f"{section}.{setting.name}"
    assert SERVER_DEFAULTS.haproxy_health_check.detect_seconds == 1.75
    assert SERVER_DEFAULTS.gunicorn.timeout_seconds == 30


def _broken_copy(tmp_path: pathlib.Path, change) -> pathlib.Path:
    raw = yaml.safe_load(defaults.DEFAULTS_FILE.read_text())
    change(raw)
    path = tmp_path / "server-defaults.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def test_a_wrong_table_is_refused_naming_every_wrong_setting(tmp_path):
    def break_it(raw):
        raw["haproxy"]["timeout_clint"] = raw["haproxy"].pop("timeout_client")  # misspelt: unknown and missing
        raw["haproxy"]["retries"]["value"] = True  # a bool is not a count
        raw["haproxy"]["timeout_server"]["value"] = 10  # a duration needs its unit
        raw["haproxy_health_check"]["inter"]["value"] = "1.5s"  # HAProxy reads whole numbers only
        raw["nginx"]["client_max_body_size"]["value"] = "16 KB"
        raw["gunicorn"]["workers"]["value"] = 0
        raw["gunicorn"]["timeout"]["value"] = "400ms"  # gunicorn would read 0: no timeout at all
        raw["keepalived"]["priority_lb_01"]["value"] = 300
        raw["haproxy"]["stats_port"]["value"] = 70000
        raw["mariadb"]["semi_sync_timeout_ms"]["why"] = ""
        raw["keepalived"]["router_id"] = 51  # the value alone, without why
        raw["haproxy_health_checks"] = {}  # a section no program reads

    with pytest.raises(ServerDefaultsError) as refused:
        defaults.load(_broken_copy(tmp_path, break_it))
    message = str(refused.value)
    for named in (
        "haproxy.timeout_clint: unknown setting",
        "haproxy.timeout_client: missing",
        "haproxy.retries: True is not a int",
        "haproxy.timeout_server: 10 is not a str",
        "haproxy_health_check.inter: '1.5s' is not a duration such as 500ms, 10s or 1m",
        "nginx.client_max_body_size: '16 KB' is not a size such as 16k",
        "gunicorn.workers: 0 must be above 0",
        "gunicorn.timeout: '400ms' is not whole seconds, at least 1",
        "keepalived.priority_lb_01: 300 is outside 1-254",
        "haproxy.stats_port: 70000 is outside 1-65535",
        "mariadb.semi_sync_timeout_ms: `why` must say why",
        "keepalived.router_id: write it as `value` and `why`",
        "haproxy_health_checks: unknown section",
    ):
        assert named in message, (named, message)


def test_settings_that_contradict_each_other_are_refused(tmp_path):
    def contradict(raw):
        raw["haproxy"]["client_table_expire"]["value"] = "5s"  # shorter than the 10 s it counts in
        raw["haproxy"]["stats_port"]["value"] = render.ACME_PORT
        raw["haproxy"]["timeout_server_read"]["value"] = "10s"  # a read would wait as long as a write
        raw["nginx"]["proxy_read_timeout"]["value"] = "20s"  # nginx would give up before gunicorn does
        raw["keepalived"]["check_request_timeout"]["value"] = 2
        raw["keepalived"]["priority_lb_02"]["value"] = raw["keepalived"]["priority_lb_01"]["value"]

    with pytest.raises(ServerDefaultsError) as refused:
        defaults.load(_broken_copy(tmp_path, contradict))
    message = str(refused.value)
    for named in (
        "haproxy.client_table_expire must be over the 10 s",
        "haproxy.stats_port must not be one of (80, 443, 8888)",
        "haproxy.timeout_server_read must be below timeout_server",
        "nginx.proxy_read_timeout must be at least gunicorn.timeout",
        "keepalived.check_request_timeout must be below check_timeout",
        "keepalived.priority_lb_01 and priority_lb_02 must differ",
    ):
        assert named in message, (named, message)


def test_durations_read_as_the_servers_read_them():
    assert [defaults.seconds(d) for d in ("500ms", "10s", "1m")] == [0.5, 10.0, 60.0]


def test_an_unchanged_copy_loads_to_the_same_settings(tmp_path):
    # so the refusals above come from the changes made to the copy, not from the copying
    assert defaults.load(_broken_copy(tmp_path, lambda raw: None)) == SERVER_DEFAULTS


class _Recorder:
    """A section whose every read is noted (then answered from the real section)."""

    def __init__(self, name: str, section: object, reads: set[str]):
        self._name, self._section, self._reads = name, section, reads

    def __getattr__(self, attribute: str):
        self._reads.add(f"{self._name}.{attribute}")
        return getattr(self._section, attribute)


def _every_rendered_file() -> list[str]:
    lb_variants = [
        lb_config(FACTS, "lb-01"),
        *(lb_config(dataclasses.replace(PAIR, admin_cidr="203.0.113.0/28", **ACME), lb) for lb in ("lb-01", "lb-02")),
    ]
    web_variants = [web_config(FACTS, "web-01", "primary", None), web_config(FACTS, "web-02", "replica", "10.0.0.11")]
    runtime = [*runtime_files(FACTS, BACKENDS_2).values(), *runtime_files(PAIR, BACKENDS_2).values()]
    return [f["content"] for text in lb_variants + web_variants for f in files_of(text).values()] + runtime


def test_every_setting_of_the_table_is_read_by_a_rendered_file(monkeypatch):
    reads: set[str] = set()
    recording = {name: _Recorder(name, section, reads) for name, section in SERVER_DEFAULTS.for_templates().items()}

    class RecordingDefaults:
        haproxy_health_check = recording["haproxy_health_check"]
        keepalived = recording["keepalived"]
        failover = recording["failover"]
        gunicorn = recording["gunicorn"]  # the app's environment reads writes_at_once
        mariadb = recording["mariadb"]  # the backup timer and the environment read the backup settings

        @staticmethod
        def for_templates():
            return recording

    monkeypatch.setattr(defaults, "SERVER_DEFAULTS", RecordingDefaults)
    assert _every_rendered_file()
    table = {
        f"{name}.{setting.name}"
        for name, section in SERVER_DEFAULTS.for_templates().items()
        for setting in dataclasses.fields(section)  # type: ignore[arg-type]
    }
    # gunicorn's durations reach its command line as seconds (the template reads the properties)
    reads |= {r.removesuffix("_seconds") for r in reads if r.startswith("gunicorn.")}
    # an alarm's threshold, not a server's setting (tests/components/test_monitoring.py checks it)
    reads.add("mariadb.backup_alarm_after_hours")
    assert table - reads == set(), "settings no rendered file reads"


def test_a_changed_value_in_the_table_changes_what_the_servers_get(tmp_path, monkeypatch):
    def change(raw):
        raw["haproxy"]["timeout_server"]["value"] = "7s"
        raw["nginx"]["proxy_read_timeout"]["value"] = "31s"
        raw["gunicorn"]["workers"]["value"] = 5
        raw["mariadb"]["semi_sync_timeout_ms"]["value"] = 4500
        raw["keepalived"]["advert_interval"]["value"] = 2

    monkeypatch.setattr(defaults, "SERVER_DEFAULTS", defaults.load(_broken_copy(tmp_path, change)))
    lb = files_of(lb_config(PAIR, "lb-01"))
    web = files_of(web_config(FACTS, "web-01", "primary", None))
    assert "timeout server 7s\n" in lb["/etc/webinfra/haproxy.cfg"]["content"]
    assert "advert_int 2\n" in lb["/etc/webinfra/keepalived.conf"]["content"]
    assert "proxy_read_timeout 31s;" in web["/etc/webinfra/nginx-site.conf"]["content"]
    assert "--workers 5 " in web["/etc/systemd/system/webinfra-app.service"]["content"]
    assert "rpl_semi_sync_master_timeout    = 4500\n" in web["/etc/mysql/mariadb.conf.d/60-webinfra.cnf"]["content"]


@pytest.mark.parametrize("hostname, role, primary", [("web-01", "primary", None), ("web-02", "replica", "10.0.0.11")])
def test_mariadb_reads_every_setting_of_the_rendered_config(tmp_path, hostname, role, primary):
    mariadbd = require_tool("mariadbd")
    path = tmp_path / "60-webinfra.cnf"
    path.write_text(
        files_of(web_config(FACTS, hostname, role, primary))["/etc/mysql/mariadb.conf.d/60-webinfra.cnf"]["content"]
    )

    def check(config: pathlib.Path) -> subprocess.CompletedProcess:
        # --help --verbose reads every option as the server would and stops: an unknown one is an error
        return subprocess.run(
            [mariadbd, f"--defaults-file={config}", "--help", "--verbose"], capture_output=True, text=True, timeout=60
        )

    result = check(path)
    assert result.returncode == 0, result.stderr
    timeout = SERVER_DEFAULTS.mariadb.semi_sync_timeout_ms
    assert re.search(rf"^rpl-semi-sync-master-timeout\s+{timeout}$", result.stdout, re.M), "the table's value"
    path.write_text(path.read_text() + "rpl_semi_sync_master_timout = 3000\n")
    refused = check(path)
    assert refused.returncode != 0 and "unknown variable 'rpl_semi_sync_master_timout" in refused.stderr
