"""Model specs -> loaded models for a Nudger: what to load (`LoadSpec`), checked before any weights load, and
gamma "auto" resolved once, here.

`Nudger.from_pretrained(base, nudger, **options)` builds a LoadSpec from its keywords (each goes to the
dataclass that owns it, so every default is written once, in that dataclass) and calls `load_models`.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Literal, Sequence

from nudging import models
from nudging.backends.interface import Model
from nudging.backends.local import LocalModel
from nudging.backends.remote.client import ClientSettings
from nudging.backends.remote.spec import is_remote
from nudging.config import BaselineConfig, NudgingConfig, SamplingConfig
from nudging.errors import InvalidArgumentError
from nudging.methods import METHODS, ROLES, fitting, method_named, reads_gamma, roles_for, unfit_error
from nudging.rules import rule_of
from nudging.text import check_unicode

AUTO = "auto"


@dataclass(frozen=True)
class ModelSpecs:
    """Which models: a hub id, a local folder, a .gguf file, `demo-base`/`demo-nudger`, or a served model
    `openai:MODEL@http://HOST:PORT/v1`. The anti-expert (proxy tuning) is the nudger's untuned base."""

    base: str = "demo-base"
    nudger: str = "demo-nudger"
    anti_expert: str | None = None

    def of(self, role: str) -> str | None:
        return getattr(self, role)


@dataclass(frozen=True)
class LocalOptions:
    """How local models load (each one of a pair alike). `device_map` "auto": accelerate spreads the layers over
    the GPUs, then CPU memory (up to `max_memory`, e.g. {0: "70GiB", "cpu": "100GiB"}), then `offload_folder`
    (default: under the cache directory); a dict places modules by name. `quantize`: "8bit" or "4bit"
    (bitsandbytes, CUDA only)."""

    dtype: str = "auto"
    device: str = "auto"
    device_map: str | dict | None = None
    quantize: str | None = None
    max_memory: dict | None = None
    offload_folder: str | None = None

    def load(self, source: str) -> tuple[Any, Any]:
        return models.load(source, self.dtype, self.device, device_map=self.device_map, quantize=self.quantize,
                           max_memory=self.max_memory, offload_folder=self.offload_folder)


@dataclass(frozen=True)
class RemoteOptions:
    """For models on a server: the key (else $NUDGING_API_KEY or $OPENAI_API_KEY), where each tokenizer is
    loaded from (default: the served model name), how word boundaries are checked, timeouts and retries."""

    api_key: str | None = None
    base_tokenizer: str | None = None
    nudger_tokenizer: str | None = None
    remote_protocol: str = "auto"  # auto, echo, per-word, or chunked (the authors' 16-token base requests)
    client_settings: ClientSettings = field(default_factory=ClientSettings)


@dataclass(frozen=True)
class LoadSpec:
    """Everything `Nudger.from_pretrained` needs. `gamma` "auto" takes the gamma `nudging calibrate` stored for
    this pair (in `calibration`, default: nudging.calibrate.saved.default_path()), else calibrates now."""

    models: ModelSpecs = field(default_factory=ModelSpecs)
    config: NudgingConfig = field(default_factory=NudgingConfig)
    gamma_auto: bool = False
    calibration: str | Path | None = None
    system: str | None = None
    methods: tuple[str, ...] = ("nudging",)
    local: LocalOptions = field(default_factory=LocalOptions)
    remote: RemoteOptions = field(default_factory=RemoteOptions)
    baselines: BaselineConfig = field(default_factory=BaselineConfig)
    base_sampling: SamplingConfig | None = None
    nudger_sampling: SamplingConfig | None = None

    @classmethod
    def build(cls, base: str | None = None, nudger: str | None = None, *, mode: str | None = None,
              methods: Sequence[str] | None = None, gamma: float | Literal["auto"] | None = None,
              **options: Any) -> "LoadSpec":
        """A LoadSpec from keywords: each option goes to the dataclass whose field it names; None keeps that
        field's default. `methods` (default: [mode], default "nudging") says which models to load."""
        owners = {ModelSpecs: "models", NudgingConfig: "config", LocalOptions: "local", RemoteOptions: "remote",
                  BaselineConfig: "baselines"}
        owner_of = {f.name: name for kind, name in owners.items() for f in fields(kind)}
        own = {f.name for f in fields(cls)} - set(owners.values()) - {"gamma_auto", "methods"}
        given = {"base": base, "nudger": nudger, **options}
        parts: dict[str, dict[str, Any]] = {name: {} for name in owners.values()}
        top: dict[str, Any] = {}
        for key, value in given.items():
            owner = owner_of.get(key)
            if owner is None and key not in own:
                raise InvalidArgumentError(f"from_pretrained got an unknown option {key!r}")
            if value is None:
                continue
            if owner is None:
                top[key] = value
            else:
                parts[owner][key] = value
        auto = gamma == AUTO
        if gamma is not None and not auto:
            parts["config"]["gamma"] = gamma
        chosen = tuple(methods) if methods else (mode or "nudging",)
        wanted = [method_named(name) for name in chosen]
        built = {name: kind(**parts[name]) for kind, name in owners.items()}
        for method in wanted:
            method.check(built["config"], built["baselines"])
        return cls(**built, **top, gamma_auto=auto, methods=chosen)

    def __post_init__(self) -> None:
        if self.system is not None:
            check_unicode(self.system, "the system text")

    def sampling(self, role: str) -> SamplingConfig | None:
        return self.base_sampling if role == "base" else self.nudger_sampling


def load_models(spec: LoadSpec, shared: SharedBase | None = None) -> dict[str, Model | None]:
    """The models the spec's methods use, by role (None for the others). Every local spec is resolved, and each
    method checked to fit these models (comparing vocabularies where a method needs one), before any weights
    load, so a bad spec or a method that cannot run fails fast. `shared`: a base kept from an earlier pair, used
    where it fits this spec; this pair's base is kept there in turn."""
    reuse = shared.offer(spec) if shared is not None else {}
    wanted = roles_for(list(spec.methods))
    present = {role for role in wanted if spec.models.of(role) and role not in reuse}  # `fitting` names a missing one
    sources = {role: models.resolve(spec.models.of(role)) for role in present if not is_remote(spec.models.of(role))}
    _, unfit = fitting(list(spec.methods), spec.models.base, spec.models.nudger, spec.models.anti_expert)
    if unfit:
        raise unfit_error(*next(iter(unfit.items())), any(is_remote(spec.models.of(role)) for role in wanted))
    if sources:
        models.check_placement(spec.local.device_map, spec.local.quantize)
    reads_probabilities = {role for name in spec.methods for role in METHODS[name].logprobs}
    loaded: dict[str, Model | None] = {role: None for role in ROLES}
    for role in ROLES:
        if role not in wanted:
            continue
        if role in reuse:
            loaded[role] = reuse[role]
        elif is_remote(spec.models.of(role)):
            loaded[role] = _connect(spec, role, "base" if role in reads_probabilities else "nudger")
        else:
            model, tokenizer = spec.local.load(sources[role])
            loaded[role] = LocalModel(model, tokenizer, name=role, sampling=spec.sampling(role))
    if shared is not None:
        shared.keep(spec, loaded["base"])
    return loaded


class SharedBase:
    """A local base loaded for one pair, lent to the next pair with the same base spec and load options, so that
    runs over several nudgers (`eval`, `calibrate`) load it once. A remote base is not kept (connecting is cheap,
    and which probe it got depends on the methods)."""

    def __init__(self) -> None:
        self._spec: LoadSpec | None = None
        self._model: Model | None = None

    def offer(self, spec: LoadSpec) -> dict[str, Model]:
        """What load_models may take instead of loading: the kept base, where it fits `spec`."""
        if self._model is None or self._spec is None or not _same_base(self._spec, spec):
            return {}
        return {"base": self._model}

    def keep(self, spec: LoadSpec, base: Model | None) -> None:
        if isinstance(base, LocalModel):
            self._spec, self._model = spec, base


def _same_base(kept: LoadSpec, spec: LoadSpec) -> bool:
    return (not is_remote(spec.models.base) and kept.models.base == spec.models.base and kept.local == spec.local
            and kept.base_sampling == spec.base_sampling)


def _connect(spec: LoadSpec, role: str, kind: str) -> Model:
    from nudging.backends.remote.probe import connect

    tokenizers = {"base": spec.remote.base_tokenizer, "nudger": spec.remote.nudger_tokenizer, "anti_expert": None}
    model = connect(spec.models.of(role), role=kind, api_key=spec.remote.api_key, tokenizer=tokenizers[role],
                    protocol=spec.remote.remote_protocol, client_settings=spec.remote.client_settings,
                    sampling=spec.sampling(role))
    model.name = role
    return model


def calibration_path(calibration: str | Path | None) -> Path:
    from nudging.calibrate import saved

    return Path(calibration) if calibration else saved.default_path()


def resolve_auto_gamma(nudger: Any, spec: LoadSpec) -> tuple[NudgingConfig, str]:
    """gamma "auto", resolved once: the stored choice for this pair, else one calibrated now with `nudger`'s
    models (and stored). Returns the config to use and a note saying which value was used and where from."""
    from nudging.calibrate import auto

    path = calibration_path(spec.calibration)
    choice = auto.resolve(nudger, spec.models.base, spec.models.nudger, path, rule_of(spec.config))
    return replace(spec.config, gamma=choice.gamma), choice.describe(path)


def announce_auto_gamma(spec: LoadSpec) -> str | None:
    """What to tell a person before a slow calibration starts (none stored for this pair), or None."""
    from nudging.calibrate import saved

    path = calibration_path(spec.calibration)
    if not spec.gamma_auto or not reads_gamma(spec.methods) or saved.load(
            spec.models.base, spec.models.nudger, path, rule_of(spec.config).scored_by) is not None:
        return None
    return (f"no calibrated gamma for this pair in {path}; calibrating on built-in prompts first (once; "
            "`nudging calibrate` gives more control)")
