"""A clone with no CIFAR-10 at hand: the pipeline tests are skipped, and the summary says why."""
from __future__ import annotations

import os
import subprocess
import sys

from conftest import copy_checkout


def test_without_any_cifar_source_the_pipeline_tests_skip_naming_what_is_missing(tmp_path):
    clone = copy_checkout(tmp_path / "clone")          # no ../shared beside it
    env = {k: v for k, v in os.environ.items() if k != "ADVHYBRID_CIFAR_SOURCE"}
    env |= {"ADVHYBRID_TEST_DOWNLOAD": "0", "ADVHYBRID_TEST_CACHE": str(tmp_path / "cache")}
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "no:xdist",
                           "tests/test_pipeline_smoke.py"], cwd=clone, env=env, capture_output=True, text=True,
                          timeout=300)
    out = proc.stdout
    assert proc.returncode == 0, out + proc.stderr
    assert "passed" not in out.splitlines()[-1] and "skipped" in out.splitlines()[-1], out
    assert "SKIPPED" in out and "no CIFAR-10 source: $ADVHYBRID_CIFAR_SOURCE is unset" in out, out
    assert str(tmp_path / "shared" / "data" / "cifar10-jpeg.tar.gz") in out, out
