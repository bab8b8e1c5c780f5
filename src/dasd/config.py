"""Typed stage configs: YAML file, then `key=value` overrides; unknown keys are errors.

Each stage defines a pydantic model deriving from `StageConfig` with a description per field.
`load_config(SampleConfig, "cfg.yaml", ["backend.batch_size=8", "schedule=[{temperature: 1.0, n: 2}]"])`
merges the file and the overrides (values are parsed as YAML, dotted keys reach nested sections),
validates, and raises `ConfigError` with one line naming the field — with the closest valid key for a misspelt
one, and how to quote an override whose text YAML reads as something else (`'system_prompt="User: …"'`).
`describe_config` renders the `--help` text from the same models, so the help never drifts from the code.
"""

from __future__ import annotations

import difflib
import json
import shlex
import types
import typing
from collections.abc import Iterable
from pathlib import Path
from typing import Annotated, Any

import yaml
from pydantic import AfterValidator, BaseModel, ConfigDict, ValidationError
from pydantic.fields import FieldInfo
from pydantic_core import to_jsonable_python

from .errors import ConfigError
from .files import write_text_atomic

# Where a field stands in the fingerprint of a step that uses it (`fingerprint_view`), declared on the field with
# `Field(..., json_schema_extra=SPEED_ONLY)` or `json_schema_extra=ADDED`:
# - SPEED_ONLY: the field changes how fast or how the work is done, or where it is noted, never which records come
#   out (batch sizes whose outputs do not depend on them, concurrency, timeouts, retries, caches, progress, launch
#   settings): it is never part of a fingerprint, so changing it reuses finished work;
# - ADDED: the field was added after runs were made with its section: at its default it is left out, so a finished
#   step is not redone after an upgrade for a setting it never had (never mark a field whose default changes what
#   the stage writes). Every other field is fingerprinted as it is.
SPEED_ONLY: dict[str, Any] = {"fingerprint": "speed_only"}
ADDED: dict[str, Any] = {"fingerprint": "added"}


class StageConfig(BaseModel):
    """Base for every config section: unknown keys are rejected. Its serialized form lists every field (the
    resolved config written beside each output); what fingerprints a step is `fingerprint_view` of it."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)


def fingerprint_rule(field: FieldInfo) -> str | None:
    """The field's place in a fingerprint, as declared on it: "speed_only", "added" or None (fingerprinted)."""
    extra = field.json_schema_extra
    return extra.get("fingerprint") if isinstance(extra, dict) else None  # type: ignore[return-value]


def fingerprint_view(config: BaseModel) -> dict[str, Any]:
    """What of a config decides what its stage writes: every field, nested sections included, but SPEED_ONLY ones
    and ADDED ones at their default. The one rule behind `dasd run`'s step fingerprints and both caches' keys.

    >>> from pydantic import Field
    >>> class Section(StageConfig):
    ...     temperature: float = 0.6
    ...     batch_size: int = Field(16, json_schema_extra=SPEED_ONLY)
    ...     new_option: bool = Field(False, json_schema_extra=ADDED)
    >>> fingerprint_view(Section(batch_size=32))
    {'temperature': 0.6}
    >>> fingerprint_view(Section(new_option=True))
    {'temperature': 0.6, 'new_option': True}
    """
    view: dict[str, Any] = {}
    for name, field in type(config).model_fields.items():
        rule, value = fingerprint_rule(field), getattr(config, name)
        if rule == "speed_only" or (rule == "added" and value == field.get_default(call_default_factory=True)):
            continue
        view[name] = _view_of(value)
    return view


def _view_of(value: Any) -> Any:
    if isinstance(value, BaseModel):
        return fingerprint_view(value)
    if isinstance(value, (list, tuple)):
        return [_view_of(item) for item in value]
    if isinstance(value, dict):
        return {key: _view_of(item) for key, item in value.items()}
    return to_jsonable_python(value)


def _not_compressed(path: str) -> str:
    """A stage's record output is appended to and resumed by id (or rewritten whole under its own name): a
    gzip stream can be neither, so `*.gz` is refused with the config, before any work.

    >>> _not_compressed("runs/x/responses.jsonl")
    'runs/x/responses.jsonl'
    >>> _not_compressed("runs/x/responses.jsonl.gz")
    Traceback (most recent call last):
    ValueError: outputs are plain .jsonl or .parquet (appended to, resumed by id); compress afterwards
    """
    if path.endswith(".gz"):
        raise ValueError("outputs are plain .jsonl or .parquet (appended to, resumed by id); compress afterwards")
    return path


RecordOutput = Annotated[str, AfterValidator(_not_compressed)]  # the type of a stage's `output` of records


def _set_dotted(target: dict[str, Any], dotted: str, value: Any) -> None:
    keys = dotted.split(".")
    node = target
    for key in keys[:-1]:
        child = node.get(key)
        if not isinstance(child, dict):
            child = {}
            node[key] = child
        node = child
    node[keys[-1]] = value


def _parse_override(item: str) -> tuple[str, str, Any]:
    """`key=value` -> (key, the value's text, the value read as YAML)."""
    if "=" not in item:
        raise ConfigError(f"override {item!r}: expected key=value (e.g. backend.batch_size=8)")
    key, raw = item.split("=", 1)
    key = key.strip()
    if not key:
        raise ConfigError(f"override {item!r}: empty key")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError as exc:
        raise ConfigError(
            f"override {item!r}: the value is not valid YAML ({getattr(exc, 'problem', None) or exc}); "
            f"{quoting_hint(key, raw)}"
        ) from None
    return key, raw, value


def quoting_hint(key: str, text: str | None) -> str:
    """How to give an override a text value that YAML reads as something else (a mapping, a list, a number).

    >>> print(quoting_hint("system_prompt", "User: hi").split("e.g. ")[1])
    'system_prompt="User: hi"' (the outer quotes are for the shell)
    """
    example = shlex.quote(f"{key}={json.dumps(text if text is not None else '…', ensure_ascii=False)}")
    return f"override values are read as YAML: quote a text value, e.g. {example} (the outer quotes are for the shell)"


def parse_overrides(overrides: list[str]) -> dict[str, Any]:
    return _merged([_parse_override(item) for item in overrides])


def _merged(parsed: list[tuple[str, str, Any]]) -> dict[str, Any]:
    merged: dict[str, Any] = {}
    for key, _, value in parsed:
        _set_dotted(merged, key, value)
    return merged


def did_you_mean(word: str, choices: Iterable[str], prefix: str = "") -> str:
    """`; did you mean 'x'?` for the closest of `choices` (difflib; two letters swapped first, which difflib ranks
    below a letter dropped), or "" when none is close.

    >>> did_you_mean("batch_sise", ["batch_size", "model"], "backend.")
    "; did you mean 'backend.batch_size'?"
    >>> did_you_mean("modle", ["mode", "model"]), did_you_mean("zzz", ["batch_size"])
    ("; did you mean 'model'?", '')
    """
    close = difflib.get_close_matches(word, list(choices), n=3, cutoff=0.6)
    swapped = [choice for choice in close if sorted(choice) == sorted(word)]
    return f"; did you mean '{prefix}{(swapped or close)[0]}'?" if close else ""


def tagged_members(annotation: Any) -> dict[str, Any]:
    """The members of a discriminated union (`Annotated[Union[Annotated[Model, Tag(name)], …], Discriminator(…)]`,
    e.g. `dasd run`'s arm kinds) by tag; empty for any other annotation.

    >>> from pydantic import Discriminator, Tag
    >>> list(tagged_members(Annotated[Annotated[int, Tag("a")] | Annotated[str, Tag("b")], Discriminator(str)]))
    ['a', 'b']
    """
    if typing.get_origin(annotation) is Annotated:
        annotation = typing.get_args(annotation)[0]
    if typing.get_origin(annotation) not in (typing.Union, types.UnionType):
        return {}
    members = {}
    for member in typing.get_args(annotation):
        if typing.get_origin(member) is Annotated:
            inner, *metadata = typing.get_args(member)
            members.update({meta.tag: inner for meta in metadata if isinstance(getattr(meta, "tag", None), str)})
    return members


def _walk(model: Any, loc: tuple[Any, ...]) -> tuple[Any, tuple[Any, ...], str | None]:
    """Follow a validation error's location through `model` (nested sections, lists of them, mappings of named ones:
    `arms.<name>.…`, and a discriminated union's member, whose tag pydantic puts in the location:
    `arms.<name>.<kind>.…`): the annotation it points at (None once it leaves the models), the location as written
    (without the tags) and the last tag.

    >>> from dasd.pipeline.config import PipelineConfig
    >>> _walk(PipelineConfig, ("arms", "a", "mixed", "after"))
    (<class 'str'>, ('arms', 'a', 'after'), 'mixed')
    """
    annotation, shown, kind = model, [], None
    for part in loc:
        member = tagged_members(annotation).get(str(part))
        if member is not None:
            annotation, kind = member, str(part)
            continue
        shown.append(part)
        annotation = _section_type(annotation)
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            field = annotation.model_fields.get(str(part))
            annotation = field.annotation if field is not None else None
        elif typing.get_origin(annotation) in (dict, list, tuple):
            annotation = typing.get_args(annotation)[-1 if typing.get_origin(annotation) is dict else 0]
        else:
            annotation = None
    return annotation, tuple(shown), kind


def _fields_at(model: Any, loc: tuple[Any, ...]) -> dict[str, FieldInfo] | None:
    """The fields of the section a validation error's location points into; None when it leaves the models."""
    annotation = _section_type(_walk(model, loc)[0])
    return annotation.model_fields if isinstance(annotation, type) and issubclass(annotation, BaseModel) else None


def _keys_at(model: Any, loc: tuple[Any, ...]) -> list[str] | None:
    fields = _fields_at(model, loc)
    return None if fields is None else list(fields)


def _section_type(annotation: Any) -> Any:
    """`Section | None` -> Section (the one model of an optional or union annotation)."""
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        inner = [arg for arg in typing.get_args(annotation) if arg is not type(None)]
        models = [arg for arg in inner if isinstance(arg, type) and issubclass(arg, BaseModel)]
        return models[0] if len(models) == 1 else inner[0] if len(inner) == 1 else annotation
    return annotation


def _deep_merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _deep_merge(out[key], value)
        else:
            out[key] = value
    return out


def format_validation_error(
    error: ValidationError,
    source: str,
    model: Any = None,
    overrides: dict[str, str] | None = None,
) -> str:
    """One line for a config that does not validate: its source, the first field and what is wrong with it. Given
    the `model`, a misspelt key gets the closest valid one; a text field that got a mapping, a list or a number
    (YAML read `User: hi` as a mapping) gets how to quote it, from the override's own text when `overrides`
    (dotted key -> text) has it."""
    errors = error.errors()
    # an unknown key first: it is what was written wrong (a misspelt key also leaves a required one missing)
    first = next((e for e in errors if e["type"] == "extra_forbidden"), errors[0])
    loc = tuple(first["loc"])
    _, shown, kind = _walk(model, loc)  # the key as written: pydantic adds a union member's tag to the path
    field = ".".join(str(part) for part in shown) or "<root>"
    kinds = tagged_members(_walk(model, loc)[0]) if model is not None else {}
    if first["type"] == "extra_forbidden":
        keys = _keys_at(model, loc[:-1]) if model is not None else None
        prefix = "".join(f"{part}." for part in shown[:-1])
        suggestion = did_you_mean(str(loc[-1]), keys, prefix) if keys and loc else ""
        siblings = tagged_members(_walk(model, loc[:-2])[0]) if kind and model is not None else {}
        owners = [tag for tag, member in siblings.items() if str(loc[-1]) in member.model_fields]
        if kind and not suggestion and not owners:  # a misspelt key of another kind
            everyone = {key for member in siblings.values() for key in member.model_fields}
            suggestion = did_you_mean(str(loc[-1]), everyone, prefix)
        of_kind = f"the keys of kind {kind}: {', '.join(keys or [])}; " if kind else ""
        belongs = f" — a key of kind {' or '.join(owners)}" if owners else ""
        message = f"unknown key{belongs}{suggestion} ({of_kind}see --help for the valid keys)"
    elif kinds and isinstance(first.get("input"), dict):  # a discriminated union's tag that names no member
        written = str(first["input"].get("kind"))
        message = f"unknown kind {written!r}{did_you_mean(written, kinds)} (kinds: {', '.join(kinds)})"
    elif first["type"] == "missing":
        needed = [name for name, info in (_fields_at(model, loc[:-1]) or {}).items() if info.is_required()]
        message = "required but not given" + (f" (kind {kind} needs {', '.join(needed)})" if kind else "")
    else:
        message = first["msg"]
        value = first.get("input")
        if first["type"] == "string_type" and value is not None:  # YAML read the text as a mapping, list or number
            text = (overrides or {}).get(field, _as_text(value))
            message += f" (the value was read as {_as_yaml(value)}); {quoting_hint(field, text)}"
        elif "input" in first and not isinstance(value, (dict, list)):
            message += f" (got {value!r})"
    more = len(error.errors()) - 1
    suffix = f" (+{more} more)" if more > 0 else ""
    return f"{source}: field '{field}': {message}{suffix}"


def _as_yaml(value: Any) -> str:
    """A parsed value as YAML writes it on one line: what an override's text was read as."""
    kind = "a mapping " if isinstance(value, dict) else "a list " if isinstance(value, list) else ""
    text = yaml.safe_dump(value, default_flow_style=True, width=10_000).strip().removesuffix("...").strip()
    return f"{kind}{text}" if kind else f"{type(value).__name__} {text}"


def _as_text(value: Any) -> str | None:
    """The text a user most likely typed for a value YAML parsed (`{'User': 'hi'}` <- `User: hi`), or None.

    >>> _as_text({"User": "hi"}), _as_text(1.5), _as_text([1, 2])
    ('User: hi', '1.5', None)
    """
    if isinstance(value, dict) and len(value) == 1:
        key, item = next(iter(value.items()))
        if not isinstance(item, (dict, list)):
            return f"{key}:" if item is None else f"{key}: {item}"
    if isinstance(value, (bool, int, float)):
        return str(value)
    return None


def load_config(cls: type[StageConfig], config_path: str | None, overrides: list[str] | None = None) -> StageConfig:
    data: dict[str, Any] = {}
    source = "config"
    if config_path:
        path = Path(config_path)
        source = str(path)
        if not path.exists():
            raise ConfigError(f"{path}: config file not found")
        try:
            loaded = yaml.safe_load(path.read_text(encoding="utf-8"))
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            where = f"{path}:{mark.line + 1}" if mark else str(path)
            raise ConfigError(f"{where}: invalid YAML ({getattr(exc, 'problem', exc)})") from None
        if loaded is None:
            loaded = {}
        if not isinstance(loaded, dict):
            raise ConfigError(f"{path}: expected a mapping of keys to values at the top level")
        data = loaded
    texts: dict[str, str] = {}  # each override's text, for the error of a value YAML read as something else
    if overrides:
        parsed = [_parse_override(item) for item in overrides]
        texts = {key: raw for key, raw, _ in parsed}
        data = _deep_merge(data, _merged(parsed))
        source = f"{source} + overrides" if config_path else "overrides"
    try:
        return cls.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc, source, cls, texts)) from None


def dump_config(config: StageConfig, path: str | Path) -> None:
    """Write the resolved config (every field, defaults included) as YAML, atomically."""
    write_text_atomic(path, yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False, allow_unicode=True))


def _type_name(annotation: Any) -> str:
    origin = typing.get_origin(annotation)
    if origin is typing.Literal:
        return "|".join(str(arg) for arg in typing.get_args(annotation))
    if origin in (typing.Union, types.UnionType):
        names = [_type_name(arg) for arg in typing.get_args(annotation) if arg is not type(None)]
        optional = type(None) in typing.get_args(annotation)
        return " or ".join(names) + (" (optional)" if optional else "")
    if origin in (list, tuple):
        args = typing.get_args(annotation)
        return f"list of {_type_name(args[0])}" if args else "list"
    if origin is dict:
        return "mapping"
    if isinstance(annotation, type):
        if issubclass(annotation, BaseModel):
            return "section"
        return annotation.__name__
    return str(annotation)


def describe_config(cls: type[StageConfig], prefix: str = "", only: set[str] | None = None) -> list[str]:
    """One help line per field (nested sections expanded; `only`: just these fields): `key  type  default
    description`."""
    lines = []
    for name, field in cls.model_fields.items():
        if only is not None and name not in only:
            continue
        key = f"{prefix}{name}"
        annotation = field.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            lines.append(f"  {key}.*  — {field.description or ''}")
            lines.extend(describe_config(annotation, prefix=f"{key}."))
            continue
        if field.is_required():
            default = "REQUIRED"
        else:
            value = field.get_default(call_default_factory=True)
            if isinstance(value, BaseModel):
                value = value.model_dump(mode="json")
            elif isinstance(value, list) and value and isinstance(value[0], BaseModel):
                value = [item.model_dump(mode="json", exclude_none=True) for item in value]
            default = yaml.safe_dump(value, default_flow_style=True, width=10_000).strip()
            if default.endswith("\n..."):
                default = default[:-4]
            default = default.removesuffix("...").strip()
        lines.append(f"  {key} ({_type_name(annotation)}; default {default})\n      {field.description or ''}")
        # a mapping of named sections (the pipeline's `arms`): each name's keys, once
        arguments = typing.get_args(annotation) if typing.get_origin(annotation) is dict else ()
        if len(arguments) == 2 and isinstance(arguments[1], type) and issubclass(arguments[1], BaseModel):
            lines.extend(describe_config(arguments[1], prefix=f"{key}.<name>."))
        # … or of named sections of several kinds (the arms): each kind, with the keys no kind before it has
        members = tagged_members(arguments[1] if len(arguments) == 2 else None)
        if members:
            lines.append(
                f"  {key}.<name>.kind ({'|'.join(members)}; default: the kind the entry's keys name)\n"
                "      which kind of entry it is; each kind's own keys follow it"
            )
        seen: set[str] = {"kind"}
        for tag, member in members.items():
            fresh = {field_name for field_name in member.model_fields if field_name not in seen}
            seen |= fresh
            kind = member.model_fields.get("kind")
            lines.append(f"  {key}.<name> of kind {kind.description if kind and kind.description else tag}")
            lines.extend(describe_config(member, prefix=f"{key}.<name>.", only=fresh))
    return lines
