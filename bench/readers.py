"""Input readers benchmark: rows/s of planning and of reading every format, side by side with
pyarrow's own C readers turning the same file into Python values (the ceiling for a reader that
must hand Python records to Beam).

Prints a table and ends with one JSON line. Local files only; no network.
"""

from __future__ import annotations

import csv
import gzip
import io
import json
import os
import sys
import tarfile
import tempfile
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.json as pajson
import pyarrow.parquet as pq

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipeline.io.readers import ReaderConfig, plan_shards, read_shard  # noqa: E402
from schemas import Record, make_uid  # noqa: E402

ROWS = int(os.environ.get("VECAP_BENCH_READER_ROWS", "200000"))
SHARD = 10_000


def _rows(n: int) -> list[dict]:
    # web-like sizes: ~60-char URLs, ~70-char alt-texts with quotes and commas
    return [
        {
            "url": f"https://images.example-cdn.com/photos/2024/{i % 97:02d}/{i:09d}-large.jpg",
            "caption": f'A "scenic" view, number {i}, of the old harbour at dusk with boats {i % 13}',
            "lang": "en",
        }
        for i in range(n)
    ]


def _write(directory: Path, rows: list[dict]) -> dict[str, Path]:
    files: dict[str, Path] = {}
    table = pa.Table.from_pylist(rows)
    files["parquet"] = directory / "in.parquet"
    pq.write_table(table, files["parquet"], row_group_size=50_000)
    jsonl = "".join(json.dumps(r) + "\n" for r in rows).encode()
    files["jsonl"] = directory / "in.jsonl"
    files["jsonl"].write_bytes(jsonl)
    files["jsonl.gz"] = directory / "in.jsonl.gz"
    files["jsonl.gz"].write_bytes(gzip.compress(jsonl, compresslevel=1))
    files["json"] = directory / "in.json"
    files["json"].write_text(json.dumps(rows))
    text = io.StringIO()
    writer = csv.writer(text)
    writer.writerow(["url", "caption", "lang"])
    writer.writerows([r["url"], r["caption"], r["lang"]] for r in rows)
    files["csv"] = directory / "in.csv"
    files["csv"].write_text(text.getvalue())
    files["csv.gz"] = directory / "in.csv.gz"
    files["csv.gz"].write_bytes(gzip.compress(text.getvalue().encode(), compresslevel=1))
    tsv = "url\tcaption\tlang\n" + "".join(
        f"{r['url']}\t{r['caption']}\t{r['lang']}\n" for r in rows
    )
    files["tsv"] = directory / "in.tsv"
    files["tsv"].write_text(tsv)
    return files


IMAGE_ROWS = max(ROWS // 20, 100)


def _write_images(directory: Path, n: int) -> dict[str, Path]:
    """img2dataset-shaped inputs: its parquet (bytes column) and a webdataset tar."""
    from PIL import Image

    buf = io.BytesIO()
    Image.frombytes("RGB", (64, 48), bytes(range(256)) * 36).save(buf, format="JPEG")
    jpg = buf.getvalue()
    rows = [
        {"url": f"https://e.com/{i}.jpg", "caption": f"alt {i}", "key": f"{i:09d}",
         "status": "success", "error_message": None, "width": 64, "height": 48, "jpg": jpg}
        for i in range(n)
    ]  # fmt: skip
    files = {"img2dataset": directory / "00000.parquet", "webdataset": directory / "00000.tar"}
    pq.write_table(pa.Table.from_pylist(rows), files["img2dataset"], row_group_size=100)
    with tarfile.open(files["webdataset"], "w") as tar:
        for r in rows:
            meta = {k: v for k, v in r.items() if k != "jpg"}
            for ext, data in (
                ("jpg", jpg),
                ("txt", r["caption"].encode()),
                ("json", json.dumps(meta).encode()),
            ):
                info = tarfile.TarInfo(f"{r['key']}.{ext}")
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    return files


def _pyarrow_ceiling(kind: str, path: Path) -> float:
    """Seconds for pyarrow to read the file and hand url/caption out as Python lists."""
    t = time.perf_counter()
    if kind.startswith("parquet"):
        table = pq.read_table(path, columns=["url", "caption"])
    elif kind.startswith("csv"):
        table = pacsv.read_csv(path)
    elif kind == "tsv":
        table = pacsv.read_csv(path, parse_options=pacsv.ParseOptions(delimiter="\t"))
    elif kind.startswith("jsonl"):
        table = pajson.read_json(path)
    else:
        return float("nan")  # pyarrow has no reader for a JSON array or a tar
    urls, captions = table.column("url").to_pylist(), table.column("caption").to_pylist()
    assert len(urls) == len(captions)
    return time.perf_counter() - t


def _record_ceiling(n: int) -> float:
    """Rows/s of building the records alone (no parsing): what any reader must pay per row."""
    t = time.perf_counter()
    for i in range(n):
        Record(make_uid(i // SHARD, i % SHARD), i // SHARD, i % SHARD, "u", "c", '{"lang":"en"}')
    return n / (time.perf_counter() - t)


def _measure(kind: str, path: Path, rows: int) -> dict:
    extra = ("key",) if kind in ("img2dataset", "webdataset") else ("lang",)
    config = ReaderConfig(str(path), shard_size=SHARD, extra_columns=extra)
    records_only = _record_ceiling(rows)  # measured next to each format: the machine is noisy
    t = time.perf_counter()
    shards = plan_shards(config)
    plan_s = time.perf_counter() - t
    t = time.perf_counter()
    n = sum(1 for s in shards for _ in read_shard(s, config))
    read_s = time.perf_counter() - t
    assert n == rows, (kind, n)
    pyarrow_s = _pyarrow_ceiling(kind, path)
    read_rate = rows / read_s
    pyarrow_rate = None if pyarrow_s != pyarrow_s else rows / pyarrow_s
    return {
        "rows": rows,
        "plan_rows_per_s": round(rows / plan_s),
        "read_rows_per_s": round(read_rate),
        "pyarrow_rows_per_s": None if pyarrow_rate is None else round(pyarrow_rate),
        "ratio_to_pyarrow": None if pyarrow_rate is None else round(read_rate / pyarrow_rate, 3),
        "records_only_rows_per_s": round(records_only),
        "ratio_to_records_only": round(read_rate / records_only, 3),
    }


def main() -> None:
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        files = {kind: (path, ROWS) for kind, path in _write(Path(tmp), _rows(ROWS)).items()}
        images = _write_images(Path(tmp), IMAGE_ROWS)
        files.update({kind: (path, IMAGE_ROWS) for kind, path in images.items()})
        print(f"{ROWS} rows per table format, {IMAGE_ROWS} per image format, shards of {SHARD}")
        print(
            f"{'format':10} {'plan rows/s':>12} {'read rows/s':>12} {'pyarrow rows/s':>15} "
            f"{'ratio':>6} {'records-only rows/s':>20} {'ratio':>6}"
        )
        for kind, (path, rows) in files.items():
            r = results[kind] = _measure(kind, path, rows)
            pyarrow = f"{r['pyarrow_rows_per_s']:15,}" if r["pyarrow_rows_per_s"] else f"{'-':>15}"
            ratio = f"{r['ratio_to_pyarrow']:6.2f}" if r["ratio_to_pyarrow"] else f"{'-':>6}"
            print(
                f"{kind:10} {r['plan_rows_per_s']:12,} {r['read_rows_per_s']:12,} {pyarrow} {ratio} "
                f"{r['records_only_rows_per_s']:20,} {r['ratio_to_records_only']:6.2f}"
            )
    slowest = min(results, key=lambda k: results[k]["read_rows_per_s"])
    summary = {
        "rows": ROWS,
        "min_read_rows_per_s": results[slowest]["read_rows_per_s"],
        "slowest_format": slowest,
        "formats": results,
    }
    print(json.dumps(summary, separators=(",", ":")))


if __name__ == "__main__":
    main()
