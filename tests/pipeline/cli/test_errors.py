"""What a user sees when `vecap run` goes wrong, through the real `vecap` command (a child process).

Before the job starts (config, input planning, output checks, models): one line on stderr that
names the problem, exit status 2, no traceback, no resume hint. During the job: the traceback in
OUT/logs/<run-time>.log, one terminal line pointing at it, and the resume hint only when shards
were committed.
"""

from __future__ import annotations

import ctypes
import gzip
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]
_SCRIPT = Path(sys.executable).parent / "vecap"
# the console script when the package is installed (it runs this checkout: conftest puts the
# repository first on PYTHONPATH), else the module
VECAP = [str(_SCRIPT)] if _SCRIPT.exists() else [sys.executable, "-m", "pipeline.cli"]
HINT = "rerun the same command"


def _env(extra: dict | None) -> dict:
    # the offline switches change what a model check answers: each test sets them itself (an
    # earlier test of the session may have left them in os.environ)
    env = {
        k: v for k, v in os.environ.items() if k not in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")
    }
    return {**env, **(extra or {})}


def vecap(*args: str, cwd: Path, env: dict | None = None, preexec_fn=None, timeout: int = 300):
    return subprocess.run(
        [*VECAP, *args],
        cwd=cwd,
        env=_env(env),
        capture_output=True,
        text=True,
        timeout=timeout,
        preexec_fn=preexec_fn,
    )


def assert_one_line_error(proc: subprocess.CompletedProcess, *names: str) -> str:
    out = proc.stdout + proc.stderr
    assert proc.returncode == 2, out
    assert "Traceback" not in out, out
    assert HINT not in out, out
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, out
    assert lines[0].startswith("vecap run: "), out
    for name in names:
        assert name in lines[0], (name, out)
    return lines[0]


@pytest.fixture
def work(tmp_path: Path) -> Path:
    (tmp_path / "in.csv").write_text(
        "url,caption\n" + "".join(f"http://127.0.0.1:1/{i}.jpg,cap {i}\n" for i in range(4))
    )
    (tmp_path / "afile").write_text("not a directory\n")
    return tmp_path


# a download that fails fast and stays on loopback: port 1 refuses the connection
DOWNLOAD = ["--stages", "download", "--allow-private-networks", "--set", "download.retries=0"]


@pytest.mark.parametrize(
    ("args", "names"),
    [
        pytest.param(["--input", "missing.csv"], ["'missing.csv'", "does not exist"], id="missing"),
        pytest.param(
            ["--input", "nothing-*.csv"], ["nothing-*.csv", "matches no files"], id="glob"
        ),
        pytest.param(
            ["--input", "in.csv", "--url-column", "link"],
            ["'link' not found", "'url'", "'caption'", "--url-column"],
            id="wrong-column",
        ),
        pytest.param(
            ["--input", "broken.parquet"],
            ["broken.parquet", "cannot plan it as parquet"],
            id="corrupt-input",
        ),
        pytest.param(
            ["--input", "cut.csv.gz"], ["cut.csv.gz", "cannot plan it as csv"], id="cut-gzip"
        ),
        pytest.param(
            ["--input", "in.csv", "--output", "afile"], ["'afile'", "existing file"], id="out-file"
        ),
        pytest.param(
            # not a directory anyone can create or read, root included (ENOTDIR, not permissions)
            ["--input", "in.csv", "--output", "afile/out"],
            ["afile/out", "is a file, not a directory"],
            id="out-under-file",
        ),
        pytest.param(
            ["--input", "in.csv", "--stages", "download,paint"],
            ["'paint'", "stages are"],
            id="stage",
        ),
        pytest.param(
            ["--input", "in.csv", "--config", "cfg.yaml"],
            ["unknown config key", "'colour'"],
            id="key",
        ),
        pytest.param(
            ["--input", "in.csv", "--config", "missing.yaml"],
            ["missing.yaml", "does not exist"],
            id="config-file",
        ),
        pytest.param(
            ["--input", "in.csv", "--set", "download.threads=lots"],
            ["download.threads", "an integer", "'lots'"],
            id="set-type",
        ),
        pytest.param(
            ["--input", "in.csv", "--set", "download.threads=[1"],
            ["--set download.threads=[1", "not valid YAML"],
            id="set-yaml",
        ),
        pytest.param(["--input", "in.csv", "--set", "threads"], ["KEY=VALUE"], id="set-form"),
        pytest.param(
            ["--input", "in.csv", "--stages", "download,caption", "--caption-model", "/no/llava"],
            ["--caption-model", "'/no/llava'", "does not exist"],
            id="caption-model",
        ),
        pytest.param(
            ["--input", "in.csv", "--fusion-model", "./models/vicuna"],
            ["--fusion-model", "'./models/vicuna'", "does not exist"],
            id="fusion-model",
        ),
        pytest.param(
            ["--from", "afile", "--stages", "caption"],
            ["--from afile", "not a vecap output"],
            id="from",
        ),
        pytest.param(["--from", ".", "--stages", "caption"], ["not a vecap output"], id="from-dir"),
    ],
)
def test_error_before_the_job_is_one_line(work: Path, args: list[str], names: list[str]):
    (work / "cfg.yaml").write_text("output: out\ncolour: blue\n")
    (work / "broken.parquet").write_bytes(b"PAR1 not really a parquet file")
    table = "url,caption\n" + "".join(f"http://127.0.0.1:1/{i}.jpg,c{i}\n" for i in range(2000))
    packed = gzip.compress(table.encode())
    (work / "cut.csv.gz").write_bytes(packed[: len(packed) // 2])  # a download that broke off
    full = ["run", *args] if "--output" in args else ["run", *args, "--output", "out"]
    proc = vecap(*full, cwd=work)
    assert_one_line_error(proc, *names)
    assert not (work / "out").exists()  # nothing was written for a run that never started


def test_model_is_checked_before_any_row_is_read(work: Path):
    """The input lacks the url column too: the model is what gets reported, so the input was
    not even planned; and an offline hub id must be in the local hub cache."""
    cache = work / "empty-hub-cache"
    cache.mkdir()
    env = {"HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(cache), "HF_HOME": str(work / "hf")}
    proc = vecap(
        "run", "--input", "in.csv", "--url-column", "link", "--output", "out",
        "--stages", "download,caption", "--caption-model", "some-org/not-downloaded",
        cwd=work, env=env,
    )  # fmt: skip
    line = assert_one_line_error(proc, "--caption-model", "some-org/not-downloaded")
    assert "HF_HUB_OFFLINE" in line and "cache" in line
    # a directory without config.json is not a checkpoint either
    (work / "empty-model").mkdir()
    proc = vecap(
        "run", "--input", "in.csv", "--output", "out", "--stages", "download,caption",
        "--caption-model", "empty-model", cwd=work,
    )  # fmt: skip
    assert_one_line_error(proc, "'empty-model'", "config.json")
    # nor one whose config.json is cut off
    (work / "empty-model" / "config.json").write_text('{"model_type": "llava", "oops": ')
    proc = vecap(
        "run", "--input", "in.csv", "--output", "out", "--stages", "download,caption",
        "--caption-model", "empty-model", cwd=work,
    )  # fmt: skip
    assert_one_line_error(proc, "'empty-model'", "config.json cannot be read as JSON")


def _drop_dac_capabilities() -> None:
    """In the child: lose CAP_DAC_OVERRIDE and CAP_DAC_READ_SEARCH, so file permissions bind
    even for root (tests run as root, which chmod alone does not stop)."""
    libc = ctypes.CDLL(None, use_errno=True)
    for cap in (1, 2):  # CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH
        if libc.prctl(24, cap, 0, 0, 0) != 0:  # PR_CAPBSET_DROP
            raise OSError(ctypes.get_errno(), "prctl(PR_CAPBSET_DROP)")


def _as_unprivileged():
    """preexec_fn under which file permissions bind: None when not root; for root, one that
    drops the file capabilities in the child (skips the test where that is not possible)."""
    if os.geteuid() != 0:
        return None
    try:
        subprocess.run(["true"], preexec_fn=_drop_dac_capabilities, check=True)
    except (subprocess.SubprocessError, OSError) as e:
        pytest.skip(f"cannot drop root's file capabilities here: {e}")
    return _drop_dac_capabilities


@pytest.mark.parametrize(
    ("mode", "names"),
    [
        pytest.param(0o000, ["'locked'", "cannot be read", "permission denied"], id="unreadable"),
        pytest.param(0o555, ["not writable", "permission denied"], id="read-only"),
    ],
)
def test_output_directory_without_permissions(work: Path, mode: int, names: list[str]):
    locked = work / "locked"
    locked.mkdir()
    (locked / "manifest.json").write_text("{}")
    preexec = _as_unprivileged()
    locked.chmod(mode)
    try:
        proc = vecap("run", "--input", "in.csv", "--output", "locked", cwd=work, preexec_fn=preexec)
    finally:
        locked.chmod(0o755)
    assert_one_line_error(proc, *names)
    assert (locked / "manifest.json").read_text() == "{}"  # untouched


def test_resume_with_other_settings_is_one_line(work: Path):
    first = vecap("run", "--input", "in.csv", "--output", "out", "--shard-size", "2", *DOWNLOAD,
                  cwd=work)  # fmt: skip
    assert first.returncode == 0, first.stderr
    proc = vecap("run", "--input", "in.csv", "--output", "out", "--shard-size", "3", *DOWNLOAD,
                 cwd=work)  # fmt: skip
    assert_one_line_error(proc, "out holds shards from a run with a different", "--overwrite")


def test_library_noise_is_hidden_and_verbose_shows_it(work: Path):
    quiet = vecap("run", "--input", "in.csv", "--output", "q", *DOWNLOAD, "--no-progress", cwd=work)
    assert quiet.returncode == 0, quiet.stderr
    assert "apitools" not in quiet.stderr and "WARNING" not in quiet.stderr, quiet.stderr
    loud = vecap(
        "run", "--input", "in.csv", "--output", "v", *DOWNLOAD, "--no-progress", "-v", cwd=work
    )
    assert loud.returncode == 0, loud.stderr
    assert "apitools not found, and bigquery client libraries are not available" in loud.stderr


# ------------------------------------------------------------------------------ during the job


def _faulty_vecap(fail_shard: int, *args: str, cwd: Path):
    output = cwd / args[args.index("--output") + 1]
    return subprocess.run(
        [sys.executable, "-c", "from tests.pipeline.cli.faults import main; main()", *args],
        cwd=cwd,
        env=_env({"VECAP_TEST_FAIL_SHARD": str(fail_shard), "VECAP_TEST_OUTPUT": str(output)}),
        capture_output=True,
        text=True,
        timeout=300,
    )


def _failure_line(proc: subprocess.CompletedProcess, out: Path) -> Path:
    text = proc.stdout + proc.stderr
    assert proc.returncode == 1, text
    assert "Traceback" not in text, text
    failed = [line for line in proc.stderr.splitlines() if "FAILED" in line]
    assert len(failed) == 1, text
    assert "injected failure on a row of shard" in failed[0], text
    logs = sorted((out / "logs").glob("*.log"))
    assert len(logs) == 1, text
    assert f"details in {out.name}/logs/{logs[0].name}" in failed[0], text
    log = logs[0].read_text()
    assert "Traceback (most recent call last)" in log and "injected failure" in log
    assert "command: vecap run" in log
    return logs[0]


def test_job_failure_leaves_a_log_and_a_hint_only_when_shards_were_committed(work: Path):
    args = ["run", "--input", "in.csv", "--shard-size", "2", "--local-wave-shards", "1", *DOWNLOAD]
    # the first shard fails: nothing committed, so no resume hint
    none_done = _faulty_vecap(0, *args, "--output", "out0", cwd=work)
    _failure_line(none_done, work / "out0")
    assert HINT not in none_done.stderr, none_done.stderr
    assert not list((work / "out0" / "shards").glob("part-*.stats.json"))

    # the second shard fails after the first was committed: the hint, with the count
    half = _faulty_vecap(1, *args, "--output", "out1", cwd=work)
    _failure_line(half, work / "out1")
    assert f"1 of 2 shards are finished and kept; {HINT} to resume" in half.stderr, half.stderr
    # and the same command, now without the fault, does resume
    again = vecap(*args, "--output", "out1", cwd=work)
    assert again.returncode == 0, again.stderr
    assert "1 already finished, 1 to do" in again.stderr, again.stderr


def test_job_failure_in_worker_processes(work: Path):
    """The local runner's SDK worker processes print to the same terminal: a failing bundle's
    traceback stays off it there too (Beam prints and logs it in the worker)."""
    for i in range(4, 8):
        with (work / "in.csv").open("a") as f:
            f.write(f"http://127.0.0.1:1/{i}.jpg,cap {i}\n")
    args = ["run", "--input", "in.csv", "--shard-size", "2", "--local-wave-shards", "1", *DOWNLOAD]
    workers = ["--direct_running_mode=multi_processing", "--direct_num_workers=2"]
    proc = _faulty_vecap(1, *args, "--output", "out", *workers, cwd=work)
    _failure_line(proc, work / "out")
    assert "WARNING" not in proc.stderr and "ERROR" not in proc.stderr, proc.stderr
    assert HINT in proc.stderr  # the first wave (two shards, one per worker) committed


def test_job_failure_of_a_model_stage(work: Path):
    """A model directory that passes the pre-flight check (a valid config.json) but cannot be
    loaded (no processor, no weights) fails the job in a worker: one pointing line, the
    traceback in the log."""
    from pipeline.sample.server import SAMPLE_DIR, SampleServer

    model = work / "broken-model"
    model.mkdir()
    (model / "config.json").write_text('{"model_type": "llava"}')
    name = sorted(p.name for p in SAMPLE_DIR.glob("*.jpg"))[0]
    with SampleServer(root_dir=SAMPLE_DIR) as server:
        (work / "img.csv").write_text(f"url,caption\n{server.base_url}/{name},a photo\n")
        proc = vecap(
            "run", "--input", "img.csv", "--output", "out", "--stages", "download,caption",
            "--allow-private-networks", "--caption-model", str(model), "--device", "cpu",
            cwd=work,
        )  # fmt: skip
    text = proc.stdout + proc.stderr
    assert proc.returncode == 1, text
    assert "Traceback" not in text, text
    failed = [line for line in proc.stderr.splitlines() if "FAILED" in line]
    assert len(failed) == 1 and "broken-model" in failed[0] and "details in out/logs/" in failed[0]
    assert HINT not in text
    (log,) = (work / "out" / "logs").glob("*.log")
    assert "Traceback (most recent call last)" in log.read_text()


@pytest.mark.parametrize(
    ("flags", "env", "names"),
    [
        (["--backend", "vllm", "--gpus", "5"], {"CUDA_VISIBLE_DEVICES": "0,1"}, ["GPU 5", "0-1"]),
        (["--backend", "vllm", "--gpus", "0,x"], {}, ["'0,x'", "indices"]),
        (["--backend", "openai"], {}, ["base_url"]),
    ],
    ids=["gpu-missing", "gpu-spec", "openai-no-url"],
)
def test_engine_placement_errors_are_one_line(work, tiny_models, flags, env, names):
    proc = vecap(
        "run", "--input", "in.csv", "--output", "out", "--stages", "download,caption",
        "--caption-model", str(tiny_models.llava), *flags,
        cwd=work, env={"VECAP_ENGINE_SERVER_CMD": "false", **env},
    )  # fmt: skip
    assert_one_line_error(proc, *names)
    assert not (work / "out").exists()  # refused before the job touched the output
