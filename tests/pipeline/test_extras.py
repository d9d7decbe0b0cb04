"""The launcher extras: `vecap[gcp]` and `vecap[aws]` bring Beam's cloud extra at vecap's Beam pin
plus the fsspec filesystem (plan files, inputs and outputs go through fsspec); the older names
`gcs` and `s3` stay as aliases."""

from __future__ import annotations

from pathlib import Path

from packaging.requirements import Requirement

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

PYPROJECT = Path(__file__).resolve().parents[2] / "pyproject.toml"


def _project() -> dict:
    return tomllib.loads(PYPROJECT.read_text())["project"]


def _reqs(extra: str) -> dict[str, Requirement]:
    return {Requirement(r).name: Requirement(r) for r in _project()["optional-dependencies"][extra]}


def test_cloud_extras_bring_beams_cloud_extra_at_the_beam_pin_and_the_fsspec_filesystem():
    (beam_pin,) = [
        Requirement(d) for d in _project()["dependencies"] if d.startswith("apache-beam")
    ]
    for extra, beam_extra, fs in (("gcp", "gcp", "gcsfs"), ("aws", "aws", "s3fs")):
        reqs = _reqs(extra)
        assert set(reqs) == {"apache-beam", fs}, extra
        assert reqs["apache-beam"].extras == {beam_extra}
        assert reqs["apache-beam"].specifier == beam_pin.specifier


def test_old_extra_names_are_aliases():
    assert _reqs("gcs") == _reqs("gcp")
    assert _reqs("s3") == _reqs("aws")
