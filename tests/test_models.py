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
