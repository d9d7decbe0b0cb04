"""The worker image, checked without Docker: base image, pins and installed requirements agree
with pyproject.toml."""

from __future__ import annotations

import re
import shlex
import sys
from pathlib import Path

from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[2]


def _instructions() -> list[tuple[str, str]]:
    text = (ROOT / "Dockerfile").read_text()
    text = re.sub(r"\\\n", " ", text)  # line continuations
    out = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        op, _, rest = line.partition(" ")
        out.append((op.upper(), rest.strip()))
    return out


def _pyproject() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def _pip_installs() -> list[list[str]]:
    """The arguments of every `pip install` in RUN lines (split on &&)."""
    installs = []
    for op, rest in _instructions():
        if op != "RUN":
            continue
        for cmd in rest.split("&&"):
            words = shlex.split(cmd)
            for i in range(len(words) - 1):
                if words[i].endswith("pip") and words[i + 1] == "install":
                    installs.append([w for w in words[i + 2 :] if not w.startswith("-")])
    return installs


def test_base_image_is_beams_sdk_image_for_our_beam_and_python():
    froms = [rest for op, rest in _instructions() if op == "FROM"]
    assert len(froms) == 1
    m = re.fullmatch(r"apache/beam_python(\d)\.(\d+)_sdk:(\S+)", froms[0])
    assert m, froms[0]
    py = f"{m.group(1)}.{m.group(2)}"
    beam_pins = [
        Requirement(d)
        for d in _pyproject()["project"]["dependencies"]
        if d.startswith("apache-beam")
    ]
    assert [str(r.specifier) for r in beam_pins] == [f"=={m.group(3)}"]
    assert SpecifierSet(_pyproject()["project"]["requires-python"]).contains(py)
    # the base image's entrypoint is Beam's SDK harness boot: never replace it
    assert not [op for op, _ in _instructions() if op in ("ENTRYPOINT", "CMD")]


def test_installs_vecap_with_the_vllm_extra_from_pyproject():
    installs = _pip_installs()
    project = [a for args in installs for a in args if a.strip("\"'").startswith(".[")]
    assert project, installs
    extras = project[0].strip("\"'")[2:-1].split(",")
    assert "vllm" in extras and set(extras) <= set(_pyproject()["project"]["optional-dependencies"])
    copied = {rest.split()[0] for op, rest in _instructions() if op == "COPY"}
    assert "pyproject.toml" in copied
    packages = {
        p.rstrip("*") for p in _pyproject()["tool"]["setuptools"]["packages"]["find"]["include"]
    }
    assert packages <= copied, f"packages not copied into the image: {packages - copied}"


def test_every_explicit_pin_satisfies_pyproject():
    deps = [Requirement(d) for d in _pyproject()["project"]["dependencies"]]
    for extra in _pyproject()["project"]["optional-dependencies"].values():
        deps += [Requirement(d) for d in extra]
    by_name = {}
    for r in deps:
        by_name.setdefault(r.name.lower(), []).append(r.specifier)
    explicit = [
        Requirement(a.strip("\"'"))
        for args in _pip_installs()
        for a in args
        if not a.strip("\"'").startswith(".")
    ]
    assert explicit, "expected the CUDA torch pin"
    for req in explicit:
        assert req.name.lower() in by_name, (
            f"{req.name} is installed in the image but not a vecap dependency"
        )
        pinned = next(iter(req.specifier)).version
        for spec in by_name[req.name.lower()]:
            assert spec.contains(pinned), f"{req} conflicts with pyproject's {req.name}{spec}"


def test_sdk_containers_see_the_gpus_under_a_default_nvidia_runtime():
    """Flink's DOCKER environment starts the worker image without --gpus: the NVIDIA runtime
    (as the node's default) exposes the GPUs only to images that ask through these variables."""
    env = " ".join(rest for op, rest in _instructions() if op == "ENV").split()
    assert "NVIDIA_VISIBLE_DEVICES=all" in env
    assert any(e.startswith("NVIDIA_DRIVER_CAPABILITIES=") and "compute" in e for e in env)
