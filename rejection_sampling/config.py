"""Typed settings of a captioning run: endpoints, sampling, judges, the acceptance rule.

Everything a run writes (manifest options, summary) is derived from
:meth:`CaptionConfig.public`, which never holds an API key: a key lives only
in the environment variable an endpoint names (``api_key_env``) or in the
user's own config file (``api_key``), and goes no further than the client.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path


from omnivmed.data.fileio import read_json_or_yaml

MEDIA_MODES = ("images", "video")
STRUCTURED_MODES = ("json_schema", "json_object", "none")
JUDGE_KINDS = ("multimodal", "text")
CRITERIA = ("relevance", "fluency", "accuracy")


class ConfigError(ValueError):
    """A config file or value that cannot be used (the message names the file and the field)."""


@dataclass(frozen=True)
class SamplingConfig:
    """Sampling parameters sent with every request of one stage (part of the cache key)."""

    temperature: float = 0.7
    """Sampling temperature of the first attempt."""
    top_p: float = 0.9
    """Nucleus sampling mass."""
    max_tokens: int = 256
    """Reply length limit."""
    retry_temperature: float = 0.7
    """Temperature of re-asks after an unparseable reply (a deterministic endpoint would repeat itself at 0)."""

    def __post_init__(self):
        if not 0 <= self.temperature <= 2 or not 0 <= self.retry_temperature <= 2:
            raise ConfigError(f"temperature must be within [0, 2], got {self.temperature}/{self.retry_temperature}")
        if not 0 < self.top_p <= 1:
            raise ConfigError(f"top_p must be within (0, 1], got {self.top_p}")
        if self.max_tokens < 1:
            raise ConfigError(f"max_tokens must be >= 1, got {self.max_tokens}")


@dataclass(frozen=True)
class EndpointConfig:
    """One OpenAI-compatible endpoint (vLLM, TGI, llama.cpp server, OpenAI itself)."""

    name: str
    """Short label used in outputs and token reports (e.g. ``qwen-vl``)."""
    base_url: str
    """Endpoint root, e.g. ``http://127.0.0.1:8000/v1``."""
    model: str
    """Model name the endpoint serves (part of the cache key)."""
    api_key_env: str | None = "OPENAI_API_KEY"
    """Environment variable holding the key; read at run time, never written anywhere."""
    api_key: str | None = None
    """Key given in the config file itself (kept out of every output; prefer ``api_key_env``)."""
    concurrency: int = 64
    """Most requests in flight to this endpoint at once."""
    timeout_s: float = 120.0
    """Per-request timeout in seconds."""
    max_retries: int = 5
    """Retries on connection errors, timeouts, 408, 429 and 5xx."""
    max_parse_retries: int = 2
    """Re-asks when a reply does not parse (each one a new, cached request)."""
    backoff_s: float = 1.0
    """Base of the jittered exponential backoff between retries."""
    max_backoff_s: float = 60.0
    """Longest wait between two attempts (Retry-After included)."""
    structured_output: str = "json_schema"
    """How judges ask for JSON: ``json_schema`` (guided decoding), ``json_object``, or ``none`` (prompt + tolerant parser)."""
    media: str = "images"
    """How frames travel: ``images`` (one base64 JPEG part each) or ``video`` (one base64 MP4 ``video_url`` part, vLLM)."""
    max_frames: int = 8
    """Frames sent per clip (evenly subsampled)."""

    def __post_init__(self):
        if not self.name or not self.base_url or not self.model:
            raise ConfigError("an endpoint needs name, base_url and model")
        if self.concurrency < 1 or self.max_retries < 0 or self.max_parse_retries < 0:
            raise ConfigError(f"endpoint {self.name}: concurrency >= 1 and retries >= 0 required")
        if self.timeout_s <= 0 or self.backoff_s < 0 or self.max_backoff_s < 0:
            raise ConfigError(f"endpoint {self.name}: timeout_s > 0 and backoffs >= 0 required")
        if self.structured_output not in STRUCTURED_MODES:
            raise ConfigError(f"endpoint {self.name}: structured_output must be one of {', '.join(STRUCTURED_MODES)}")
        if self.media not in MEDIA_MODES:
            raise ConfigError(f"endpoint {self.name}: media must be one of {', '.join(MEDIA_MODES)}")
        if self.max_frames < 1:
            raise ConfigError(f"endpoint {self.name}: max_frames must be >= 1")

    def resolve_key(self) -> str:
        """The key to send: the config's own, else the named environment variable, else a placeholder
        (local servers such as vLLM without --api-key accept any)."""
        if self.api_key:
            return self.api_key
        if self.api_key_env and os.environ.get(self.api_key_env):
            return os.environ[self.api_key_env]
        return "EMPTY"

    # Settings that change replies or outcomes (recorded in deterministic outputs); the rest
    # (where the endpoint is, how hard to push it) only changes how fast, and goes to run.json.
    SHAPING = ("name", "model", "structured_output", "media", "max_frames", "max_parse_retries")

    def public(self) -> dict:
        """What shaped the outputs; never the key."""
        return {k: getattr(self, k) for k in self.SHAPING}

    def runtime(self) -> dict:
        """Every setting but the key (for this run's report)."""
        data = asdict(self)
        data.pop("api_key")
        return data


@dataclass(frozen=True)
class JudgeConfig:
    """A judge: an endpoint, what it sees, and its own sampling."""

    endpoint: EndpointConfig
    kind: str = "multimodal"
    """``multimodal`` sees the frames and the caption; ``text`` sees the frames' QA text and the caption."""
    sampling: SamplingConfig = SamplingConfig(temperature=0.0, top_p=1.0, max_tokens=256)

    def __post_init__(self):
        if self.kind not in JUDGE_KINDS:
            raise ConfigError(f"judge {self.endpoint.name}: kind must be one of {', '.join(JUDGE_KINDS)}")

    @property
    def name(self) -> str:
        return self.endpoint.name


@dataclass(frozen=True)
class AcceptanceRule:
    """A candidate passes when every criterion of every judge scores at least ``min_each``
    and the mean over all of them is at least ``min_mean``.

    Default: every score >= 4. On the judges' 1-5 scale 4 is the first "good"
    grade; a mean rule alone would let a fluent caption with a wrong finding
    (accuracy 2, fluency 5) through, which is what a medical data set must not keep.
    """

    min_each: int = 4
    """Lowest score allowed for any criterion from any judge."""
    min_mean: float = 0.0
    """Lowest mean over all judges' criteria (0: no mean condition)."""

    def __post_init__(self):
        if not 1 <= self.min_each <= 5 or not 0 <= self.min_mean <= 5:
            raise ConfigError(f"acceptance: min_each in 1..5 and min_mean in 0..5 required, got {self.min_each}, {self.min_mean}")

    def describe(self) -> str:
        text = f"every criterion of every judge >= {self.min_each}"
        return text + (f" and mean >= {self.min_mean:g}" if self.min_mean else "")


@dataclass(frozen=True)
class CaptionConfig:
    """A whole captioning run."""

    generator: EndpointConfig
    judges: tuple[JudgeConfig, ...] = ()
    sampling: SamplingConfig = SamplingConfig()
    """Generator sampling (each candidate gets its own seed)."""
    candidates: int = 4
    """N: candidates per clip and round."""
    extra_rounds: int = 2
    """R: further rounds of N candidates for clips with no passing candidate."""
    seed: int = 0
    """Base seed; candidate k of clip c is sent with a seed derived from (seed, c, k)."""
    acceptance: AcceptanceRule = AcceptanceRule()
    clip_workers: int = 64
    """Clips worked on at once (requests are bounded per endpoint by its concurrency)."""

    def __post_init__(self):
        if self.candidates < 1 or self.extra_rounds < 0 or self.clip_workers < 1:
            raise ConfigError("candidates >= 1, extra_rounds >= 0 and clip_workers >= 1 required")
        names = [self.generator.name] + [j.name for j in self.judges]
        if len(set(names)) != len(names):
            raise ConfigError(f"endpoint names must be unique, got {names}")

    def endpoints(self) -> tuple[EndpointConfig, ...]:
        return (self.generator,) + tuple(j.endpoint for j in self.judges)

    def secrets(self) -> tuple[str, ...]:
        """Every key this run may send (for redaction of anything it records)."""
        return tuple(k for k in {e.resolve_key() for e in self.endpoints()} if k and k != "EMPTY")

    def with_overrides(self, **changes) -> "CaptionConfig":
        return replace(self, **{k: v for k, v in changes.items() if v is not None})

    def runtime(self) -> dict:
        """Every endpoint setting but the keys (this run's report)."""
        return {e.name: e.runtime() for e in self.endpoints()} | {"clip_workers": self.clip_workers}

    def public(self) -> dict:
        """The settings that shape the outputs, without keys: what deterministic outputs record."""
        return {
            "generator": self.generator.public(),
            "judges": [{"kind": j.kind, "endpoint": j.endpoint.public(), "sampling": asdict(j.sampling)} for j in self.judges],
            "sampling": asdict(self.sampling),
            "candidates": self.candidates,
            "extra_rounds": self.extra_rounds,
            "seed": self.seed,
            "acceptance": asdict(self.acceptance),
        }


def _build(cls, data, origin: str, where: str):
    if not isinstance(data, dict):
        raise ConfigError(f"{origin}: {where} must be a mapping, got {type(data).__name__}")
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ConfigError(f"{origin}: unknown keys in {where}: {', '.join(unknown)}")
    try:
        return cls(**data)
    except ConfigError as err:
        raise ConfigError(f"{origin}: {where}: {err}") from None
    except TypeError as err:
        raise ConfigError(f"{origin}: {where}: {err}") from None


def config_from_dict(data: dict, origin: str = "<config>") -> CaptionConfig:
    """Parse the YAML/JSON form (see docs/captioning.md): generator, judges, sampling, acceptance, counts."""
    if not isinstance(data, dict):
        raise ConfigError(f"{origin}: the config must be a mapping")
    data = dict(data)
    if "generator" not in data:
        raise ConfigError(f"{origin}: no generator endpoint")
    generator = _build(EndpointConfig, data.pop("generator"), origin, "generator")
    judges = []
    for n, item in enumerate(data.pop("judges", None) or []):
        if not isinstance(item, dict):
            raise ConfigError(f"{origin}: judges[{n}] must be a mapping")
        item = dict(item)
        kind = item.pop("kind", "multimodal")
        sampling = item.pop("sampling", None)
        endpoint = _build(EndpointConfig, item, origin, f"judges[{n}]")
        extra = {} if sampling is None else {"sampling": _build(SamplingConfig, sampling, origin, f"judges[{n}].sampling")}
        try:
            judges.append(JudgeConfig(endpoint=endpoint, kind=kind, **extra))
        except ConfigError as err:
            raise ConfigError(f"{origin}: judges[{n}]: {err}") from None
    if "sampling" in data:
        data["sampling"] = _build(SamplingConfig, data["sampling"], origin, "sampling")
    if "acceptance" in data:
        data["acceptance"] = _build(AcceptanceRule, data["acceptance"], origin, "acceptance")
    return _build(CaptionConfig, {**data, "generator": generator, "judges": tuple(judges)}, origin, "config")


def load_config(path: Path) -> CaptionConfig:
    return config_from_dict(read_json_or_yaml(path, ConfigError), origin=str(path))


def default_config(base_url: str = "http://127.0.0.1:8000/v1") -> CaptionConfig:
    """The paper's setup on one local vLLM: Qwen2.5-VL-72B generates and judges with the frames,
    HuatuoGPT2-13B judges the text (point ``base_url`` of each at its server in a config file)."""
    generator = EndpointConfig(name="generator", base_url=base_url, model="Qwen/Qwen2.5-VL-72B-Instruct")
    return CaptionConfig(
        generator=generator,
        judges=(
            JudgeConfig(EndpointConfig(name="vision-judge", base_url=base_url, model="Qwen/Qwen2.5-VL-72B-Instruct"), kind="multimodal"),
            JudgeConfig(EndpointConfig(name="medical-judge", base_url=base_url, model="FreedomIntelligence/HuatuoGPT2-13B"), kind="text"),
        ),
    )
