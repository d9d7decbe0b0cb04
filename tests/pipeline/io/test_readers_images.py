"""img2dataset output as input: its parquet (image bytes column) and its webdataset tars."""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from pipeline.io.readers import FilePart, InputShard, ReaderConfig, plan_shards, read_shard
from schemas import Record, Status


def _image(
    width: int, height: int, fmt: str = "JPEG", color: tuple[int, int, int] = (200, 40, 90)
) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (width, height), color).save(buf, format=fmt)
    return buf.getvalue()


def read_all(config: ReaderConfig) -> list[Record]:
    return [r for shard in plan_shards(config) for r in read_shard(shard, config)]


# img2dataset's parquet schema (writer.py: input columns + key/status/... + the encode format)
_I2D_SCHEMA = pa.schema(
    [
        ("url", pa.string()),
        ("caption", pa.string()),
        ("key", pa.string()),
        ("status", pa.string()),
        ("error_message", pa.string()),
        ("width", pa.int32()),
        ("height", pa.int32()),
        ("original_width", pa.int32()),
        ("original_height", pa.int32()),
        ("exif", pa.string()),
        ("sha256", pa.string()),
        ("jpg", pa.binary()),
    ]
)


def _i2d_row(
    i: int, jpg: bytes | None, status: str = "success", error: str | None = None, **kw
) -> dict:
    row = {
        "url": f"https://example.com/{i}.jpg",
        "caption": f"alt text {i}",
        "key": f"{i:09d}",
        "status": status,
        "error_message": error,
        "width": 32 if jpg else None,
        "height": 24 if jpg else None,
        "original_width": 640 if jpg else None,
        "original_height": 480 if jpg else None,
        "exif": None,
        "sha256": hashlib.sha256(b"original %d" % i).hexdigest() if jpg else None,
        "jpg": jpg,
    }
    row.update(kw)
    return row


def test_img2dataset_parquet_rows_carry_their_images(tmp_path: Path) -> None:
    good = _image(32, 24)
    rows = [
        _i2d_row(0, good),
        _i2d_row(1, None, "failed_to_download", "HTTP Error 404: Not Found"),
        _i2d_row(2, None, "failed_to_download", "The read operation timed out"),
        _i2d_row(3, b"\xff\xd8\xff\xe0 not really a jpeg"),
        _i2d_row(4, _image(10, 30, "PNG"), sha256=None, original_width=None),
        _i2d_row(5, None, "failed_to_resize", "image file is truncated"),
        _i2d_row(6, None, "failed_to_download", "Connection reset by peer"),
        _i2d_row(7, good, url=None),
    ]
    path = tmp_path / "00000.parquet"
    pq.write_table(pa.Table.from_pylist(rows, schema=_I2D_SCHEMA), path, row_group_size=3)

    config = ReaderConfig(str(path), shard_size=3, extra_columns=("key",))  # auto-detected
    shards = plan_shards(config)
    assert {p.file_format for s in shards for p in s.parts} == {"img2dataset"}
    records = [r for s in shards for r in read_shard(s, config)]

    assert len(records) == 8
    assert [r.status for r in records] == [
        "ok", "http_error", "timeout", "decode_error", "ok", "decode_error", "connection_error", "ok",
    ]  # fmt: skip
    ok = records[0]
    assert ok.jpg == good and ok.image_format == "jpg"
    assert (ok.width, ok.height, ok.original_width, ok.original_height) == (32, 24, 640, 480)
    assert ok.sha256 == hashlib.sha256(b"original 0").hexdigest()  # img2dataset's, of the original
    assert ok.alt_text == "alt text 0" and json.loads(ok.extra) == {"key": "000000000"}
    assert records[1].http_status == 404 and "HTTP Error 404" in records[1].error
    assert records[1].jpg is None and records[1].url == "https://example.com/1.jpg"
    assert "cannot be decoded" in records[3].error and records[3].jpg is None
    png = records[4]
    assert (png.image_format, png.width, png.height, png.original_width) == ("png", 10, 30, None)
    assert png.sha256 == hashlib.sha256(png.jpg).hexdigest()  # computed when absent
    assert "failed_to_resize" in records[5].error
    assert records[7].url is None and records[7].jpg == good  # bytes on hand: no url needed


def test_plain_parquet_stays_a_url_table_and_sidecars_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "00000.parquet"
    pq.write_table(pa.Table.from_pylist([_i2d_row(0, _image(8, 8))], schema=_I2D_SCHEMA), path)
    # an explicit "parquet" means: a URL table to download, whatever else it holds
    (record,) = read_all(ReaderConfig(str(path), input_format="parquet"))
    assert record.jpg is None and record.status == "ok"

    sidecar = tmp_path / "meta.parquet"  # img2dataset's webdataset output: metadata, no bytes
    pq.write_table(
        pa.table({"url": ["u"], "caption": ["c"], "key": ["0"], "status": ["success"]}), sidecar
    )
    with pytest.raises(
        ValueError, match=r"no binary image column.*columns found: url, caption, key, status"
    ):
        plan_shards(ReaderConfig(str(sidecar), input_format="img2dataset"))


def _write_tar(path: Path, samples: list[tuple[str, dict[str, bytes]]]) -> Path:
    mode = "w:gz" if path.name.endswith((".gz", ".tgz")) else "w"
    with tarfile.open(path, mode) as tar:
        for key, members in samples:
            for ext, data in members.items():
                info = tarfile.TarInfo(f"{key}.{ext}")
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    return path


def _wds_sample(i: int, image: bytes, *, caption: bool = True) -> tuple[str, dict[str, bytes]]:
    meta = {
        "url": f"https://example.com/{i}.jpg",
        "caption": f"json caption {i}",
        "key": f"{i:09d}",
        "status": "success",
        "error_message": None,
        "width": 16,
        "height": 12,
        "original_width": 160,
        "original_height": 120,
        "sha256": hashlib.sha256(b"orig %d" % i).hexdigest(),
        "lang": "fr",
    }
    members = {"jpg": image}
    if caption:
        members["txt"] = f"txt caption {i}".encode()
    members["json"] = json.dumps(meta, indent=4).encode()
    return f"{i:09d}", members


@pytest.mark.parametrize("name", ["00000.tar", "00000.tar.gz"])
def test_webdataset_tar_samples_become_records(tmp_path: Path, name: str) -> None:
    img = _image(16, 12)
    samples = [_wds_sample(i, img) for i in range(7)]
    samples[2] = ("000000002", {"txt": b"caption without image", "json": b"{}"})
    samples[3] = ("000000003", {"jpg": b"garbage bytes", "txt": b"x"})
    samples[4] = _wds_sample(4, _image(9, 5, "WEBP"), caption=False)
    samples[5] = ("sub/000000005", {"jpg": img, "json": b"{not json"})
    path = _write_tar(tmp_path / name, samples)

    config = ReaderConfig(str(path), shard_size=3, extra_columns=("lang", "__key__"))
    shards = plan_shards(config)
    assert [s.rows for s in shards] == [3, 3, 1]
    records = [r for s in shards for r in read_shard(s, config)]

    assert [r.status for r in records] == [
        "ok", "ok", "invalid_row", "decode_error", "ok", "invalid_row", "ok",
    ]  # fmt: skip
    first = records[0]
    assert first.url == "https://example.com/0.jpg"
    assert first.alt_text == "txt caption 0"  # the .txt member is the caption
    assert first.jpg == img and first.image_format == "jpg"
    assert (first.width, first.height, first.original_width, first.original_height) == (
        16,
        12,
        160,
        120,
    )
    assert first.sha256 == hashlib.sha256(b"orig 0").hexdigest()
    assert json.loads(first.extra) == {"lang": "fr", "__key__": "000000000"}
    assert "has no image member" in records[2].error
    assert records[3].url is None and "cannot be decoded" in records[3].error
    webp = records[4]
    assert webp.alt_text == "json caption 4"  # no .txt: the json's caption column
    assert (webp.image_format, webp.width, webp.height) == ("webp", 9, 5)
    assert "000000005.json is not valid JSON" in records[5].error


def test_webdataset_shards_read_from_offsets_match_a_full_scan(tmp_path: Path) -> None:
    img = _image(8, 8)
    for i in range(2):
        _write_tar(tmp_path / f"{i:05d}.tar", [_wds_sample(10 * i + j, img) for j in range(10)])
    config = ReaderConfig(str(tmp_path / "*.tar"), shard_size=4)
    shards = plan_shards(config)
    assert [s.rows for s in shards] == [4, 4, 4, 4, 4]
    # shard 2 spans the two tars and starts mid-tar, at a planned offset
    assert [(Path(p.path).name, p.start_row, p.stop_row) for p in shards[2].parts] == [
        ("00000.tar", 8, 10),
        ("00001.tar", 0, 2),
    ]
    assert shards[2].parts[0].start_offset
    for shard in shards:
        plain = InputShard(
            shard.shard_id,
            shard.rows,
            tuple(FilePart(p.path, p.start_row, p.stop_row, p.file_format) for p in shard.parts),
        )
        assert [r.to_dict() for r in read_shard(shard, config)] == [
            r.to_dict() for r in read_shard(plain, config)
        ]
    urls = [r.url for s in shards for r in read_shard(s, config)]
    assert urls == [f"https://example.com/{i}.jpg" for i in range(20)]


def test_verify_images_catches_truncated_bytes(tmp_path: Path) -> None:
    noise = Image.frombytes("RGB", (128, 128), bytes(range(256)) * 192)
    buf = io.BytesIO()
    noise.save(buf, format="JPEG", quality=95)
    truncated = buf.getvalue()[: len(buf.getvalue()) // 2]
    path = tmp_path / "00000.parquet"
    pq.write_table(pa.Table.from_pylist([_i2d_row(0, truncated)], schema=_I2D_SCHEMA), path)
    (lenient,) = read_all(ReaderConfig(str(path)))
    assert lenient.status == "ok"  # the header alone looks fine
    (strict,) = read_all(ReaderConfig(str(path), verify_images=True))
    assert strict.status == Status.DECODE_ERROR.value and "truncated" in strict.error


def test_webdataset_keys_follow_webdataset() -> None:
    from pipeline.io.img2dataset_input import split_key

    assert split_key("00000/000000012.jpg") == ("00000/000000012", "jpg")
    assert split_key("dir.v1/sample.seg.PNG") == ("dir.v1/sample", "seg.png")
    assert split_key("README") is None


def test_a_repeated_extension_starts_a_new_sample(tmp_path: Path) -> None:
    img = _image(4, 4)
    path = _write_tar(
        tmp_path / "dup.tar",
        [("k", {"jpg": img, "txt": b"first"}), ("k", {"jpg": img, "txt": b"second"})],
    )
    records = read_all(ReaderConfig(str(path)))
    assert [(r.alt_text, r.status) for r in records] == [("first", "ok"), ("second", "ok")]
