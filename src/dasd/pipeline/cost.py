"""What a run will cost, before it runs: `dasd run CONFIG dry_run=true` prints this table under the plan.

    print(render_cost(config, steps, {name: job.config for name, job in jobs.items()}))   # in `dasd run`

Per step: records and tokens in and out, disk per output in its format, peak memory per process, and GPU-hours on
the stated hardware; then the totals and every figure the estimate used, each with its source. Volumes flow along
the plan: sample's records are the questions × samples per temperature, score reads sample's, select keeps at most
k per question and temperature (and its per-temperature budgets), training reads build-sft's per-stage files, …

Where the numbers come from, best first:
* **measured**: a finished step's summary in the workdir (or in `cost.pilot`, a smaller run of the same recipe)
  gives the averages per record — teacher tokens per response, share kept by the filter, student tokens per
  teacher token, answer lengths per benchmark;
* **expected**: `cost.response_tokens`, the mean answer length the user expects per temperature;
* **bound** (≤): the config's own limits — every answer `max_new_tokens` long, nothing rejected.

The per-token costs (`H100`) are dasd's own measurements in benchmarks/RESULTS.md where they exist; the others
are published figures or assumptions, and the table says which. All functions here are pure but
`measured_summary` (it reads summaries) and `count_questions`, `model_shape`, `benchmark_size` (they look at local
files).
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..naming import SFT_STAGES, sft_stage_file, stage_for_temperature, summary_file
from .config import CostSettings, PipelineConfig
from .steps import Step


@dataclass(frozen=True)
class Figure:
    """One number the estimate uses, with where it comes from. `measured`: by dasd, in benchmarks/RESULTS.md."""

    value: float
    unit: str
    source: str
    measured: bool = False


@dataclass(frozen=True)
class Hardware:
    """The per-token costs of one kind of GPU (and of the CPU work around it). Every field is a `Figure`."""

    name: str
    teacher_decode: Figure  # served teacher (vLLM), output tokens/s per GPU
    long_answers: Figure  # factor on served decode rates for answers of 10K+ tokens
    student_decode_vllm: Figure  # the student on vLLM, output tokens/s per GPU
    student_decode_hf: Figure  # dasd's hf backend, at a 4B shape (scaled by parameters)
    hf_decode_params: Figure  # the parameters of that shape
    student_prefill: Figure  # dasd score's teacher-forced forward, tokens/s at a 0.6B shape (scaled by parameters)
    prefill_params: Figure
    teacher_prefill: Figure  # a served teacher's prompt log-probs, tokens/s per GPU
    peak_bf16_flops: Figure
    mfu: Figure
    train_state_bytes_per_param: Figure
    weight_bytes_per_param: Figure
    filter_cpu_us_per_token: Figure
    client_cpu_us_per_token: Figure  # dasd sample's openai client reading streamed answers, per token


H100 = Hardware(
    name="H100 SXM 80GB",
    teacher_decode=Figure(
        8021.0,
        "tok/s/GPU",
        "published, not measured by dasd: GPUStack performance lab, gpt-oss-120b on H100, `vllm serve "
        "--async-scheduling -tp 2` (vLLM 0.10.2), ShareGPT: 16,042 total tok/s on 2 GPUs",
    ),
    long_answers=Figure(
        0.5,
        "x",
        "assumption: a 10K-40K-token answer holds 10-100x a ShareGPT answer's KV cache, so fewer run at once; "
        "halves the published serving rates (not measured)",
    ),
    student_decode_vllm=Figure(
        6596.0,
        "tok/s/GPU",
        "published, not measured by dasd: GPUStack, Qwen3-14B on one H100, vLLM baseline, ShareGPT total tok/s "
        "(a 14B model's rate: a lower bound for a 4B student)",
    ),
    student_decode_hf=Figure(
        966.4,
        "tok/s/GPU",
        "measured: RESULTS 'Sampling on GPU', dasd's hf backend, Qwen3-4B shape, bf16, batch 32, warm; "
        "scaled by parameters for other sizes",
        measured=True,
    ),
    hf_decode_params=Figure(4.02e9, "params", "Qwen3-4B (its config.json)", measured=True),
    student_prefill=Figure(
        49126.0,
        "tok/s/GPU",
        "measured: RESULTS 'Student scoring', dasd score one sample per forward, Qwen3-0.6B shape, bf16, SDPA; "
        "scaled by parameters (2N FLOPs per token) for other sizes",
        measured=True,
    ),
    prefill_params=Figure(0.6e9, "params", "Qwen3-0.6B", measured=True),
    teacher_prefill=Figure(
        8068.0,
        "tok/s/GPU",
        "published, not measured by dasd: GPUStack, gpt-oss-120b on H100 (tp 2, vLLM baseline), 'very long "
        "prompt': 16,137 total tok/s on 2 GPUs",
    ),
    peak_bf16_flops=Figure(989e12, "FLOP/s", "published: NVIDIA H100 SXM datasheet, dense bf16"),
    mfu=Figure(
        0.40,
        "",
        "assumption: the goal benchmarks/gpu_suite.sh sets for 16K packed rows with Liger; training on a GPU is "
        "not measured yet (RESULTS 'Training')",
    ),
    train_state_bytes_per_param=Figure(
        16.0,
        "B/param",
        "published: mixed-precision AdamW keeps bf16 weights and grads, fp32 master weights, m and v (ZeRO paper)",
    ),
    weight_bytes_per_param=Figure(2.0, "B/param", "bf16 weights in the saved checkpoints"),
    filter_cpu_us_per_token=Figure(
        4.63, "µs/token", "measured: RESULTS 'Every stage at two sizes', dasd filter at 4N", measured=True
    ),
    client_cpu_us_per_token=Figure(
        87.0,
        "µs/token",
        "measured: RESULTS 'Streamed answers', bench_sample.py --client-cpu, completions mode streamed, the slower of "
        "two runs (63-87; chat 105-112) on 64-token answers; one client process reads ~1e6/this tokens/s on one "
        "event-loop thread: shard the sample step to keep up with the servers",
        measured=True,
    ),
)


@dataclass(frozen=True)
class RecordSizes:
    """Bytes on disk per token of each kind of file, and the peak memory of the stages that stream."""

    sample: dict[str, Figure]  # responses with teacher log-probs, by format
    scored: dict[str, Figure]  # … plus sentences and their scores
    text: Figure  # JSON Lines of plain text (SFT records, eval answers, mixed records)
    record_overhead: Figure  # bytes per record beyond its tokens (ids, prompt, settings), JSONL
    memory: dict[str, Figure]  # stage -> peak RSS of its largest process, flat in the number of records
    select_bytes_per_candidate: Figure  # select's one growth: a small key per candidate
    packing_bytes_per_token: Figure  # train data preparation: one packing batch of samples in memory
    packing_batch: Figure


SIZES = RecordSizes(
    sample={
        "jsonl": Figure(
            36.8, "B/token", "measured: benchmarks/bench_records.py, 10K-token responses, 368,488 B each", True
        ),
        "parquet": Figure(5.33, "B/token", "measured: benchmarks/bench_records.py, 53,286 B per 10K tokens", True),
    },
    scored={
        "jsonl": Figure(44.9, "B/token", "measured: RESULTS 'Every stage at two sizes' (make bench-scale)", True),
        "parquet": Figure(6.32, "B/token", "measured: RESULTS 'Every stage at two sizes' (layout v2)", True),
    },
    text=Figure(
        3.82,
        "B/token",
        "measured: the DASD report's text as one JSON string over its Qwen3 tokens (86,777 B / 22,705)",
        True,
    ),
    record_overhead=Figure(
        600.0, "B/record", "assumption: ids, prompt, model, settings and finish reason of a response record"
    ),
    memory={
        "select": Figure(52 * 2**20, "B", "measured: make bench-scale, 52 MiB at 4N", True),
        "filter": Figure(1363 * 2**20, "B", "measured: make bench-scale, 1,363 MiB at N and 4N", True),
        "build-sft": Figure(562 * 2**20, "B", "measured: make bench-scale, 562 MiB at N and 4N", True),
        "train": Figure(1135 * 2**20, "B", "measured: make bench-scale, train data preparation at 4N", True),
        "push": Figure(1121 * 2**20, "B", "measured: make bench-scale, 1,121 MiB at 4N", True),
    },
    select_bytes_per_candidate=Figure(
        1649.0,
        "B/record",
        "measured: make bench-scale, select's growth N -> 4N (0.2 B/token × 8,245 tokens per candidate)",
        True,
    ),
    packing_bytes_per_token=Figure(
        70.0, "B/token", "measured: RESULTS 'Every stage at two sizes', one packing batch's bound", True
    ),
    packing_batch=Figure(1000, "samples", "TRL pack_dataset's batch (RESULTS 'Every stage at two sizes')", True),
)

# The teacher's continuation of a cut rollout, as a share of a whole teacher answer: the cut is past the middle.
CONTINUATION_SHARE = Figure(
    0.5, "x", "assumption: a continuation is at most the half of an answer after a cut past its middle (not measured)"
)

# Models that may not be on this machine: (parameters, layers, attention width) from their published configs.
KNOWN_MODELS = {
    "qwen3-4b": (4.02e9, 36, 4096),
    "qwen3-0.6b": (0.6e9, 28, 2048),
    "gpt-oss-120b": (5.1e9, 36, 4096),  # active parameters per token (116.8B in all): what a token costs
}

# Benchmarks dasd knows by name whose files may not be here: their published sizes.
KNOWN_BENCHMARKS = {
    "gpqa": (198, "published: GPQA-Diamond, 198 questions (Rein et al. 2023)"),
    "lcb:v5": (279, "assumption: LiveCodeBench v5 (2024-08..2025-02): 279 problems, as the Qwen3 report counts"),
}


# --- small pure parts ----------------------------------------------------------------------------------------------


@dataclass
class Part:
    """Records and tokens of one slice of a file (one temperature, or the whole file)."""

    records: float
    tokens: float

    @property
    def per_record(self) -> float:
        return self.tokens / self.records if self.records else 0.0


Volume = dict[Any, Part]  # temperature (or None: not split) -> Part


def total(volume: Volume) -> Part:
    """Records and tokens of a whole file.

    >>> total({0.6: Part(2, 10), 1.0: Part(3, 30)})
    Part(records=5, tokens=40)
    """
    return Part(sum(p.records for p in volume.values()), sum(p.tokens for p in volume.values()))


def scaled(volume: Volume, records: float = 1.0, tokens: float = 1.0) -> Volume:
    """Each slice with its records × `records` and its tokens × `records` × `tokens` (a share kept, a ratio).

    >>> scaled({0.6: Part(10, 100)}, records=0.5, tokens=2.0)
    {0.6: Part(records=5.0, tokens=100.0)}
    """
    return {key: Part(p.records * records, p.tokens * records * tokens) for key, p in volume.items()}


def sample_volume(questions: int, schedule: list[dict[str, Any]], tokens_per_response: dict[float, float]) -> Volume:
    """Responses and teacher tokens of `dasd sample`: questions × samples, per temperature.

    >>> sample_volume(100, [{"temperature": 0.6, "n": 4}, {"temperature": 1.0, "n": 8}], {0.6: 1000, 1.0: 2000})
    {0.6: Part(records=400, tokens=400000), 1.0: Part(records=800, tokens=1600000)}
    """
    out: Volume = {}
    for entry in schedule:
        t = float(entry["temperature"])
        records = questions * int(entry.get("n", 1))
        out[t] = Part(records, records * tokens_per_response[t])
    return out


def select_volume(
    volume: Volume,
    questions: int,
    k: dict[float, int],
    budgets: dict[float, int],
    draw_size: int | None = None,
    draws: list[int] | None = None,
    sampled: dict[float, int] | None = None,
) -> Volume:
    """What select keeps per temperature: at most k per question (per question and draw with `draw_size`: k for each
    draw in `draws`, or for every draw the `sampled` responses per question fill), at most the temperature's budget,
    at most what is there (an upper bound: it assumes every question has k candidates left after filtering).

    >>> select_volume({0.6: Part(400, 4e5), 1.0: Part(800, 1.6e6)}, 100, {0.6: 1, 1.0: 1}, {1.0: 50})
    {0.6: Part(records=100, tokens=100000.0), 1.0: Part(records=50, tokens=100000.0)}
    >>> select_volume({1.0: Part(1600, 1.6e6)}, 100, {1.0: 1}, {}, draw_size=8, draws=[0, 1])  # 16 each: 2 draws
    {1.0: Part(records=200, tokens=200000.0)}
    >>> select_volume({1.0: Part(800, 8e5)}, 100, {1.0: 1}, {}, draw_size=8, sampled={1.0: 16})  # half kept: still 2
    {1.0: Part(records=200, tokens=200000.0)}
    """
    out: Volume = {}
    for t, part in volume.items():
        per_question = k.get(t, 1)
        if draw_size and questions:  # the draws listed, or as many as the responses sampled per question fill
            filled = (sampled or {}).get(t) or part.records / questions  # (kept records undercount the draws)
            per_question *= len(draws) if draws is not None else math.ceil(filled / draw_size)
        kept = min(part.records, questions * per_question, budgets.get(t, math.inf))
        out[t] = Part(kept, kept * part.per_record)
    return out


def budget_count(budget: int | dict[str, int]) -> int:
    """A per-temperature budget: a number, or one per domain (their sum).

    >>> budget_count(105000), budget_count({"math": 200, "code": 130})
    (105000, 330)
    """
    return sum(budget.values()) if isinstance(budget, dict) else int(budget)


def disk_bytes(records: float, tokens: float, per_token: float, per_record: float = 0.0) -> float:
    """Bytes of a file: its tokens at the format's bytes per token, plus what each record carries besides.

    >>> disk_bytes(10, 1000, 6.32, 60)
    6920.0
    """
    return tokens * per_token + records * per_record


def gpu_hours(tokens: float, tokens_per_s: float) -> float:
    """GPU-hours to push `tokens` through at `tokens_per_s` per GPU.

    >>> gpu_hours(3.6e6, 1000.0)
    1.0
    """
    return tokens / tokens_per_s / 3600


def train_flops(
    params: float, tokens: float, layers: int | None, attention_width: int | None, mean_len: float
) -> float:
    """Training FLOPs: 6·N per token, plus causal attention over each packed sample (PaLM's 12·L·H·Q·T per token,
    halved: a sample attends to its own earlier tokens only).

    >>> train_flops(4e9, 1e9, None, None, 0) == 6 * 4e9 * 1e9
    True
    >>> round(train_flops(4e9, 1e9, 36, 4096, 16000) / (6 * 4e9 * 1e9), 3)
    1.59
    """
    attention = 6 * layers * attention_width * mean_len if layers and attention_width else 0.0
    return (6 * params + attention) * tokens


def train_gpu_hours(flops: float, hardware: Hardware = H100) -> float:
    """GPU-hours of `flops` at the card's bf16 peak × the assumed MFU.

    >>> round(train_gpu_hours(989e12 * 0.4 * 3600), 6)
    1.0
    """
    return flops / (hardware.peak_bf16_flops.value * hardware.mfu.value) / 3600


def scaled_rate(rate: Figure, at_params: Figure, params: float | None) -> float:
    """A measured per-GPU token rate moved to a model of `params` parameters (cost ∝ parameters per token).

    >>> scaled_rate(Figure(49126.0, "", ""), Figure(0.6e9, "", ""), 4.0e9)
    7368.9
    """
    return rate.value if not params else round(rate.value * at_params.value / params, 1)


def human(value: float | None, unit: str = "") -> str:
    """Short numbers for the table: 3 significant digits with K/M/B; unit "B" gives kB/MB/GB/TB, "iB" MiB/GiB.

    >>> human(1234), human(8.7e9), human(55e9, "B"), human(52 * 2**20, "iB"), human(None)
    ('1.23K', '8.7B', '55 GB', '52 MiB', '—')
    """
    if value is None:
        return "—"
    if unit == "iB":
        for power, name in ((40, "TiB"), (30, "GiB"), (20, "MiB"), (10, "KiB")):
            if abs(value) >= 2**power:
                return f"{value / 2**power:.3g} {name}"
        return f"{value:.3g} B"
    names = ("TB", "GB", "MB", "kB") if unit == "B" else ("T", "B", "M", "K")
    for size, name in zip((1e12, 1e9, 1e6, 1e3), names):
        if abs(value) >= size:
            return f"{value / size:.3g}" + (f" {name}" if unit == "B" else name)
    return f"{value:.3g}" + (" B" if unit == "B" else "")


# --- what is here: questions, models, measured summaries -----------------------------------------------------------


def count_questions(path: str) -> int | None:
    """Questions in a local file (lines of JSONL, rows of Parquet, or through the loader), None if it is not here."""
    file = Path(path)
    if not file.exists():
        return None
    if file.is_file() and file.name.endswith(".jsonl"):
        with file.open("rb") as handle:
            return sum(1 for line in handle if line.strip())
    from ..data.records import load_questions

    return len(load_questions(str(file)))


def model_shape(model: str) -> tuple[float | None, int | None, int | None, str]:
    """(parameters, layers, attention width, where from) of a model: its local safetensors headers and config.json,
    else a known published shape by name, else the size in its name ("…-7B"), else unknown.

    >>> model_shape("Qwen/Qwen3-4B-Instruct-2507")[:3]
    (4020000000.0, 36, 4096)
    >>> model_shape("org/Some-7B")[:3], model_shape("mystery")[:3]
    ((7000000000.0, None, None), (None, None, None))
    """
    folder = Path(model)
    if folder.is_dir() and list(folder.glob("*.safetensors")):
        params = sum(_safetensors_params(path) for path in folder.glob("*.safetensors"))
        layers = width = None
        config_file = folder / "config.json"
        if config_file.exists():
            config = json.loads(config_file.read_text())
            layers = config.get("num_hidden_layers")
            heads, head_dim = config.get("num_attention_heads"), config.get("head_dim")
            width = heads * head_dim if heads and head_dim else config.get("hidden_size")
        return float(params), layers, width, f"{folder.name}: safetensors headers and config.json"
    name = folder.name.lower()
    for known, (params, layers, width) in KNOWN_MODELS.items():
        if known in name and not re.search(re.escape(known) + r"[\d.]", name):
            return params, layers, width, f"{known}: published config"
    match = re.search(r"(\d+(?:\.\d+)?)b\b", name)
    if match:
        return float(match.group(1)) * 1e9, None, None, f"the size in its name ({match.group(0)})"
    return None, None, None, "unknown"


def _safetensors_params(path: Path) -> int:
    """Parameters in one safetensors file, from its JSON header (8-byte length, then the header) alone."""
    with path.open("rb") as handle:
        length = int.from_bytes(handle.read(8), "little")
        header = json.loads(handle.read(length))
    return sum(math.prod(entry["shape"]) for key, entry in header.items() if key != "__metadata__")


def _read(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def measured_summary(step: Step, workdir: str, pilot: str | None) -> dict[str, Any] | None:
    """The summary of a finished run of this step: in the pilot's workdir (the same path under it) when given,
    else in this run's."""
    output = step.config.get("output") or step.config.get("output_dir")
    if not output:
        return None
    path = summary_file(output, step.stage)
    if pilot:
        try:
            path = Path(pilot) / path.relative_to(workdir)
        except ValueError:
            return None
    return _read(path)


# --- one step's cost -----------------------------------------------------------------------------------------------


@dataclass
class StepCost:
    name: str
    records_in: float | None = None
    records_out: float | None = None
    tokens_in: float | None = None
    tokens_out: float | None = None
    basis: str = "bound"  # measured | expected | bound (config limits: an upper bound)
    disk: list[tuple[str, float]] = field(default_factory=list)  # (what, bytes)
    memory: str = "—"
    memory_bytes: float | None = None
    gpu_hours: float = 0.0
    gpu_note: str = ""
    cpu_hours: float = 0.0


BASES = ("bound", "expected", "measured")  # weakest first


@dataclass
class Context:
    """What the estimate of one step reads: the pipeline, the settings and the volumes of the files made so far."""

    config: PipelineConfig
    settings: CostSettings
    hardware: Hardware
    sizes: RecordSizes
    questions: int | None
    flows: dict[str, Volume] = field(default_factory=dict)  # output path -> its volume
    factors: dict[str, float] = field(default_factory=dict)  # measured ratios carried from step to step
    used: dict[str, Figure] = field(default_factory=dict)  # the figures the table used
    bases: dict[str, str] = field(default_factory=dict)  # output path -> the basis of its volume
    length_bases: dict[str, str] = field(default_factory=dict)  # output path -> the basis of its tokens per record
    trained: set[tuple[str, str]] = field(default_factory=set)  # (output_dir, stage) trained by an earlier step
    sampled_questions: int | None = None  # the questions sample answers (its `limit` applied)

    def basis(self, path: str, own: str | None = None) -> str:
        """The weaker of the input's basis and the step's own (a measured ratio on a bound volume is a bound)."""
        given = self.bases.get(path, "bound")
        return min(given, own or given, key=BASES.index)


def _hours(value: float, decimals: int) -> str:
    """Hours with `decimals` places, or two significant digits when that would print a non-zero amount as 0 (a
    small run's GPU-hours).

    >>> _hours(11065.2, 0), _hours(4454.31, 1), _hours(0.00312, 1), _hours(0.4, 0), _hours(0.0, 1)
    ('11,065', '4,454.3', '0.0031', '0.4', '0.0')
    """
    if 0 < abs(value) < 10**-decimals:
        return f"{value:.2g}"
    return f"{value:,.{decimals}f}"


def _fmt(config: dict[str, Any], key: str = "output") -> str:
    return "parquet" if str(config.get(key, "")).endswith(".parquet") else "jsonl"


def _use(ctx: Context, label: str, figure: Figure) -> float:
    ctx.used[label] = figure
    return figure.value


def _teacher_role(ctx: Context, backend: dict[str, Any]) -> bool:
    return backend.get("model") == ctx.config.teacher.model


def _decode_rate(ctx: Context, backend: dict[str, Any], teacher: bool) -> tuple[float, str]:
    """Output tokens/s per GPU for a generating backend, and how it was derived."""
    hw = ctx.hardware
    if backend.get("name") == "hf":
        _use(ctx, "hf decode", hw.student_decode_hf)
        rate = scaled_rate(hw.student_decode_hf, hw.hf_decode_params, model_shape(str(backend.get("model", "")))[0])
        return rate, f"hf decode {human(rate)} tok/s"
    factor = _use(ctx, "long answers", hw.long_answers)
    base = _use(
        ctx,
        "teacher decode" if teacher else "student decode (vLLM)",
        hw.teacher_decode if teacher else hw.student_decode_vllm,
    )
    return base * factor, f"{'teacher' if teacher else 'student'} decode {human(base * factor)} tok/s"


def _sample(ctx: Context, step: Step, resolved: dict[str, Any]) -> StepCost:
    cost = StepCost(step.name)
    questions = ctx.questions or 0
    if resolved.get("limit"):
        questions = min(questions, resolved["limit"])
    schedule = resolved["schedule"]
    summary = measured_summary(step, ctx.config.workdir, ctx.settings.pilot)
    per_response: dict[float, float] = {}
    for entry in schedule:
        t = float(entry["temperature"])
        per_response[t] = float(resolved["max_new_tokens"])
        if ctx.settings.response_tokens and t in ctx.settings.response_tokens:
            per_response[t], cost.basis = float(ctx.settings.response_tokens[t]), "expected"
    if summary and summary.get("responses_written"):
        mean = summary["completion_tokens"] / summary["responses_written"]
        per_response = dict.fromkeys(per_response, mean)  # the summary does not split tokens by temperature
        finished = summary.get("finish_reasons", {}).get("stop", 0) / summary["responses_written"]
        ctx.factors["finished"] = finished
        cost.basis = "measured"
    ctx.sampled_questions = questions
    volume = sample_volume(questions, schedule, per_response)
    out = total(volume)
    ctx.flows[resolved["output"]] = volume
    fmt = _fmt(resolved)
    cost.records_in, cost.records_out, cost.tokens_out = questions, out.records, out.tokens
    cost.disk.append(
        (
            f"responses {fmt}",
            disk_bytes(
                out.records, out.tokens, _use(ctx, f"sample {fmt}", ctx.sizes.sample[fmt]), _record_overhead(ctx, fmt)
            ),
        )
    )
    rate, note = _decode_rate(ctx, resolved["backend"], teacher=True)
    cost.gpu_hours, cost.gpu_note = gpu_hours(out.tokens, rate), note
    cost.memory = "client: not measured (streams)"
    if resolved["backend"].get("name") == "openai":  # the client parses every streamed token: CPU on this side
        per_token = _use(ctx, "client CPU", ctx.hardware.client_cpu_us_per_token)
        cost.cpu_hours = out.tokens * per_token / 1e6 / 3600
        cost.memory += f"; client CPU {cost.cpu_hours:,.0f} core-h ({1e6 / per_token:,.0f} tok/s per process)"
    return cost


def _record_overhead(ctx: Context, fmt: str) -> float:
    overhead = _use(ctx, "record overhead", ctx.sizes.record_overhead)
    return (
        overhead if fmt == "jsonl" else overhead * ctx.sizes.sample["parquet"].value / ctx.sizes.sample["jsonl"].value
    )


def _score(ctx: Context, step: Step, resolved: dict[str, Any]) -> StepCost:
    cost = StepCost(step.name)
    volume = ctx.flows.get(resolved["input"], {})
    finished = ctx.factors.get("finished", 1.0) if resolved.get("skip_unfinished") else 1.0
    scored = scaled(volume, records=finished)
    ratio = 1.0
    summary = measured_summary(step, ctx.config.workdir, ctx.settings.pilot)
    teacher_per_record = total(scored).per_record
    if summary and summary.get("records_scored") and teacher_per_record:
        ratio = summary["student_tokens_scored"] / summary["records_scored"] / teacher_per_record
        ctx.factors["student_per_teacher_token"] = ratio
    cost.basis = ctx.basis(resolved["input"])
    ctx.flows[resolved["output"]] = volume  # every record passes through (unfinished ones unscored)
    student_tokens = total(scored).tokens * ratio
    whole = total(volume)
    fmt = _fmt(resolved)
    cost.records_in = cost.records_out = whole.records
    cost.tokens_in, cost.tokens_out = whole.tokens, student_tokens
    cost.disk.append(
        (
            f"scored {fmt}",
            disk_bytes(
                whole.records,
                whole.tokens,
                _use(ctx, f"scored {fmt}", ctx.sizes.scored[fmt]),
                _record_overhead(ctx, fmt),
            ),
        )
    )
    student = resolved["student"]
    params = model_shape(str(student.get("model", "")))[0]
    rate = scaled_rate(ctx.hardware.student_prefill, ctx.hardware.prefill_params, params)
    _use(ctx, "student prefill", ctx.hardware.student_prefill)
    cost.gpu_hours, cost.gpu_note = gpu_hours(student_tokens, rate), f"prefill {human(rate)} tok/s"
    cost.memory = f"GPU: weights {human(params * ctx.hardware.weight_bytes_per_param.value, 'iB')}" if params else "—"
    return cost


def _filter(ctx: Context, step: Step, resolved: dict[str, Any]) -> StepCost:
    cost = StepCost(step.name)
    volume = ctx.flows.get(resolved["input"], {})
    summary = measured_summary(step, ctx.config.workdir, ctx.settings.pilot)
    keep = 1.0
    if summary and summary.get("records"):
        keep = summary["kept"] / summary["records"]
    cost.basis = ctx.basis(resolved["input"], "measured" if summary and summary.get("records") else "bound")
    kept = scaled(volume, records=keep)
    ctx.flows[resolved["output"]] = kept
    whole, out = total(volume), total(kept)
    fmt = _fmt(resolved)
    cost.records_in, cost.records_out, cost.tokens_in, cost.tokens_out = (
        whole.records,
        out.records,
        whole.tokens,
        out.tokens,
    )
    per_token = _use(ctx, f"scored {fmt}", ctx.sizes.scored[fmt])
    cost.disk.append((f"kept {fmt}", disk_bytes(out.records, out.tokens, per_token, _record_overhead(ctx, fmt))))
    cost.disk.append(
        (
            f"rejected {fmt}",
            disk_bytes(whole.records - out.records, whole.tokens - out.tokens, per_token, _record_overhead(ctx, fmt)),
        )
    )
    cost.cpu_hours = whole.tokens * _use(ctx, "filter CPU", ctx.hardware.filter_cpu_us_per_token) / 1e6 / 3600
    cost.memory_bytes = _use(ctx, "memory filter", ctx.sizes.memory["filter"])
    cost.memory = f"host {human(cost.memory_bytes, 'iB')} (measured, flat)"
    return cost


def _select(ctx: Context, step: Step, resolved: dict[str, Any]) -> StepCost:
    cost = StepCost(step.name)
    volume = dict(ctx.flows.get(resolved["input"], {}))
    if resolved.get("temperatures"):
        allowed = [float(t) for t in resolved["temperatures"]]
        volume = {t: p for t, p in volume.items() if any(abs(float(t) - a) < 1e-9 for a in allowed)}
    k = {t: resolved["k"] for t in volume}
    for t, value in (resolved.get("k_per_temperature") or {}).items():
        k[float(t)] = int(value)
    budgets = {float(t): budget_count(b) for t, b in (resolved.get("budget_per_temperature") or {}).items()}
    questions = ctx.sampled_questions or ctx.questions or 0
    sampled = {float(e["temperature"]): int(e.get("n", 1)) for e in (ctx.config.sample or {}).get("schedule", [])}
    kept = select_volume(volume, questions, k, budgets, resolved.get("draw_size"), resolved.get("draws"), sampled)
    if resolved.get("budget"):
        kept = scaled(kept, records=min(1.0, resolved["budget"] / max(total(kept).records, 1)))
    summary = measured_summary(step, ctx.config.workdir, ctx.settings.pilot)
    if summary and summary.get("selected") and not ctx.settings.pilot:
        kept = scaled(kept, records=summary["selected"] / max(total(kept).records, 1))  # this run's own count
        cost.basis = ctx.basis(resolved["input"], "measured")
    elif kept and all(kept[t].records == budgets.get(t) for t in kept):
        # budgets that every temperature fills: the count is the config's, whatever the filter kept; the tokens
        # per record are as good as sample's
        cost.basis = min(ctx.length_bases.get(resolved["input"], "bound"), "expected", key=BASES.index)
    else:  # k per question, assuming every question keeps k candidates: a bound
        cost.basis = ctx.basis(resolved["input"], "bound")
    ctx.flows[resolved["output"]] = kept
    whole, out = total(volume), total(kept)
    fmt = _fmt(resolved)
    cost.records_in, cost.records_out, cost.tokens_in, cost.tokens_out = (
        whole.records,
        out.records,
        whole.tokens,
        out.tokens,
    )
    cost.disk.append(
        (
            f"selected {fmt}",
            disk_bytes(
                out.records, out.tokens, _use(ctx, f"scored {fmt}", ctx.sizes.scored[fmt]), _record_overhead(ctx, fmt)
            ),
        )
    )
    flat = _use(ctx, "memory select", ctx.sizes.memory["select"])
    cost.memory_bytes = flat + whole.records * _use(ctx, "select keys", ctx.sizes.select_bytes_per_candidate)
    cost.memory = f"host {human(cost.memory_bytes, 'iB')} (measured: flat + a key per candidate)"
    return cost


def _build_sft(ctx: Context, step: Step, resolved: dict[str, Any]) -> StepCost:
    cost = StepCost(step.name)
    volume = ctx.flows.get(resolved["input"], {})
    ratio = ctx.factors.get("student_per_teacher_token", 1.0)
    student = scaled(volume, tokens=ratio)  # SFT text is counted in the student's tokens
    by_stage: dict[str, Volume] = {stage: {} for stage in SFT_STAGES}
    for t, part in student.items():
        stage = resolved.get("stage") or stage_for_temperature(
            float(t), low_temperature_max=resolved["low_temperature_max"]
        )
        by_stage.setdefault(stage, {})[t] = part
    ctx.flows[resolved["output"]] = student
    cost.basis = ctx.basis(resolved["input"])
    for stage, part_volume in by_stage.items():
        ctx.flows[str(sft_stage_file(resolved["output"], stage))] = part_volume
        ctx.bases[str(sft_stage_file(resolved["output"], stage))] = cost.basis
    out = total(student)
    cost.records_in = cost.records_out = out.records
    cost.tokens_in, cost.tokens_out = total(volume).tokens, out.tokens
    per_token = _use(ctx, "text jsonl", ctx.sizes.text)
    copies = 2 + len(resolved.get("exports") or [])  # sft.jsonl, the per-stage files, one file per export
    cost.disk.append((f"SFT jsonl ×{copies}", copies * disk_bytes(out.records, out.tokens, per_token, 200)))
    cost.memory_bytes = _use(ctx, "memory build-sft", ctx.sizes.memory["build-sft"])
    cost.memory = f"host {human(cost.memory_bytes, 'iB')} (measured, flat)"
    return cost


def _train(ctx: Context, step: Step, resolved: dict[str, Any]) -> StepCost:
    """The stages this step trains (not those an earlier step of the plan trained into the same folder: `dasd
    train` skips them), at 6·N·tokens plus attention; per-sample tokens from a finished run's summary when there
    is one (they include the prompt and the template), else the SFT records' student tokens."""
    cost = StepCost(step.name)
    params, layers, width, shape_source = model_shape(str(resolved["student"]["model"]))
    summary = measured_summary(step, ctx.config.workdir, ctx.settings.pilot) or {}
    per_sample = {
        entry["stage"]: entry["tokens_per_epoch"] / entry["samples"]
        for entry in summary.get("stages", [])
        if entry.get("samples")
    }
    trained = records = longest = flops = 0.0
    stages = [s for s in resolved["stages"] if (resolved["output_dir"], s["name"]) not in ctx.trained]
    bases = []
    for stage in stages:
        ctx.trained.add((resolved["output_dir"], stage["name"]))
        part = total(ctx.flows.get(stage["data"], {}))
        bases.append(ctx.basis(stage["data"]))
        if stage["name"] in per_sample:
            part = Part(part.records, part.records * per_sample[stage["name"]])
        epochs = stage.get("epochs") or resolved["epochs"]
        records += part.records
        trained += part.tokens * epochs
        longest = max(longest, part.per_record)
        if params:
            mean_len = min(part.per_record, resolved["max_length"])
            flops += train_flops(params, part.tokens * epochs, layers, width, mean_len)
    cost.records_in, cost.tokens_in = records, trained
    cost.basis = min(bases or ["bound"], key=BASES.index)
    if params:
        cost.gpu_hours = train_gpu_hours(flops, ctx.hardware)
        _use(ctx, "peak bf16", ctx.hardware.peak_bf16_flops)
        _use(ctx, "MFU", ctx.hardware.mfu)
        cost.gpu_note = f"{flops:.2e} FLOPs ({shape_source})"
        state = params * _use(ctx, "train state", ctx.hardware.train_state_bytes_per_param)
        weights = params * _use(ctx, "weights", ctx.hardware.weight_bytes_per_param)
        per_gpu = state / ctx.settings.train_gpus
        cost.disk.append((f"weights ×{len(stages)}", weights * len(stages)))
        cost.memory = f"GPU state {human(per_gpu, 'iB')} each on {ctx.settings.train_gpus} (+ activations)"
    else:
        cost.gpu_note = "student size unknown"
    flat = _use(ctx, "memory train", ctx.sizes.memory["train"])
    batch = min(records, _use(ctx, "packing batch", ctx.sizes.packing_batch))
    cost.memory_bytes = max(flat, batch * longest * _use(ctx, "packing B/token", ctx.sizes.packing_bytes_per_token))
    cost.memory += f"; host {human(cost.memory_bytes, 'iB')}"
    return cost


def _mix(ctx: Context, step: Step, resolved: dict[str, Any]) -> StepCost:
    """Mix works per question (one curated record each): the chosen questions get a student rollout of up to
    budget_factor × the teacher's answer, the truncated ones a teacher continuation; `off_policy` curated records
    of other questions are added. Without a summary every rollout is truncated and kept (a bound)."""
    cost = StepCost(step.name)
    volume = total(ctx.flows.get(resolved["input"], {}))
    curated = min(volume.records, ctx.sampled_questions or volume.records)
    questions = min(curated, resolved.get("questions") or curated)
    mean = volume.per_record
    student_tokens = questions * resolved["budget_factor"] * mean  # ≤: every rollout uses its whole budget
    continuations = questions * resolved.get("continuations_per_cut", 1)
    share = _use(ctx, "continuation share", CONTINUATION_SHARE)
    teacher_tokens = continuations * min(resolved["teacher_max_new_tokens"], mean * share)
    summary = measured_summary(step, ctx.config.workdir, ctx.settings.pilot)
    kept = continuations
    if summary and summary.get("rollouts"):
        kept = questions * summary.get("kept", 0) / summary["rollouts"]
    cost.basis = ctx.basis(resolved["input"], "measured" if summary and summary.get("rollouts") else "bound")
    # off-policy records come from questions without a mixed record first (all of them when there are none left)
    left = curated - kept
    off_policy = min(resolved.get("off_policy") or 0, left if left > 0 else curated)
    out = Part(kept + off_policy, (kept + off_policy) * mean)
    ctx.flows[resolved["output"]] = {None: out}
    cost.records_in, cost.records_out = questions, out.records
    cost.tokens_in, cost.tokens_out = questions * mean, student_tokens + teacher_tokens
    text = _use(ctx, "text jsonl", ctx.sizes.text)
    cost.disk.append(("mixed jsonl", disk_bytes(out.records, out.tokens, text, 200)))
    cost.disk.append(
        ("rollouts, continuations jsonl", disk_bytes(2 * questions, student_tokens + teacher_tokens, text, 200))
    )
    student_rate, _ = _decode_rate(ctx, resolved["student"], teacher=False)
    teacher_rate, _ = _decode_rate(ctx, resolved["teacher"], teacher=True)
    cost.gpu_hours = gpu_hours(student_tokens, student_rate) + gpu_hours(teacher_tokens, teacher_rate)
    cost.gpu_note = f"rollouts {human(student_tokens)} + continuations {human(teacher_tokens)} tok"
    return cost


def benchmark_size(spec: str, limit: int | None) -> tuple[int | None, str]:
    """Questions of one benchmark spec: loaded when here, else a published size; cut to `limit`.

    >>> benchmark_size("aime24", None)
    (30, 'aime24')
    >>> benchmark_size("gpqa:missing.csv", None)[0]
    198
    """
    count: int | None = None
    source = spec
    try:
        from ..data.benchmarks import load_benchmark

        count = len(load_benchmark(spec).questions)
    except Exception:  # a file that is not here, a package that is not installed: fall back to published sizes
        kind, window = spec.split(":", 1)[0], spec.rsplit(":", 1)[-1]
        known = KNOWN_BENCHMARKS.get(f"{kind}:{window}") or KNOWN_BENCHMARKS.get(kind)
        if known:
            count, source = known
    if count is not None and limit:
        count = min(count, limit)
    return count, source


def _eval(ctx: Context, step: Step, resolved: dict[str, Any]) -> StepCost:
    from ..data.benchmarks import DEFAULT_MAX_NEW_TOKENS, FALLBACK_MAX_NEW_TOKENS

    cost = StepCost(step.name)
    summary = measured_summary(step, ctx.config.workdir, ctx.settings.pilot) or {}
    measured = summary.get("benchmarks") or {}
    records = tokens = 0.0
    for spec in resolved["benchmarks"]:
        count, source = benchmark_size(spec, resolved.get("limit"))
        if count is None:
            cost.gpu_note = f"{spec}: size unknown; "
            continue
        limit = resolved.get("max_new_tokens") or DEFAULT_MAX_NEW_TOKENS.get(spec, FALLBACK_MAX_NEW_TOKENS)
        mean = float(limit)
        metrics = measured.get(spec) or (next(iter(measured.values())) if len(measured) == 1 else None)
        if metrics and metrics.get("mean_completion_tokens"):
            mean, cost.basis = float(metrics["mean_completion_tokens"]), "measured"
        if source in (known[1] for known in KNOWN_BENCHMARKS.values()):
            ctx.used[f"benchmark {spec}"] = Figure(count, "questions", source)
        records += count * resolved["n"]
        tokens += count * resolved["n"] * mean
    ctx.flows[resolved["output_dir"]] = {None: Part(records, tokens)}
    cost.records_out, cost.tokens_out = records, tokens
    cost.disk.append(("answers jsonl", disk_bytes(records, tokens, _use(ctx, "text jsonl", ctx.sizes.text), 200)))
    teacher = _teacher_role(ctx, resolved["backend"])
    rate, note = _decode_rate(ctx, resolved["backend"], teacher=teacher)
    cost.gpu_hours = gpu_hours(tokens, rate)
    cost.gpu_note += note
    return cost


def _provenance(ctx: Context, step: Step, resolved: dict[str, Any]) -> StepCost:
    cost = StepCost(step.name)
    answers = total(ctx.flows.get(resolved["outputs"], {}))
    cost.records_in, cost.tokens_in = answers.records, answers.tokens
    cost.basis = ctx.basis(resolved["outputs"])
    rate_student = ctx.hardware.student_prefill
    hours = 0.0
    for role in ("student", "distilled"):
        params = model_shape(str(resolved[role].get("model", "")))[0]
        hours += gpu_hours(answers.tokens, scaled_rate(rate_student, ctx.hardware.prefill_params, params))
    hours += gpu_hours(answers.tokens, _use(ctx, "teacher prefill", ctx.hardware.teacher_prefill))
    cost.gpu_hours, cost.gpu_note = hours, "three models score every answer"
    return cost


def _push(ctx: Context, step: Step, resolved: dict[str, Any]) -> StepCost:
    cost = StepCost(step.name, basis=ctx.basis(resolved["path"]))
    part = total(ctx.flows.get(resolved["path"], {}))
    cost.records_in = cost.records_out = part.records or None
    cost.disk.append(("Hub folder (parquet)", disk_bytes(part.records, part.tokens, ctx.sizes.scored["parquet"].value)))
    cost.memory_bytes = _use(ctx, "memory push", ctx.sizes.memory["push"])
    cost.memory = f"host {human(cost.memory_bytes, 'iB')} (measured, flat)"
    return cost


ESTIMATORS = {
    "sample": _sample,
    "score": _score,
    "filter": _filter,
    "select": _select,
    "build-sft": _build_sft,
    "train": _train,
    "mix": _mix,
    "eval": _eval,
    "provenance": _provenance,
    "push": _push,
}


def estimate(
    config: PipelineConfig,
    steps: list[Step],
    resolved: dict[str, dict[str, Any]],
    hardware: Hardware = H100,
    sizes: RecordSizes = SIZES,
) -> tuple[list[StepCost], Context]:
    """Each step's cost in plan order, and the figures used. `resolved`: each step's config as its stage validated
    it, defaults filled in (`dasd run`'s jobs hold them). The questions: `cost.questions`, else the file's count."""
    settings = config.cost
    questions = settings.questions or count_questions(config.questions)
    ctx = Context(config, settings, hardware, sizes, questions)
    costs = []
    for step in steps:
        step_config = resolved[step.name]
        cost = ESTIMATORS[step.stage](ctx, step, step_config)
        for key in ("output", "output_dir"):
            if key in step_config:
                ctx.bases[step_config[key]] = cost.basis
                # the tokens per record: sample's own, then carried through the steps that keep records whole
                source = step_config.get("input") if step.stage in ("score", "filter", "select") else None
                ctx.length_bases[step_config[key]] = ctx.length_bases.get(source, cost.basis) if source else cost.basis
        costs.append(cost)
    return costs, ctx


# --- the table -----------------------------------------------------------------------------------------------------


def _arrow(a: float | None, b: float | None) -> str:
    """A table cell: "in → out", or the one that is known.

    >>> _arrow(64, 512), _arrow(None, 3e9), _arrow(None, None)
    ('64 → 512', '3B', '—')
    """
    if a is None and b is None:
        return "—"
    if a is None or b is None:
        return human(b if a is None else a)
    return f"{human(a)} → {human(b)}"


def render_cost(
    config: PipelineConfig, steps: list[Step], resolved: dict[str, dict[str, Any]], hardware: Hardware = H100
) -> str:
    """The cost table `dasd run … dry_run=true` prints under the plan: one row per step, the totals, and every
    figure used with its source. `≤` marks an upper bound from the config's limits (see the module docstring)."""
    costs, ctx = estimate(config, steps, resolved, hardware)
    where = config.cost.pilot or config.workdir
    if ctx.questions is None:
        head = f"questions: {config.questions} is not here to count — set cost.questions to price the run"
    else:
        source = "cost.questions" if config.cost.questions else config.questions
        head = f"questions: {ctx.questions:,} ({source}); measured averages from finished steps in {where}"
    lines = [
        f"cost on {hardware.name} — {head}",
        f"{'step':22} {'basis':9} {'records in → out':19} {'tokens in → out':19} {'disk':44} {'GPU-h':>9}  "
        "peak memory per process",
    ]
    for cost in costs:
        mark = "≤" if cost.basis == "bound" else " "
        disk = ", ".join(f"{what} {human(size, 'B')}" for what, size in cost.disk) or "—"
        hours = f"{mark}{_hours(cost.gpu_hours, 1)}" if cost.gpu_hours else "—"
        lines.append(
            f"{cost.name:22} {cost.basis:9} {_arrow(cost.records_in, cost.records_out):19} "
            f"{_arrow(cost.tokens_in, cost.tokens_out):19} {disk:44} {hours:>9}  {cost.memory}"
            + (f"  [{cost.gpu_note}]" if cost.gpu_note else "")
        )
    disk_total = sum(size for cost in costs for _, size in cost.disk)
    gpu_total = sum(cost.gpu_hours for cost in costs)
    cpu_total = sum(cost.cpu_hours for cost in costs)
    peak = max((cost.memory_bytes or 0 for cost in costs), default=0)
    bound = any(cost.basis == "bound" and (cost.gpu_hours or cost.disk) for cost in costs)
    lines.append(
        f"{'total':22} {'≤' if bound else '':9} disk {human(disk_total, 'B')}, "
        f"GPU {_hours(gpu_total, 0)} h on {hardware.name}, "
        f"CPU {_hours(cpu_total, 1)} core-h (filter, openai client), largest measured host process {human(peak, 'iB')}"
    )
    lines.append(
        "figures used (measured: by dasd, in benchmarks/RESULTS.md; published: by others, not measured by dasd; "
        "ASSUMED: neither):"
    )
    for label, figure in sorted(ctx.used.items()):
        kind = "measured" if figure.measured else "published" if figure.source.startswith("published") else "ASSUMED"
        source = figure.source.removeprefix("measured: ").removeprefix("published, not measured by dasd: ")
        source = source.removeprefix("published: ").removeprefix("assumption: ")
        value = human(figure.value, "iB") if figure.unit == "B" else f"{figure.value:,.4g} {figure.unit}"
        lines.append(f"  {label:26} {value:18} {kind:9} {source}")
    return "\n".join(lines)
