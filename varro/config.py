"""One typed configuration: defaults < TOML file < environment < CLI flags.

Every setting here is read by something; a setting nothing reads is deleted.
Validation happens once at start-up through msgspec, so a bad value fails with
an error that names the key (e.g. ``train.learning_rate: Expected `float`, got `str```).

Environment overrides use ``VARRO_<SECTION>__<KEY>`` (double underscore between
levels), e.g. ``VARRO_TRAIN__LEARNING_RATE=2e-6``; top-level keys are ``VARRO_NS`` and
``VARRO_DATA_DIR``. ``REDIS_URL`` is honoured as the conventional name.
"""

from __future__ import annotations

import os
import tomllib
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

import msgspec

from events.errors import PermanentError
from events.ids import canonical_hash, validate_ns
from events.schema import SamplerSpec

DEFAULT_SYSTEM_PROMPT = (
    "You are a financial analyst. Read one news headline and write a trading "
    "prediction with exactly these sections: Market Impact, Specific Assets, "
    "Trade Recommendation, Timeframe, Risk Factors, World View."
)
DEFAULT_PROMPT_TEMPLATE = "Headline: {headline}\nSource: {source}\nDate: {date}\n\nWrite the prediction."


class ConfigError(PermanentError, ValueError):
    """A configuration value is missing or invalid; the message names the key."""


class Base(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    pass


class HeadlinesConfig(Base, frozen=True):
    feeds_file: str | None = None
    filter: Literal["strict", "relaxed", "off"] = "strict"
    cap_per_day: int = 64
    # One attempt at one feed (connect, headers and body together) ends by timeout_s of wall clock;
    # the whole live day ends by deadline_s: every feed, retry, wait and parse by 90% of it, the
    # assembly of the day (normalise, filter, dedupe, cap) in the rest.
    timeout_s: float = 10.0
    deadline_s: float = 180.0
    retries: int = 2
    backoff_s: float = 0.5
    # A 429/503 Retry-After is honoured up to this many seconds; a longer one ends the feed's attempts.
    retry_after_max_s: float = 30.0
    # Redirects are followed to http(s) only, on the feed's port or 80/443; a feed whose own URL answered
    # from a public address is never redirected to a loopback, private, link-local, unspecified, multicast
    # or reserved one (judged on the address connected to); a feed that is itself internal may be.
    max_redirects: int = 5
    # Decoded bytes of one feed (after every Content-Encoding layer), and the size of one headline file.
    # JSONL and CSV files are read record by record (memory holds one record, not the file), so for them
    # max_file_bytes bounds the import's time and the items it keeps; a .json document is read whole.
    max_bytes: int = 10_000_000
    max_file_bytes: int = 64_000_000
    # One JSONL line (a longer one is skipped and counted by its line number, never read whole);
    # a CSV record's own bound is 100,000 characters.
    max_record_bytes: int = 10_000_000
    # An http:// or https:// forward proxy for feeds ("http://user:pass@proxy:3128"), through the same
    # deadline-bound transport. The environment's HTTP_PROXY/HTTPS_PROXY/ALL_PROXY are not used (httpx
    # would reach them past every deadline). A machine setting: never recorded with a run's config.
    proxy: str | None = None
    user_agent: str = "Varro/0.1 (+https://github.com/varro-ml/varro; financial-headline research bot)"


class ModelConfig(Base, frozen=True):
    # "varro-tiny" is the project's own small model, built locally and cached;
    # anything else is passed to mlx_lm.load (a local directory or a hub id).
    base: str = "varro-tiny"
    enable_thinking: bool = False
    # How the model's softmax and SwiGLU run, in generation and in training:
    # "auto" = NumPy on the CPU for Qwen3 models (MLX's CPU exp is scalar; see
    # varro.model.forward), MLX's own elsewhere. Recorded with each run because
    # the two differ in the last bits, but not part of any event's identity
    # (like the BLAS thread count). The local judge does not read this: its attention
    # runs in NumPy on the CPU and its projections and SwiGLU in MLX (varro.judging.local).
    kernels: Literal["auto", "mlx", "numpy"] = "auto"


def _default_profiles() -> dict[str, SamplerSpec]:
    return {
        "default": SamplerSpec(name="default", temperature=0.8, top_p=0.95, top_k=50, max_tokens=160),
        "greedy": SamplerSpec(name="greedy", temperature=0.0, top_p=1.0, top_k=0, max_tokens=160),
        "wide": SamplerSpec(name="wide", temperature=1.0, top_p=1.0, top_k=0, max_tokens=160),
    }


class GenerationConfig(Base, frozen=True):
    group_size: int = 8
    sampler: str = "default"
    profiles: dict[str, SamplerSpec] = msgspec.field(default_factory=_default_profiles)
    system_prompt: str = DEFAULT_SYSTEM_PROMPT
    prompt_template: str = DEFAULT_PROMPT_TEMPLATE
    # Roll-outs decoding together: a number, or "auto" for as many as fit
    # `kv_cache_mb` of KV cache (see varro.generation.batch_rows). Either way
    # the batch composition is a function of the recorded config and checkpoint.
    batch_size: int | Literal["auto"] = "auto"
    kv_cache_mb: int = 4096
    max_headlines: int | None = None
    # The share of headlines never generated on, so never trained on: they form the
    # held-out evaluation panel (varro.evaluation.panel). Decided by a hash of the
    # headline id, so a story held out on one day is held out on every day.
    holdout_share: float = 0.125


class JudgeConfig(Base, frozen=True):
    # "structure" scores only the six-section format: a verifiable reward for tests and demos
    kind: Literal["lexical", "semantic", "structure", "mlx", "http"] = "lexical"
    fallback: Literal["lexical", "semantic", "none"] = "lexical"
    mlx_model: str | None = None
    http_url: str = "http://127.0.0.1:8080/v1/chat/completions"
    http_model: str = "default"
    http_api_key_env: str = "VARRO_JUDGE_API_KEY"
    http_timeout_s: float = 30.0
    http_backoff_s: float = 0.5
    # Rounds of one judge call in flight at once; 1 sends one at a time. Raise it where the
    # time is the round trip or the server has parallel capacity (a hosted API, vLLM on a
    # GPU: 7.8x at 8 against a 50 ms loopback server); against mlx_lm.server on this
    # 2-core CPU it gave no reliable gain (0.74x to 1.53x; BENCHMARKS.md). Speed only:
    # not part of any event's identity (NOT_IDENTITY).
    http_concurrency: int = 1
    # How the answer is constrained: "none" (parse the free reply), "logit_bias" (only the
    # remaining letters' tokens can be sampled, one token; needs `http_tokenizer`, the
    # served model's tokenizer, for their ids), "json_schema" (response_format with an
    # enum of the remaining letters, for servers that support structured output).
    http_constraint: Literal["none", "logit_bias", "json_schema"] = "none"
    http_tokenizer: str | None = None
    # Reply budget for "none" (room for a reasoning block before the letter) and "json_schema".
    http_max_tokens: int = 4
    retries: int = 3
    agreement_sample: int = 4
    batch_size: int = 32
    max_outcomes: int = 64
    candidate_chars: int = 1200


class TrainConfig(Base, frozen=True):
    variant: Literal["gspo", "gspo_token", "grpo"] = "gspo"
    # Chosen by the held-out sweep in RESULTS.md: 2e-5 gave no detectable gain over the
    # base on the sample days; 2e-4 did at one seed but not at the main job's; 5e-4 did at
    # both without degenerate answers; 1e-3 overshot the trust region. Recorded days keep
    # the value they ran with: their config artifact holds it explicitly.
    learning_rate: float = 5e-4
    eps_low: float = 3e-4
    eps_high: float = 4e-4
    minibatches: int = 4
    microbatch_size: int = 8
    beta: float = 0.0
    loss_on: Literal["response", "full"] = "response"
    pi_old: Literal["recompute", "behaviour"] = "recompute"
    is_cap: float = 2.0
    adv_eps: float = 1e-4
    adv_ddof: int = 0
    ema_baseline: float | None = None
    grad_clip: float = 1.0
    weight_decay: float = 0.0
    lora: bool = False
    lora_rank: int = 8
    lora_layers: int = 4
    lora_scale: float = 20.0
    compile: bool = False
    logprob_chunk: int = 256
    reset_optimizer: bool = False


class WorkerConfig(Base, frozen=True):
    job_timeout_s: int = 3600
    retries: int = 2
    max_deliveries: int = 5
    cron: str = "30 6 * * *"
    daily_source: str = "rss"
    # Split each day's generation into this many jobs (by generation pass) so several
    # model workers share it; the merged RolloutsGenerated is identical to one job's.
    generate_shards: int = 1
    # Split each day's ranking into this many jobs (by headline) in the same way; the merged
    # Ranked is the one job's, byte for byte. Scales a judge whose time is waiting (HTTP).
    rank_shards: int = 1
    # A worker busy with a job refreshes its liveness every liveness_s / 4 seconds; a job
    # whose worker has been silent for liveness_s is abandoned and re-run under the retry
    # policy (by the dispatcher or any worker), instead of waiting out job_timeout_s.
    liveness_s: int = 120


class EvalConfig(Base, frozen=True):
    """Held-out A/B evaluation (varro ab, and the verdict `varro run` prints)."""

    # roll-outs per side per panel headline (same seeds on both sides)
    k: int = 4
    # the panel `varro run` judges its checkpoints on: "auto" (the bundled days for
    # the sample source, else the namespace's own fetched days), "sample", "log",
    # a panel file or frozen panel id, or "none" to skip the verdict
    panel: str = "auto"
    # evaluate every new checkpoint against the base and its parent, not only the last
    every_day: bool = False
    bootstrap: int = 2000
    seed: int = 4321


class ArtifactsConfig(Base, frozen=True):
    """Where artifact and checkpoint bytes live (varro.stores): a machine setting, like `data_dir`.

    It says where the bytes are, not what was computed, so it is stripped from the
    recorded config (`_MACHINE_KEYS`) and never enters a section hash or event id:
    a namespace recorded with the data directory replays with the same ids from a bucket.
    """

    # None: the data directory. "s3://bucket/prefix": an S3-compatible bucket, its endpoint and
    # credentials read by boto3 from AWS_ENDPOINT_URL, AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY
    # and AWS_DEFAULT_REGION (never from this file, so no secret is recorded).
    url: str | None = None
    # With a bucket, checkpoints are read through a bounded local cache (default <data_dir>/cache)
    # that evicts the least recently used checkpoint not in use beyond cache_mb.
    cache_dir: str | None = None
    cache_mb: int = 20_000
    # Each request to the bucket: connect and read timeouts, and boto3's retries.
    connect_timeout_s: float = 5.0
    read_timeout_s: float = 60.0
    retries: int = 3


class VarroConfig(Base, frozen=True):
    ns: str = "default"
    data_dir: str = "~/.varro"
    redis_url: str | None = None
    seed: int = 1234
    headlines: HeadlinesConfig = HeadlinesConfig()
    model: ModelConfig = ModelConfig()
    generation: GenerationConfig = GenerationConfig()
    judge: JudgeConfig = JudgeConfig()
    train: TrainConfig = TrainConfig()
    workers: WorkerConfig = WorkerConfig()
    eval: EvalConfig = EvalConfig()
    artifacts: ArtifactsConfig = ArtifactsConfig()

    @property
    def data_path(self) -> Path:
        return Path(self.data_dir).expanduser()

    def sampler(self) -> SamplerSpec:
        return self.generation.profiles[self.generation.sampler]

    def section_hash(self, section: str) -> str:
        """The hash of a section that enters event ids.

        A field added after a section was first recorded is left out while it
        holds the value it was introduced with (`INTRODUCED`), so adding a field
        never changes the id of a day recorded before it existed. A field that
        changes only how fast the work runs (`NOT_IDENTITY`) is always left out,
        so the same work at another speed keeps its id.
        """
        data = msgspec.to_builtins(getattr(self, section))
        for (sec, name), introduced in INTRODUCED.items():
            if sec == section and data.get(name) == introduced:
                del data[name]
        for sec, name in NOT_IDENTITY:
            if sec == section:
                data.pop(name, None)
        return canonical_hash(data)


# Fields added after the first recorded configs, with the value that reproduces the
# behaviour from before they existed. A recorded config that lacks one is read with
# this value (not today's default), and `section_hash` leaves it out at this value:
# configs evolve like events (see DESIGN.md).
INTRODUCED: dict[tuple[str, str], Any] = {
    ("generation", "holdout_share"): 0.0,
    ("judge", "http_constraint"): "none",
    ("judge", "http_tokenizer"): None,
    ("judge", "http_max_tokens"): 4,
}

# Fields of a hashed section that change how fast the work runs, never its result: they
# are recorded with the config but never enter `section_hash`, like `model.kernels` is
# kept out of ids. Registering one in INTRODUCED instead would keep old ids only at the
# old value: a user who sends 8 rounds at once would get new ids for the same rankings.
# (The HTTP judge's answers do not depend on how many rounds are in flight: each request
# is independent and the answers are put back in request order.)
NOT_IDENTITY: frozenset[tuple[str, str]] = frozenset({("judge", "http_concurrency")})


_TOP_LEVEL = {f for f in VarroConfig.__struct_fields__}


def _env_overrides(environ: dict[str, str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if environ.get("REDIS_URL"):
        out["redis_url"] = environ["REDIS_URL"]
    for key, value in environ.items():
        if not key.startswith("VARRO_") or key in ("VARRO_BLAS", "VARRO_CONFIG"):
            continue
        path = key[len("VARRO_") :].lower().split("__")
        if path[0] not in _TOP_LEVEL:
            continue
        node = out
        for part in path[:-1]:
            node = node.setdefault(part, {})
        node[path[-1]] = _parse_scalar(value)
    return out


def _parse_scalar(value: str) -> Any:
    """Environment strings are TOML scalars where they parse as one ("2e-6", "true")."""
    try:
        return tomllib.loads(f"v = {value}")["v"]
    except tomllib.TOMLDecodeError:
        return value


def _merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def load_config(
    path: str | os.PathLike[str] | None = None,
    *,
    overrides: dict[str, Any] | None = None,
    environ: dict[str, str] | None = None,
) -> VarroConfig:
    """Build the config from its layers and validate it once."""
    environ = dict(os.environ if environ is None else environ)
    layers: dict[str, Any] = {}
    cfg_path = path or environ.get("VARRO_CONFIG")
    if cfg_path is None and Path("varro.toml").is_file():
        cfg_path = "varro.toml"
    if cfg_path is not None:
        try:
            layers = tomllib.loads(Path(cfg_path).read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ConfigError(f"config file not found: {cfg_path}") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"config file {cfg_path} is not valid TOML: {exc}") from None
    layers = _merge(layers, _env_overrides(environ))
    layers = _merge(layers, {k: v for k, v in (overrides or {}).items() if v is not None})
    try:
        cfg = msgspec.convert(layers, VarroConfig, strict=False)
    except msgspec.ValidationError as exc:
        raise ConfigError(f"invalid configuration: {_keyed(str(exc))}") from None
    try:
        validate_ns(cfg.ns)
    except ValueError as exc:
        raise ConfigError(f"ns: {exc}") from None
    if cfg.generation.sampler not in cfg.generation.profiles:
        raise ConfigError(
            f"generation.sampler: unknown profile {cfg.generation.sampler!r} "
            f"(known: {', '.join(sorted(cfg.generation.profiles))})"
        )
    for key, ok, rule in _range_checks(cfg):
        if not ok:
            from events.connection import redact  # a proxy URL may carry a password

            raise ConfigError(redact(f"{key}: must be {rule}, got {_lookup(cfg, key)!r}"))
    from varro.stores import check_store_config  # light: imports no client library

    check_store_config(cfg.artifacts)
    return cfg


def _proxy_url_ok(url: str) -> bool:
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018  (raises on a port that is not a number)
    except ValueError:
        return False
    return parts.scheme in ("http", "https") and bool(parts.hostname)


def _lookup(cfg: VarroConfig, key: str) -> Any:
    value: Any = cfg
    for part in key.split("."):
        value = getattr(value, part)
    return value


def _range_checks(cfg: VarroConfig) -> list[tuple[str, bool, str]]:
    """Value ranges checked at start, so a bad setting fails before a day of work, not during it."""
    g, t, h, j, w = cfg.generation, cfg.train, cfg.headlines, cfg.judge, cfg.workers
    return [
        ("generation.group_size", g.group_size >= 2, "at least 2 to rank roll-outs"),
        ("generation.batch_size", g.batch_size == "auto" or g.batch_size >= 1, '>= 1 or "auto"'),
        ("generation.kv_cache_mb", g.kv_cache_mb >= 1, ">= 1"),
        ("generation.max_headlines", g.max_headlines is None or g.max_headlines >= 1, ">= 1 (or unset)"),
        ("generation.holdout_share", 0 <= g.holdout_share < 1, "in [0, 1)"),
        ("eval.k", cfg.eval.k >= 1, ">= 1"),
        ("eval.bootstrap", cfg.eval.bootstrap >= 100, ">= 100"),
        ("train.learning_rate", t.learning_rate > 0, "> 0"),
        ("train.eps_low", 0 <= t.eps_low < 1, "in [0, 1)"),
        ("train.eps_high", t.eps_high >= 0, ">= 0"),
        ("train.minibatches", t.minibatches >= 1, ">= 1"),
        ("train.microbatch_size", t.microbatch_size >= 1, ">= 1"),
        ("train.beta", t.beta >= 0, ">= 0"),
        ("train.is_cap", t.is_cap > 0, "> 0"),
        ("train.adv_eps", t.adv_eps > 0, "> 0 (it bounds the advantages where rewards barely differ)"),
        ("train.adv_ddof", t.adv_ddof in (0, 1), "0 or 1"),
        ("train.ema_baseline", t.ema_baseline is None or 0 <= t.ema_baseline < 1, "a decay in [0, 1) (or unset)"),
        ("train.grad_clip", t.grad_clip > 0, "> 0"),
        ("train.logprob_chunk", t.logprob_chunk >= 1, ">= 1"),
        ("train.lora_rank", t.lora_rank >= 1, ">= 1"),
        ("headlines.timeout_s", h.timeout_s > 0, "> 0"),
        ("headlines.retries", h.retries >= 0, ">= 0"),
        ("headlines.max_bytes", h.max_bytes > 0, "> 0"),
        ("headlines.deadline_s", h.deadline_s > 0, "> 0"),
        ("headlines.retry_after_max_s", h.retry_after_max_s >= 0, ">= 0"),
        ("headlines.max_redirects", h.max_redirects >= 0, ">= 0"),
        ("headlines.max_file_bytes", h.max_file_bytes > 0, "> 0"),
        ("headlines.max_record_bytes", h.max_record_bytes > 0, "> 0"),
        (
            "headlines.proxy",
            h.proxy is None or _proxy_url_ok(h.proxy),
            "an http:// or https:// URL with a host (or unset)",
        ),
        ("judge.retries", j.retries >= 0, ">= 0"),
        ("judge.http_timeout_s", j.http_timeout_s > 0, "> 0"),
        ("judge.http_concurrency", j.http_concurrency >= 1, ">= 1"),
        ("judge.http_max_tokens", j.http_max_tokens >= 1, ">= 1"),
        (
            "judge.http_tokenizer",
            j.http_constraint != "logit_bias" or bool(j.http_tokenizer),
            'set to the served model\'s tokenizer (a local directory) for http_constraint = "logit_bias"',
        ),
        ("workers.job_timeout_s", w.job_timeout_s > 0, "> 0 (a SimpleWorker with no timeout is declared abandoned)"),
        ("workers.retries", w.retries >= 0, ">= 0"),
        ("workers.max_deliveries", w.max_deliveries >= 1, ">= 1"),
        ("workers.generate_shards", w.generate_shards >= 1, ">= 1"),
        ("workers.rank_shards", w.rank_shards >= 1, ">= 1"),
        ("workers.liveness_s", w.liveness_s >= 4, ">= 4 (it is refreshed every liveness_s / 4 seconds)"),
        ("artifacts.cache_mb", cfg.artifacts.cache_mb >= 1, ">= 1"),
        ("artifacts.connect_timeout_s", cfg.artifacts.connect_timeout_s > 0, "> 0"),
        ("artifacts.read_timeout_s", cfg.artifacts.read_timeout_s > 0, "> 0"),
        ("artifacts.retries", cfg.artifacts.retries >= 0, ">= 0"),
    ]


def _keyed(message: str) -> str:
    """msgspec says '... - at `$.train.lr`'; lead with the key instead."""
    if " - at `$." in message:
        text, _, key = message.rpartition(" - at `$.")
        return f"{key.rstrip('`')}: {text}"
    return message


# Settings that belong to the machine a run happens on, not to the experiment:
# they are left out of the recorded config so a replay elsewhere still works
# (and the recorded config's bytes, so its artifact hash, do not depend on them).
_MACHINE_KEYS = ("ns", "data_dir", "redis_url", "artifacts")


_MACHINE_HEADLINES_KEYS = ("proxy",)  # how this machine reaches the web (and maybe a password), not the experiment


def recorded_config_bytes(cfg: VarroConfig) -> bytes:
    """Canonical JSON of the experiment settings, stored with each run request."""
    data = msgspec.to_builtins(cfg)
    for key in _MACHINE_KEYS:
        data.pop(key, None)
    for key in _MACHINE_HEADLINES_KEYS:
        data.get("headlines", {}).pop(key, None)
    return msgspec.json.encode(data, order="sorted")


def config_from_recorded(data: bytes, *, machine: VarroConfig, ns: str | None = None) -> VarroConfig:
    """The recorded experiment settings with this machine's data dir, Redis and namespace."""
    try:
        recorded = msgspec.json.decode(data)
        for (section, name), introduced in INTRODUCED.items():
            recorded.setdefault(section, {}).setdefault(name, introduced)
        recorded.update(
            ns=ns or machine.ns,
            data_dir=machine.data_dir,
            redis_url=machine.redis_url,
            artifacts=msgspec.to_builtins(machine.artifacts),
        )
        for key in _MACHINE_HEADLINES_KEYS:
            recorded.setdefault("headlines", {})[key] = getattr(machine.headlines, key)
        return msgspec.convert(recorded, VarroConfig)
    except (msgspec.DecodeError, msgspec.ValidationError, AttributeError) as exc:
        raise ConfigError(f"recorded config cannot be read: {_keyed(str(exc))}") from None
