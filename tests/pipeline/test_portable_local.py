"""The pieces of a portable run that need no job server: the Flink job server's command line and
configuration (loopback only), the launcher's Beam options, where the job servers are looked up,
and the fetch script's cached / fetched / not-served paths (with a stand-in `mvn`)."""

from __future__ import annotations

import ipaddress
import os
import re
import stat
import subprocess
from pathlib import Path

import pytest

from pipeline import portable_local as pl

REPO = Path(__file__).resolve().parents[2]
FETCH = REPO / "scripts" / "fetch_flink_job_server.sh"


def test_flink_job_server_argv_is_an_embedded_cluster_on_loopback_only(tmp_path):
    argv = pl.flink_job_server_argv(
        tmp_path / "js.jar", tmp_path, java="java", port=1001, artifact_port=1002,
        expansion_port=1003, parallelism=2,
    )  # fmt: skip
    args = dict(a.split("=", 1) for a in argv if a.startswith("--") and "=" in a)
    assert args["--flink-master"] == "[local]"
    assert args["--job-host"] == "127.0.0.1"
    assert (args["--job-port"], args["--artifact-port"], args["--expansion-port"]) == (
        "1001", "1002", "1003",
    )  # fmt: skip
    assert argv[argv.index("-jar") + 1] == str(tmp_path / "js.jar")
    conf_dir = Path(args["--flink-conf-dir"])
    for name in ("flink-conf.yaml", "config.yaml"):
        conf = dict(
            line.split(": ", 1) for line in (conf_dir / name).read_text().splitlines() if line
        )
        assert conf["parallelism.default"] == "2" and conf["taskmanager.numberOfTaskSlots"] == "2"
        hosts = {k: v for k, v in conf.items() if k.endswith(("address", "host"))}
        assert len(hosts) >= 5
        assert all(ipaddress.ip_address(v).is_loopback for v in hosts.values()), hosts
        # every fixed port is 0 (any free one): nothing listens on a guessed port
        assert all(v == "0" for k, v in conf.items() if k.endswith("port"))


def test_both_job_servers_get_the_flink_launchers_command_line(tmp_path):
    from pipeline.cli.run import _check_beam_args

    proc = subprocess.Popen(["sleep", "0"])
    proc.wait()
    js = pl.Service("js", proc, 4001, tmp_path / "log")
    pool = pl.Service("pool", proc, 4002, tmp_path / "log")
    flink = pl.runner_args("flink", js, pool, parallelism=2)
    assert flink == pl.runner_args("prism", js, pool, parallelism=2)
    assert flink == [
        "--runner=FlinkRunner",
        f"--flink_version={pl.flink_version()}",
        "--parallelism=2",
        "--sdk_worker_parallelism=2",
        "--job_endpoint=127.0.0.1:4001",
        "--environment_type=EXTERNAL",
        "--environment_config=127.0.0.1:4002",
    ]
    _check_beam_args(flink)  # vecap run passes them to Beam: every one is a known option
    with pytest.raises(ValueError):
        pl.runner_args("spark", js, pool)


def test_a_missing_jar_says_why(tmp_path, monkeypatch):
    monkeypatch.setattr(pl, "CACHE_ROOT", tmp_path)
    monkeypatch.delenv("VECAP_FLINK_JOB_SERVER_JAR", raising=False)
    jar = pl.flink_jar_path("1.20", "2.77.0")
    assert jar == tmp_path / "flink" / "beam-runners-flink-1.20-job-server-2.77.0.jar"
    monkeypatch.setenv("VECAP_FLINK_VERSION", "1.20")
    with pytest.raises(pl.PortableUnavailable, match="not fetched yet"):
        pl.find_flink_jar()
    jar.parent.mkdir(parents=True)
    Path(f"{jar}.unavailable").write_text("mvn could not fetch it: Could not find artifact X\n")
    with pytest.raises(pl.PortableUnavailable, match="Could not find artifact X"):
        pl.find_flink_jar()
    jar.write_bytes(b"PK")
    assert pl.find_flink_jar() == jar
    monkeypatch.setenv("VECAP_FLINK_JOB_SERVER_JAR", str(tmp_path / "elsewhere.jar"))
    with pytest.raises(pl.PortableUnavailable, match="elsewhere.jar"):
        pl.find_flink_jar()


def _fake_mvn(bin_dir: Path, script: str) -> None:
    bin_dir.mkdir(parents=True, exist_ok=True)
    mvn = bin_dir / "mvn"
    mvn.write_text("#!/usr/bin/env bash\n" + script)
    mvn.chmod(mvn.stat().st_mode | stat.S_IEXEC)
    (bin_dir / "calls").write_text("")


def _fetch(tmp_path: Path, bin_dir: Path, **env: str) -> subprocess.CompletedProcess:
    full = {
        **os.environ,
        "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
        "VECAP_CACHE_DIR": str(tmp_path / "cache"),
        "BEAM_VERSION": "2.77.0",
        "VECAP_FLINK_VERSION": "1.20",
        **env,
    }
    return subprocess.run(["bash", str(FETCH)], env=full, capture_output=True, text=True)


def test_fetch_script_copies_the_jar_once_then_uses_the_cache(tmp_path):
    bin_dir = tmp_path / "bin"
    # stands in for `mvn dependency:copy`: records its arguments, writes the jar where told
    _fake_mvn(
        bin_dir,
        f'echo "$@" >> {bin_dir}/calls\n'
        'for a in "$@"; do case $a in -DoutputDirectory=*) out=${a#*=};; esac; done\n'
        'echo jar > "$out/beam-runners-flink-1.20-job-server-2.77.0.jar"\n',
    )
    first = _fetch(tmp_path, bin_dir)
    assert first.returncode == 0 and "(fetched)" in first.stdout, first.stderr
    calls = (bin_dir / "calls").read_text()
    assert "-Dartifact=org.apache.beam:beam-runners-flink-1.20-job-server:2.77.0:jar" in calls
    assert re.search(r"maven-dependency-plugin:[\d.]+:copy", calls)
    again = _fetch(tmp_path, bin_dir)
    assert again.returncode == 0 and "(cached)" in again.stdout
    assert (bin_dir / "calls").read_text() == calls  # no second mvn call


def test_fetch_script_records_why_when_the_registry_does_not_serve_the_jar(tmp_path):
    bin_dir = tmp_path / "bin"
    _fake_mvn(
        bin_dir,
        'echo "[ERROR] Failed to execute goal ...: Could not find artifact '
        'org.apache.beam:beam-runners-flink-1.20-job-server:jar:2.77.0 in central"\nexit 1\n',
    )
    done = _fetch(tmp_path, bin_dir)
    assert done.returncode == 0  # make test goes on; the Flink case skips with the reason
    why = tmp_path / "cache" / "flink" / "beam-runners-flink-1.20-job-server-2.77.0.jar.unavailable"
    assert "Could not find artifact org.apache.beam:beam-runners-flink-1.20" in why.read_text()
    assert "Flink test will skip" in done.stderr
    strict = _fetch(tmp_path, bin_dir, VECAP_REQUIRE_FLINK="1")
    assert strict.returncode == 1
