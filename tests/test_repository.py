"""The repository holds source, not build artefacts: packages come from registries at install time."""
import pathlib
import subprocess

REPO = pathlib.Path(__file__).resolve().parents[1]
LARGEST_TRACKED_BYTES = 500 * 1024


def git(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["git", "-C", str(REPO), *args], capture_output=True, text=True, timeout=60)


def test_no_package_is_tracked_and_packages_are_ignored():
    tracked = git("ls-files", "*.deb", "*.rpm", "*.whl", "*.tar.gz").stdout.split()
    assert tracked == [], f"packages committed by mistake: {tracked}"
    assert git("check-ignore", "-q", "--no-index", "haproxy-doc_2.6.12-1+deb12u4_all.deb").returncode == 0, \
        ".gitignore must ignore *.deb"


def test_no_tracked_file_is_large():
    listed = git("ls-files", "-z").stdout.split("\0")
    large = [(name, (REPO / name).stat().st_size) for name in listed
             if name and (REPO / name).is_file() and (REPO / name).stat().st_size > LARGEST_TRACKED_BYTES]
    assert large == [], f"files over {LARGEST_TRACKED_BYTES // 1024} KB are tracked: {large}"
