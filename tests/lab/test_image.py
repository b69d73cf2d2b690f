"""lab/image.py's cache without building: which images a build leaves, and one build at a time."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from lab import image


def made(path, packages=None) -> None:
    path.mkdir(parents=True)
    (path / image.COMPLETE).write_text(json.dumps({"packages": packages or []}))


def test_a_build_keeps_every_lab_variants_layer_and_frees_an_older_recipes(tmp_path, monkeypatch):
    monkeypatch.setattr(image, "CACHE", tmp_path)
    monkeypatch.setattr(image, "_mounted_lowers", lambda: {tmp_path / "layer-in-use"})
    made(image.base_path())
    variants = [["haproxy"], ["haproxy", "keepalived"], ["nginx"]]
    for packages in variants:  # a pair's load balancers, one load balancer's, the web servers'
        made(image.layer_path(packages), packages)
    made(tmp_path / "debian12-base-0123456789ab")  # an older recipe's base
    made(tmp_path / "layer-0123456789ab", ["haproxy"])  # a layer over another base
    made(tmp_path / "layer-in-use", ["haproxy"])  # a running host's, whatever its base
    image._prune(keep={image.base_path(), image.layer_path(["nginx"])})  # a build that asked for one
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        [image.base_path().name, "layer-in-use", *(image.layer_path(v).name for v in variants)]
    )
    for number in range(image.KEPT_LAYERS + 2):  # package lists that changed: at most KEPT_LAYERS stay
        made(image.layer_path([f"package-{number}"]), [f"package-{number}"])
        os.utime(image.layer_path([f"package-{number}"]) / image.COMPLETE, (number, number))
    image._prune(keep=set())
    layers = [p for p in tmp_path.glob("layer-*") if p.name != "layer-in-use"]
    assert len(layers) == image.KEPT_LAYERS and image.layer_path(["package-0"]) not in layers


def test_one_build_at_a_time_and_down_leaves_a_running_builds_mounts(tmp_path, monkeypatch):
    monkeypatch.setattr(image, "CACHE", tmp_path)
    assert not image.building()
    hold = (
        "import fcntl, sys, time; f = open(sys.argv[1], 'w'); fcntl.flock(f, fcntl.LOCK_EX); "
        "print('held', flush=True); time.sleep(30)"
    )
    holder = subprocess.Popen(  # another process building: it holds the lock
        [sys.executable, "-c", hold, str(tmp_path / ".lock")], stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "held\n"
        assert image.building()
    finally:
        holder.kill()
        holder.wait()
    assert not image.building()
