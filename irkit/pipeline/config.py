"""Pipelines as YAML files: a registry of stage names, a validating loader and a writer.

The YAML form has no precedence trap: a pipeline is a list of steps run in order,
and ``top_k`` cuts the output of the step it sits in.

```yaml
pipeline:
  - fuse: rrf                     # or linear (min-max normalised), with weights: [...]
    of:
      - {bm25: {index: indexes/scifact-bm25}, top_k: 100}
      - {dense: {index: indexes/scifact-minilm}, top_k: 100}
  - {cross_encoder: {}, top_k: 20}
```

A step is one of ``{<stage name>: {params}}``, ``{fuse: rrf|linear, of: [steps], k: 60,
weights: [...]}`` or ``{pipeline: [steps]}`` (a nested pipeline), each with an optional
``top_k``. Stage parameters are checked against the stage's constructor (names and type
hints) before anything is built, and every error names the file and the YAML path,
e.g. ``pipeline[1].cross_encoder.top_k``.
"""

from __future__ import annotations

import importlib
import inspect
import itertools
import math
import types
import typing
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import yaml

from irkit.errors import IrkitError
from irkit.pipeline.operators import METHODS, Fuse, Then, TopK, check_neighbours
from irkit.pipeline.stage import Kind, Stage

# stage name -> "module:Class" (imported on first use) or the class; a new stage registers with one line here
STAGES: dict[str, str | type[Stage]] = {
    "bm25": "irkit.retrieve.bm25:BM25",
    "dense": "irkit.retrieve.dense:Dense",
    "run_file": "irkit.retrieve.run_file:RunFile",
    "cur": "irkit.retrieve.cur:CURRetriever",
    "splade_index": "irkit.retrieve.splade:SpladeRetriever",
    "cross_encoder": "irkit.rerank.cross_encoder:CrossEncoder",
    "bi_encoder": "irkit.rerank.bi_encoder:BiEncoderReranker",
    "icr": "irkit.rerank.icr:ICR",
    "prp": "irkit.rerank.prp:PRP",
    "splade": "irkit.rerank.splade:SpladeReranker",
    "interpolate": "irkit.pipeline.operators:Interpolate",
    "gencrf": "irkit.reformulate.gencrf:GenCRF",
    "query2doc": "irkit.reformulate.query2doc:Query2Doc",
    "hyde": "irkit.reformulate.hyde:HyDE",
    "multi_query": "irkit.reformulate.multi_query:MultiQuery",
    "cosine_filter": "irkit.filter.cosine_adapter:CosineFilter",
}

_FUSE_KEYS = {"fuse", "of", "k", "weights", "top_k"}


def register(name: str, target: str | type[Stage]) -> None:
    """Add a stage name for YAML pipelines: ``target`` is ``"module:Class"`` or the Stage class."""
    if isinstance(target, str) and ":" not in target:
        raise IrkitError(f"stage target must be 'module:Class', got {target!r}")
    if not isinstance(target, str) and not (isinstance(target, type) and issubclass(target, Stage)):
        raise IrkitError(f"stage target must be 'module:Class' or a Stage subclass, got {target!r}")
    STAGES[name] = target


def stage_class(name: str) -> type[Stage]:
    """The class registered under ``name`` (imports its module)."""
    target = STAGES.get(name)
    if target is None:
        raise IrkitError(f"unknown stage {name!r}; known stages: {', '.join(sorted([*STAGES, 'fuse', 'pipeline']))}")
    if not isinstance(target, str):
        return target
    module, cls = target.split(":")
    try:
        return getattr(importlib.import_module(module), cls)
    except (ImportError, AttributeError) as e:
        raise IrkitError(f"stage {name!r} is registered as {target!r}, which cannot be imported ({e})") from None


class _Ctx:
    """Where we are while loading: the file and its composed YAML tree, for line numbers."""

    def __init__(self, file: str | None, root: yaml.Node | None) -> None:
        self.file, self.root = file, root

    def error(self, where: tuple[str | int, ...], message: str) -> IrkitError:
        return IrkitError(f"{_fmt(where)}: {message}", path=self.file, line=self._line(where))

    def _line(self, where: tuple[str | int, ...]) -> int | None:
        node, line = self.root, None
        for key in where:
            if isinstance(node, yaml.MappingNode):
                node = next((v for k, v in node.value if k.value == key), None)
            elif isinstance(node, yaml.SequenceNode) and isinstance(key, int) and key < len(node.value):
                node = node.value[key]
            else:
                node = None
            if node is None:
                break
            line = node.start_mark.line + 1
        return line


def _fmt(where: tuple[str | int, ...]) -> str:
    out = ""
    for key in where:
        out += f"[{key}]" if isinstance(key, int) else (f".{key}" if out else str(key))
    return out


def load_pipeline(source: str | Path | Mapping[str, Any]) -> Stage:
    """Build the stage a YAML pipeline describes: a file path, YAML text, or the parsed dict."""
    return plan_pipeline(source)()


def plan_pipeline(source: str | Path | Mapping[str, Any]) -> Plan:
    """Validate a YAML pipeline without building it: no index is opened and no model loads."""
    file, root = None, None
    if isinstance(source, Mapping):
        data: Any = source
    else:
        text = str(source)
        if isinstance(source, Path) or ("\n" not in text and (text.endswith((".yaml", ".yml")) or _is_file(text))):
            file = str(source)
            text = _read_yaml_text(Path(source))
        root, data = _parse_yaml(text, file)
    ctx = _Ctx(file, root)
    if not isinstance(data, Mapping) or set(data) != {"pipeline"}:
        raise ctx.error((), "a pipeline file is a mapping with the single key 'pipeline' (a list of steps)")
    # the whole file is validated before anything is built: a typo in the last step fails before any model loads
    return _steps(data["pipeline"], ("pipeline",), ctx)


class Plan:
    """A validated step not yet built: what it consumes and produces are known before any model loads."""

    def __init__(self, build: Callable[[], Stage], consumes: Kind, produces: Kind, label: str) -> None:
        self.build, self.consumes, self.produces, self.label = build, consumes, produces, label

    def __call__(self) -> Stage:
        return self.build()

    def __str__(self) -> str:
        return self.label


def _steps(steps: Any, where: tuple[str | int, ...], ctx: _Ctx) -> Plan:
    if not isinstance(steps, list) or not steps:
        raise ctx.error(where, "expected a non-empty list of steps")
    plans = [_step(s, (*where, i), ctx) for i, s in enumerate(steps)]
    for i, (a, b) in enumerate(itertools.pairwise(plans)):
        try:
            check_neighbours(a, a.produces, b, b.consumes)
        except IrkitError as e:
            raise ctx.error((*where, i + 1), str(e)) from None
    if len(plans) == 1:
        return plans[0]
    label = " >> ".join(str(p) for p in plans)
    return Plan(lambda: Then([p() for p in plans]), plans[0].consumes, plans[-1].produces, label)


def _step(step: Any, where: tuple[str | int, ...], ctx: _Ctx) -> Plan:
    if not isinstance(step, Mapping):
        raise ctx.error(where, f"a step is a mapping like {{bm25: {{...}}, top_k: 100}}, got {_tname(step)}")
    if "fuse" in step:
        plan = _fuse(step, where, ctx)
    else:
        names = [k for k in step if k != "top_k"]
        if len(names) != 1:
            raise ctx.error(where, f"a step names exactly one stage (plus optional top_k), got keys {list(step)}")
        name = names[0]
        if name == "pipeline":
            plan = _steps(step[name], (*where, name), ctx)
        else:
            plan = _build(name, step[name], (*where, name), ctx)
    if "top_k" not in step:
        return plan
    k = step["top_k"]
    if not isinstance(k, int) or isinstance(k, bool) or not 1 <= k < 2**31:
        raise ctx.error((*where, "top_k"), f"expected a positive integer below 2**31, got {k!r}")
    if plan.produces != "ranking":
        raise ctx.error((*where, "top_k"), f"top_k cuts rankings, but {plan} produces {plan.produces}")
    return Plan(lambda: TopK(plan(), k), plan.consumes, "ranking", f"{plan} % {k}")


def _fuse(step: Mapping[str, Any], where: tuple[str | int, ...], ctx: _Ctx) -> Plan:
    extra = set(step) - _FUSE_KEYS
    if extra:
        key = sorted(extra)[0]
        raise ctx.error((*where, key), f"unknown key for a fuse step (allowed: {', '.join(sorted(_FUSE_KEYS))})")
    method = step["fuse"]
    if method not in METHODS:
        raise ctx.error((*where, "fuse"), f"unknown fusion method {method!r}; choose one of {', '.join(METHODS)}")
    of = step.get("of")
    if not isinstance(of, list) or len(of) < 2:
        raise ctx.error((*where, "of"), "fuse needs a list 'of' at least two steps")
    plans = [_step(s, (*where, "of", i), ctx) for i, s in enumerate(of)]
    for i, p in enumerate(plans):
        if p.produces != "ranking" or p.consumes != plans[0].consumes:
            raise ctx.error((*where, "of", i), f"fuse runs its steps on one input and fuses rankings; {p} does not fit")
    kwargs: dict[str, Any] = {"method": method}
    if "k" in step:
        _check(step["k"], int, (*where, "k"), ctx)
        if step["k"] < 0:
            raise ctx.error((*where, "k"), f"expected a non-negative integer, got {step['k']!r}")
        kwargs["k"] = step["k"]
    if "weights" in step:
        _check(step["weights"], list[float], (*where, "weights"), ctx)
        if len(step["weights"]) != len(plans):
            raise ctx.error((*where, "weights"), f"{len(step['weights'])} weights for {len(plans)} steps")
        if not all(math.isfinite(w) for w in step["weights"]):
            raise ctx.error((*where, "weights"), f"weights must be finite numbers, got {step['weights']!r}")
        kwargs["weights"] = [float(w) for w in step["weights"]]
    label = f"fuse({', '.join(str(p) for p in plans)})"
    return Plan(lambda: Fuse([p() for p in plans], **kwargs), plans[0].consumes, "ranking", label)


def _build(name: str, params: Any, where: tuple[str | int, ...], ctx: _Ctx) -> Plan:
    if name not in STAGES:
        raise ctx.error(
            where, f"unknown stage {name!r}; known stages: {', '.join(sorted([*STAGES, 'fuse', 'pipeline']))}"
        )
    if params is None:
        params = {}
    if not isinstance(params, Mapping):
        raise ctx.error(where, f"stage parameters must be a mapping, got {_tname(params)}")
    cls = stage_class(name)
    sig = inspect.signature(cls.__init__)
    accepted = {p.name: p for p in list(sig.parameters.values())[1:] if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)}
    try:
        hints = typing.get_type_hints(cls.__init__)
    except Exception:  # hints naming TYPE_CHECKING-only types: check names but not types
        hints = {}
    for key, value in params.items():
        if key not in accepted:
            raise ctx.error((*where, str(key)), f"unknown parameter for {name} (accepted: {', '.join(accepted)})")
        if key in hints:
            _check(value, hints[key], (*where, key), ctx)
    missing = [p for p, v in accepted.items() if v.default is inspect.Parameter.empty and p not in params]
    if missing:
        raise ctx.error(where, f"{name} needs parameter(s) {', '.join(missing)}")

    def build() -> Stage:
        try:
            return cls(**params)
        except IrkitError as e:
            raise ctx.error(where, str(e)) from None

    return Plan(build, cls.consumes, cls.produces, name)


def _check(value: Any, hint: Any, where: tuple[str | int, ...], ctx: _Ctx) -> None:
    if not _matches(value, hint):
        raise ctx.error(where, f"expected {_hname(hint)}, got {_tname(value)} {value!r}")


def _matches(value: Any, hint: Any) -> bool:
    """Does a YAML value fit a constructor type hint? (the subset YAML can express)"""
    origin = typing.get_origin(hint)
    if hint is Any or hint is object:
        return True
    if origin in (typing.Union, types.UnionType):
        return any(_matches(value, h) for h in typing.get_args(hint))
    if hint is type(None):
        return value is None
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is float:
        return isinstance(value, int | float) and not isinstance(value, bool)
    if hint is Path:
        return isinstance(value, str)
    if origin in (list, tuple) or hint in (list, tuple):
        args = typing.get_args(hint)
        return isinstance(value, list) and (not args or all(_matches(v, args[0]) for v in value))
    if origin is dict or hint is dict or origin is Mapping:
        return isinstance(value, Mapping)
    if origin is typing.Literal:
        return value in typing.get_args(hint)
    return isinstance(value, hint) if isinstance(hint, type) else True


def _hname(hint: Any) -> str:
    return getattr(hint, "__name__", None) or str(hint).replace("typing.", "")


def _tname(value: Any) -> str:
    return {dict: "a mapping", list: "a list", str: "a string", type(None): "nothing"}.get(
        type(value), type(value).__name__
    )


def to_dict(stage: Stage) -> dict[str, Any]:
    """The YAML form of a pipeline, as plain data: ``{"pipeline": [steps]}``."""
    steps = stage.stages if isinstance(stage, Then) else [stage]
    return {"pipeline": [_to_step(s) for s in steps]}


def dump_yaml(spec: Mapping[str, Any]) -> str:
    """Pipeline YAML text: each step one flow mapping on its own line, however long its paths
    (PyYAML would otherwise wrap lines at 80 columns)."""
    return yaml.safe_dump(dict(spec), sort_keys=False, default_flow_style=None, width=math.inf)


def to_yaml(stage: Stage, path: str | Path | None = None) -> str:
    """Write a Python pipeline as YAML (to ``path`` atomically when given); returns the text."""
    text = dump_yaml(to_dict(stage))
    if path is not None:
        from irkit.data.io import atomic_path

        with atomic_path(path) as tmp:
            tmp.write_text(text, encoding="utf-8")
    return text


def _to_step(stage: Stage) -> dict[str, Any]:
    if isinstance(stage, TopK):
        step = _to_step(stage.stage)
        return {**step, "top_k": stage.k} if "top_k" not in step else {"pipeline": [step], "top_k": stage.k}
    if isinstance(stage, Then):
        return {"pipeline": [_to_step(s) for s in stage.stages]}
    if isinstance(stage, Fuse):
        p = stage.params()
        step: dict[str, Any] = {"fuse": p.pop("method"), "of": [_to_step(s) for s in stage.stages]}
        return {**step, **p}
    name = type(stage).name
    cls = type(stage)
    if name is None or STAGES.get(name) not in (f"{cls.__module__}:{cls.__name__}", cls):
        raise IrkitError(f"{type(stage).__name__} has no YAML form: register it in irkit.pipeline.config.STAGES")
    return {name: _plain(stage.params())}


def _plain(params: dict[str, Any]) -> dict[str, Any]:
    """Parameters as YAML-safe values (paths become strings)."""
    return {k: str(v) if isinstance(v, Path) else v for k, v in params.items()}


def _is_file(text: str) -> bool:
    try:
        return Path(text).is_file()
    except (OSError, ValueError):  # too long, or not a path at all
        return False


def _read_yaml_text(path: Path) -> str:
    """A pipeline file's text: UTF-8 (a leading byte-order mark is dropped); errors name the file and line."""
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise IrkitError(f"cannot read pipeline ({e.strerror})", path=path) from None
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = raw[: e.start].count(b"\n") + 1
        raise IrkitError(f"not valid UTF-8 ({e.reason} at byte {e.start})", path=path, line=line) from None


MAX_DEPTH = 50  # nesting a pipeline never needs; deeper input would only exhaust the parser's recursion
_PLAIN_TAGS = {f"tag:yaml.org,2002:{t}" for t in ("str", "int", "float", "bool", "null", "seq", "map")}


def _parse_yaml(text: str, file: str | None) -> tuple[yaml.Node | None, Any]:
    """The composed tree and the data of pipeline YAML, refusing in one linear pass what a pipeline never
    needs and hostile input uses: anchors and aliases (an alias bomb expands exponentially), explicit tags
    (``!!int abc``), nesting deeper than ``MAX_DEPTH``, keys that are not strings, duplicate keys, and
    implicit types other than strings, numbers, booleans and null (``2001-13-45`` would be a date)."""

    def error(message: str, mark: Any) -> IrkitError:
        return IrkitError(f"not valid YAML: {message}", path=file, line=mark.line + 1 if mark is not None else None)

    try:
        depth = 0
        for event in yaml.parse(text, Loader=yaml.SafeLoader):
            if isinstance(event, yaml.AliasEvent) or getattr(event, "anchor", None) is not None:
                raise error("anchors and aliases (&name, *name) are not allowed in a pipeline", event.start_mark)
            if getattr(event, "tag", None) is not None:
                raise error(f"tags ({event.tag}) are not allowed in a pipeline", event.start_mark)
            if isinstance(event, yaml.CollectionStartEvent):
                depth += 1
                if depth > MAX_DEPTH:
                    raise error(f"nested deeper than {MAX_DEPTH} levels", event.start_mark)
            elif isinstance(event, yaml.CollectionEndEvent):
                depth -= 1
        loader = yaml.SafeLoader(text)
        try:
            root = loader.get_single_node()
            _check_nodes(root, error)
            return root, (loader.construct_document(root) if root is not None else None)
        finally:
            loader.dispose()
    except yaml.YAMLError as e:
        reason = " ".join(str(getattr(e, "problem", None) or e).split())
        raise error(reason, getattr(e, "problem_mark", None)) from None
    except ValueError as e:  # a scalar that resolves to a number but does not convert (0b_)
        raise error(str(e), None) from None


def _check_nodes(root: yaml.Node | None, error: Callable[[str, Any], IrkitError]) -> None:
    stack = [root] if root is not None else []
    while stack:
        node = stack.pop()
        if node.tag not in _PLAIN_TAGS:
            raise error(f"{node.value!r} is not a string, number, boolean or null (quote it)", node.start_mark)
        if isinstance(node, yaml.MappingNode):
            seen: set[str] = set()
            for key, value in node.value:
                if not isinstance(key, yaml.ScalarNode) or key.tag != "tag:yaml.org,2002:str":
                    raise error("a mapping key must be a name (a string)", key.start_mark)
                if key.value in seen:
                    raise error(f"duplicate key {key.value!r}", key.start_mark)
                seen.add(key.value)
                stack.append(value)
        elif isinstance(node, yaml.SequenceNode):
            stack.extend(node.value)
