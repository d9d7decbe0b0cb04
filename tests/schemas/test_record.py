import dataclasses

import pyarrow as pa
import pytest

from schemas import RECORD_SCHEMA, SCHEMA_VERSION, Record, Status, make_uid
from schemas.stats import ShardStats, shard_stem


def test_schema_and_dataclass_agree():
    names = [f.name for f in dataclasses.fields(Record)]
    assert RECORD_SCHEMA.names == names
    assert RECORD_SCHEMA.metadata[b"vecap_schema_version"] == SCHEMA_VERSION.encode()
    assert RECORD_SCHEMA.field("uid").nullable is False
    assert RECORD_SCHEMA.field("jpg").type == pa.binary()
    assert RECORD_SCHEMA.field("width").type == pa.int64()
    assert RECORD_SCHEMA.field("ethics_flagged").type == pa.bool_()


def test_record_round_trips_through_arrow():
    full = Record(
        uid=make_uid(3, 17),
        shard_id=3,
        row_index=17,
        url="http://a/b.jpg",
        alt_text="a dog",
        jpg=b"\xff\xd8",
        width=10,
        height=12,
        original_width=20,
        original_height=24,
        sha256="ab",
        ethics_flagged=False,
        visual_caption="a dog on grass",
    )
    failed = Record(uid=make_uid(3, 18), shard_id=3, row_index=18).fail(Status.HTTP_ERROR, "404")
    table = pa.Table.from_pylist([full.to_dict(), failed.to_dict()], schema=RECORD_SCHEMA)
    back = [Record.from_dict(r) for r in table.to_pylist()]
    assert back == [full, failed]
    assert back[1].status == "http_error" and back[1].error == "404" and not back[1].ok


def test_fail_keeps_identity_and_drops_image():
    r = Record(uid="u", shard_id=0, row_index=0, url="x", jpg=b"123")
    f = r.fail(Status.TIMEOUT, "deadline")
    assert (f.uid, f.url, f.jpg, f.status, f.error) == ("u", "x", None, "timeout", "deadline")


def test_uid_is_stable_and_sorts_in_input_order():
    assert make_uid(1, 2) == make_uid(1, 2)
    uids = [make_uid(s, i) for s in range(3) for i in (0, 5, 10, 999)]
    assert uids == sorted(uids)


@pytest.mark.parametrize(
    "status",
    [
        "ok",
        "invalid_row",
        "invalid_url",
        "unsupported_scheme",
        "blocked_address",
        "http_error",
        "timeout",
        "too_large",
        "not_an_image",
        "decode_error",
        "decompression_bomb",
        "too_small",
        "opted_out",
        "caption_failed",
        "fusion_failed",
    ],
)
def test_status_vocabulary(status):
    assert Status(status).value == status


def test_shard_stats_round_trip():
    s = ShardStats(
        shard_id=4,
        rows=10,
        status_counts={"ok": 9, "timeout": 1},
        started_at=100.0,
        finished_at=105.0,
    )
    back = ShardStats.from_json(s.to_json())
    assert back == s and back.rows_per_s == 2.0
    assert shard_stem(42) == "part-00042"
