"""AWS's download buckets for its agents, stood in: the hosts install the agents as on EC2.

The hosts' user-data downloads the Session Manager and CloudWatch agents from AWS's regional
buckets (provisioning.render.AWS_AGENT_URLS) and installs them with apt. In the lab, those bucket
names resolve (each host's /etc/hosts, rendered by cloud-init from its template) to the AWS API
stand-in's address, where this HTTPS server answers at exactly those paths with stand-in packages
built here with dpkg-deb:

- amazon-ssm-agent: a systemd unit that starts and stays up, talking to nothing;
- amazon-cloudwatch-agent: amazon-cloudwatch-agent-ctl, which records how it was called
  (CTL_CALLS) and exits 0.

The listener's certificate comes from a throwaway CA the hosts trust (AWS's public CA is already
trusted on EC2). Each request is logged as `client method url status` (ACCESS_LOG), so the lab
tests see which host downloaded what.

    python -m lab.aws_downloads serve ADDRESS PORT DIRECTORY    (the server; `lab up` starts it)
"""

from __future__ import annotations

import argparse
import http.server
import pathlib
import ssl
import subprocess
import sys
import threading
import time
import urllib.parse

from provisioning.render import AWS_AGENT_URLS

PORT = 443
CTL_CALLS = "/opt/aws/amazon-cloudwatch-agent/logs/webinfra-lab-ctl-calls.log"
VERSION = "0.0.0~webinfra.lab"

# What each stand-in package installs: path → (mode, content).
PACKAGE_FILES: dict[str, dict[str, tuple[int, str]]] = {
    "amazon-ssm-agent": {
        "/usr/bin/amazon-ssm-agent": (
            0o755,
            "#!/bin/sh\n"
            "# webinfra lab stand-in for AWS's Session Manager agent: stays up, talks to nothing.\n"
            "exec sleep infinity\n",
        ),
        "/lib/systemd/system/amazon-ssm-agent.service": (
            0o644,
            """\
[Unit]
Description=amazon-ssm-agent (webinfra lab stand-in: talks to nothing)
After=network-online.target

[Service]
ExecStart=/usr/bin/amazon-ssm-agent
Restart=always

[Install]
WantedBy=multi-user.target
""",
        ),
    },
    "amazon-cloudwatch-agent": {
        "/opt/aws/amazon-cloudwatch-agent/bin/amazon-cloudwatch-agent-ctl": (
            0o755,
            f"""\
#!/bin/sh
# webinfra lab stand-in for AWS's CloudWatch agent control script: records how it was called.
mkdir -p "$(dirname {CTL_CALLS})"
echo "$*" >> {CTL_CALLS}
""",
        ),
    },
}


def native_arch() -> str:
    """The lab images' architecture: debootstrap builds them for this machine's."""
    return subprocess.run(["dpkg", "--print-architecture"], check=True, capture_output=True, text=True).stdout.strip()


def downloads(region: str, arch: str) -> dict[str, str]:
    """url → package, exactly where the hosts look (the program's URLs, filled in as the hosts do)."""
    return {
        template.replace("{region}", region).replace("{arch}", arch): package
        for package, template in AWS_AGENT_URLS.items()
    }


def server_names(region: str, arch: str) -> list[str]:
    return sorted({urllib.parse.urlsplit(url).hostname or "" for url in downloads(region, arch)})


def hosts_entry(address: str, region: str, arch: str) -> str:
    """The line that sends the buckets' names to the stand-in, and nowhere else."""
    return f"{address} {' '.join(server_names(region, arch))}  # webinfra lab: AWS's agent buckets, stood in\n"


def control(package: str, arch: str) -> str:
    return (
        f"Package: {package}\nVersion: {VERSION}\nArchitecture: {arch}\nMaintainer: webinfra lab <lab@webinfra.test>\n"
        f"Description: webinfra lab stand-in for AWS's {package}\n"
        " Installed from the lab's stand-in of AWS's bucket; talks to nothing.\n"
    )


def served_path(directory: pathlib.Path, url: str) -> pathlib.Path:
    """Where the server keeps the file for `url`: DIRECTORY/files/<host><path>."""
    parts = urllib.parse.urlsplit(url)
    return directory / "files" / f"{parts.hostname}{parts.path}"


# --- building the packages (dpkg-deb, as root or not) ------------------------------------------------


def build_package(package: str, arch: str, out: pathlib.Path, work: pathlib.Path) -> None:
    root = work / package
    (root / "DEBIAN").mkdir(parents=True, mode=0o755)
    (root / "DEBIAN/control").write_text(control(package, arch))
    for path, (mode, content) in PACKAGE_FILES[package].items():
        target = root / path.lstrip("/")
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(content)
        target.chmod(mode)
    for directory in [root, *(p for p in root.rglob("*") if p.is_dir())]:
        directory.chmod(0o755)  # dpkg-deb wants 0755 on DEBIAN; the rest as the real packages have it
    out.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        ["dpkg-deb", "--root-owner-group", "-Zgzip", "--build", str(root), str(out)], check=True, capture_output=True
    )


def build(directory: pathlib.Path, region: str, arch: str) -> dict[str, pathlib.Path]:
    """Every stand-in package at its served path; returns url → file."""
    built = {}
    for url, package in downloads(region, arch).items():
        built[url] = served_path(directory, url)
        build_package(package, arch, built[url], directory / "build")
    return built


# --- the server -------------------------------------------------------------------------------------------


class _Handler(http.server.BaseHTTPRequestHandler):
    server_version = "webinfra-lab-aws-downloads"
    directory: pathlib.Path
    access_log: pathlib.Path
    _log_lock = threading.Lock()

    def _url(self) -> str:
        host = (self.headers.get("Host") or "").split(":")[0]
        return f"https://{host}{urllib.parse.urlsplit(self.path).path}"

    def _file(self) -> pathlib.Path | None:
        files = (self.directory / "files").resolve()
        candidate = served_path(self.directory, self._url()).resolve()
        return candidate if candidate.is_relative_to(files) and candidate.is_file() else None

    def _answer(self, body: bool) -> None:
        found = self._file()
        if found is None:
            self.send_error(404)
            return
        data = found.read_bytes()
        self.send_response(200)
        self.send_header("Content-Type", "application/vnd.debian.binary-package")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if body:
            self.wfile.write(data)

    def do_GET(self) -> None:  # http.server's names
        self._answer(body=True)

    def do_HEAD(self) -> None:
        self._answer(body=False)

    def log_request(self, code="-", size="-") -> None:
        line = f"{self.client_address[0]} {self.command} {self._url()} {int(code) if str(code).isdigit() else code}\n"
        with self._log_lock, open(self.access_log, "a") as log:
            log.write(line)

    def log_message(self, format, *args) -> None:
        pass  # errors are in the access log's status


def make_server(address: str, port: int, directory: pathlib.Path) -> http.server.ThreadingHTTPServer:
    handler = type("Handler", (_Handler,), {"directory": directory, "access_log": directory / "access.log"})
    server = http.server.ThreadingHTTPServer((address, port), handler)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(directory / "listener-cert.pem", directory / "listener-key.pem")
    server.socket = context.wrap_socket(server.socket, server_side=True)
    return server


def prepare(directory: pathlib.Path, region: str, arch: str) -> str:
    """Packages and the listener's certificate in DIRECTORY; returns the CA the hosts must trust."""
    from lab.mock_tls import lab_listener  # cryptography: only where a certificate is made

    directory.mkdir(parents=True, exist_ok=True)
    build(directory, region, arch)
    ca, cert, key = lab_listener("webinfra lab AWS agent buckets", dns_names=tuple(server_names(region, arch)))
    (directory / "listener-cert.pem").write_text(cert)
    (directory / "listener-key.pem").write_text(key)
    (directory / "listener-key.pem").chmod(0o600)
    (directory / "ca.pem").write_text(ca)
    return ca


def start(directory: pathlib.Path, netns: str, address: str, region: str, arch: str, repo: pathlib.Path) -> str:
    """Prepare and start the server in the lab namespace `netns`; returns the CA the hosts must trust."""
    ca = prepare(directory, region, arch)
    log = open(directory / "server.log", "ab")  # noqa: SIM115 - the server started below writes to it after we return
    subprocess.Popen(
        [
            "ip",
            "netns",
            "exec",
            netns,
            sys.executable,
            "-m",
            "lab.aws_downloads",
            "serve",
            address,
            str(PORT),
            str(directory),
        ],
        stdin=subprocess.DEVNULL,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
        cwd=repo,
    )
    url = next(iter(downloads(region, arch)))
    host = urllib.parse.urlsplit(url).hostname
    deadline = time.monotonic() + 20
    probe = [
        "ip",
        "netns",
        "exec",
        netns,
        "curl",
        "-fsS",
        "-o",
        "/dev/null",
        "-I",
        "--max-time",
        "2",
        "--cacert",
        str(directory / "ca.pem"),
        "--resolve",
        f"{host}:{PORT}:{address}",
        url,
    ]
    while subprocess.run(probe, capture_output=True).returncode != 0:
        if time.monotonic() > deadline:
            raise RuntimeError(f"the AWS download stand-in did not start; see {directory / 'server.log'}")
        time.sleep(0.2)
    (directory / "access.log").unlink(missing_ok=True)  # the probe is not a host's download
    return ca


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m lab.aws_downloads")
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve")
    serve.add_argument("address")
    serve.add_argument("port", type=int)
    serve.add_argument("directory", type=pathlib.Path)
    args = parser.parse_args(argv)
    make_server(args.address, args.port, args.directory).serve_forever()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
