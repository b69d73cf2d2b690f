"""The lab's stand-in for AWS's agent buckets (no lab booted: the packages are built and the server
runs on loopback, without root)."""

import subprocess
import threading

import pytest

from lab import aws_downloads
from tests.helpers import require_tool

REGION, ARCH = "us-east-1", "amd64"
# AWS's documented download locations, written out here so a change to the program's URLs shows.
SSM_URL = "https://s3.us-east-1.amazonaws.com/amazon-ssm-us-east-1/latest/debian_amd64/amazon-ssm-agent.deb"
CLOUDWATCH_URL = "https://amazoncloudwatch-agent-us-east-1.s3.us-east-1.amazonaws.com/debian/amd64/latest/amazon-cloudwatch-agent.deb"


def test_the_stand_in_serves_at_the_urls_the_hosts_use():
    assert aws_downloads.downloads(REGION, ARCH) == {
        SSM_URL: "amazon-ssm-agent",
        CLOUDWATCH_URL: "amazon-cloudwatch-agent",
    }


def test_the_bucket_names_resolve_to_the_stand_in_only():
    entry = aws_downloads.hosts_entry("10.77.0.2", REGION, ARCH)
    address, *names = entry.split("#")[0].split()
    assert entry.endswith("\n") and address == "10.77.0.2"
    assert names == ["amazoncloudwatch-agent-us-east-1.s3.us-east-1.amazonaws.com", "s3.us-east-1.amazonaws.com"]


@pytest.fixture(scope="module")
def bucket(tmp_path_factory):
    require_tool("dpkg-deb")
    directory = tmp_path_factory.mktemp("aws-downloads")
    aws_downloads.prepare(directory, REGION, ARCH)
    server = aws_downloads.make_server("127.0.0.1", 0, directory)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield directory, server.server_address[1]
    server.shutdown()


def test_the_packages_are_debian_packages_with_the_agents_files(bucket):
    directory, _ = bucket
    ssm = aws_downloads.served_path(directory, SSM_URL)
    cloudwatch = aws_downloads.served_path(directory, CLOUDWATCH_URL)
    for deb, package in ((ssm, "amazon-ssm-agent"), (cloudwatch, "amazon-cloudwatch-agent")):
        fields = subprocess.run(
            ["dpkg-deb", "-f", str(deb), "Package", "Architecture"], capture_output=True, text=True, check=True
        ).stdout
        assert fields == f"Package: {package}\nArchitecture: {ARCH}\n"
    contents = subprocess.run(["dpkg-deb", "-c", str(ssm)], capture_output=True, text=True, check=True).stdout
    assert "-rwxr-xr-x root/root" in contents and "./usr/bin/amazon-ssm-agent" in contents
    assert "./lib/systemd/system/amazon-ssm-agent.service" in contents
    contents = subprocess.run(["dpkg-deb", "-c", str(cloudwatch)], capture_output=True, text=True, check=True).stdout
    assert "./opt/aws/amazon-cloudwatch-agent/bin/amazon-cloudwatch-agent-ctl" in contents


def fetch(directory, port: int, url: str, name: str | None = None) -> subprocess.CompletedProcess:
    """curl `url` from the stand-in on loopback, verifying its certificate with the lab CA."""
    host = name or url.split("/")[2]
    return subprocess.run(
        [
            "curl",
            "-sS",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code} %{size_download}",
            "--max-time",
            "10",
            "--cacert",
            str(directory / "ca.pem"),
            "--resolve",
            f"{host}:{port}:127.0.0.1",
            url.replace(f"{host}/", f"{host}:{port}/"),
        ],
        capture_output=True,
        text=True,
    )


def test_https_at_exactly_the_download_paths_and_every_request_logged(bucket):
    require_tool("curl")
    directory, port = bucket
    for url in (SSM_URL, CLOUDWATCH_URL):
        result = fetch(directory, port, url)
        size = aws_downloads.served_path(directory, url).stat().st_size
        assert result.stdout == f"200 {size}", result.stderr
    # another bucket's path, or the right path on the other name: not there
    wrong_host = SSM_URL.replace(
        "https://s3.us-east-1.amazonaws.com", "https://amazoncloudwatch-agent-us-east-1.s3.us-east-1.amazonaws.com"
    )
    assert fetch(directory, port, wrong_host).stdout.startswith("404")
    assert fetch(directory, port, SSM_URL.replace("latest", "../latest")).stdout.startswith("404")
    log = (directory / "access.log").read_text().splitlines()
    assert log[:3] == [
        f"127.0.0.1 GET {SSM_URL} 200",
        f"127.0.0.1 GET {CLOUDWATCH_URL} 200",
        f"127.0.0.1 GET {wrong_host} 404",
    ]
