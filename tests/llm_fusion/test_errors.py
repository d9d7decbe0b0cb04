import logging

from llm_fusion.errors import describe_error, internal_error_record
from schemas import Record


def test_internal_error_keeps_the_row_with_status_reason_and_log(caplog):
    record = Record(uid="u1", shard_id=0, row_index=1, alt_text="a", visual_caption="v", jpg=b"x")
    try:
        raise KeyError("boom")
    except KeyError as exc:
        with caplog.at_level(logging.ERROR):
            out = internal_error_record(record, "fusion output", exc, fusion_reason="internal")
    assert (out.uid, out.status, out.fusion_reason) == ("u1", "internal_error", "internal")
    assert out.error == "fusion output: KeyError: 'boom'"
    assert "fusion output failed on row u1" in caplog.text and "KeyError" in caplog.text


def test_describe_error_of_a_beam_dead_letter_tuple():
    error = (ValueError, "ValueError('x')", ["Traceback ...", "  File ...", "ValueError: x  "])
    assert describe_error(error) == "ValueError: x"
    assert describe_error(RuntimeError("a\n  b")) == "RuntimeError: a b"
