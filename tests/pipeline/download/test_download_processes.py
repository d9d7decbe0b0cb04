"""A download-only job as a newcomer runs it: the local runner's default worker processes.

Such a job (>= AUTO_PROCESSES_MIN_ROWS rows, two or more shards, two or more cores) runs one
SDK worker process per core; every row must still come out once, in its shard, with the status
its URL deserves.
"""

from __future__ import annotations

import io

import pytest

from pipeline.config import build_pipeline_config
from pipeline.run import run_pipeline
from pipeline.runner_options import AUTO_PROCESSES_MIN_ROWS, available_cores
from schemas import Status, make_uid
from tests.pipeline.test_run import rows_of

ROUTES = [
    ("photo.jpg", Status.OK),
    ("photo.png", Status.OK),
    ("rotated.jpg", Status.OK),
    ("_fault/redirect/cmyk.jpg", Status.OK),
    ("_fault/status/404", Status.HTTP_ERROR),
    ("_fault/truncated/photo.jpg", Status.CONNECTION_ERROR),
    ("_fault/corrupt", Status.DECODE_ERROR),
    ("_fault/html", Status.NOT_AN_IMAGE),
    ("tiny.png", Status.TOO_SMALL),
    ("_fault/loop", Status.TOO_MANY_REDIRECTS),
    ("_fault/robots/photo.jpg?value=vecapbot:+noai", Status.OPTED_OUT),
]


@pytest.mark.slow
def test_download_only_job_in_worker_processes_keeps_every_row_and_status(
    tmp_path, http_server, capfd
):
    rows = AUTO_PROCESSES_MIN_ROWS + 100
    expected: dict[str, Status] = {}
    lines = ["url,caption"]
    for i in range(rows):
        route, status = ROUTES[i % len(ROUTES)]
        sep = "&" if "?" in route else "?"
        url = http_server.url(f"{route}{sep}row={i}")  # every row its own URL
        expected[url] = status
        lines.append(f"{url},caption {i}")
    table = tmp_path / "urls.csv"
    table.write_text("\n".join(lines) + "\n")
    config = build_pipeline_config(
        {
            "input": str(table),
            "output": str(tmp_path / "out"),
            "stages": ["download"],
            "progress": False,
            "reader": {"shard_size": 400},  # 3 shards
            "download": {
                "allow_private_networks": True,
                "threads": 8,
                "retries": 0,
                "read_timeout": 2.0,
                "total_timeout": 5.0,
            },
        }
    )
    stream = io.StringIO()
    result = run_pipeline(config, stream=stream)
    assert result.status == "succeeded"
    if available_cores() >= 2:
        assert "--direct_running_mode=multi_processing --direct_num_workers=2" in stream.getvalue()
        # the worker processes write to this terminal (fd 2): no start-up chatter there
        terminal = capfd.readouterr().err
        assert "INFO:" not in terminal and "semi_persistent_directory" not in terminal, terminal
    out = rows_of(str(tmp_path / "out"))
    assert len(out) == rows == len({r["uid"] for r in out})
    assert len(result.written) == 3
    by_url = {r["url"]: r for r in out}
    assert by_url.keys() == expected.keys()
    for url, status in expected.items():
        row = by_url[url]
        assert row["status"] == status, f"{url}: {row['status']} ({row['error']})"
        if status == Status.OK:
            assert row["jpg"] and row["width"] and row["sha256"] and row["error"] is None
        else:
            assert row["error"] and row["jpg"] is None
    for r in out:  # each row in the shard it was read into, at its input position
        assert r["uid"] == make_uid(r["shard_id"], r["row_index"])
        assert r["shard_id"] * 400 + r["row_index"] == int(by_url[r["url"]]["alt_text"].split()[1])
