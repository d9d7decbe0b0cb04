"""The Python API: ``import vecap`` is light, names every public piece, and the README's
composition example runs as written."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_import_vecap_loads_neither_beam_nor_torch():
    code = (
        "import sys, vecap; print(sorted(m for m in ('apache_beam', 'torch') if m in sys.modules))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert done.returncode == 0 and done.stdout.strip() == "[]", done.stderr


def test_every_public_name_resolves():
    import apache_beam as beam

    import vecap

    for name in vecap.__all__:
        assert getattr(vecap, name) is not None, name
    for stage in ("ReadInput", "DownloadStage", "CaptionStage", "EthicsCheckStage", "FusionStage",
                  "WriteShards"):  # fmt: skip
        assert issubclass(getattr(vecap, stage), beam.PTransform)
    with pytest.raises(AttributeError):
        vecap.NoSuchThing  # noqa: B018


def _readme_example() -> str:
    text = (ROOT / "README.md").read_text()
    block = re.search(
        r"<!-- api-example -->\n```python\n(.*?)```\n<!-- /api-example -->", text, re.S
    )
    assert block, "the README's API example is missing its markers"
    return block.group(1)


def test_the_readme_example_captions_each_url_on_its_own_row(tiny_models, tmp_path):
    from pipeline.download.stage import DownloadConfig
    from pipeline.sample.server import SAMPLE_DIR, SampleServer

    names = sorted(p.name for p in SAMPLE_DIR.iterdir() if p.suffix == ".jpg")[:4]
    namespace: dict = {}
    exec(compile(_readme_example(), "README.md", "exec"), namespace)
    with SampleServer(root_dir=SAMPLE_DIR) as server:
        pairs = [(f"{server.base_url}/{n}", f"photo {n}") for n in names]
        pairs.append((f"{server.base_url}/missing.jpg", "not there"))
        namespace["caption_urls"](
            pairs,
            str(tmp_path / "captions"),
            model=str(tiny_models.llava),
            download=DownloadConfig(allow_private_networks=True, retries=0, threads=4),
        )
    rows = [json.loads(line) for f in tmp_path.glob("captions*.jsonl") for line in f.open()]
    by_url = {r["url"]: r for r in rows}
    assert len(rows) == len(by_url) == len(pairs)  # one row out per row in
    for url, _alt in pairs[:-1]:
        assert by_url[url]["status"] == "ok" and by_url[url]["caption"]
    assert by_url[pairs[-1][0]]["status"] != "ok" and by_url[pairs[-1][0]]["caption"] is None
