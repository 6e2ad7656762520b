"""The stage contract and the three operators: ``>>`` then, ``%`` top-k, ``|`` fusion.

Python precedence: ``%`` binds tighter than ``>>`` and ``|``, so ``bm25 % 100 >> ce``
means ``(bm25 % 100) >> ce``; ``>>`` binds tighter than ``|``, so write
``(a | b) >> c`` with parentheses when fusing before reranking.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, ClassVar

from irkit.data.types import Queries, Ranking
from irkit.errors import IrkitError

if TYPE_CHECKING:
    from irkit.data.docstore import DocStore

StageInput = Queries | Ranking


def as_input(x: object) -> StageInput:
    """Coerce what a user passes to a stage: a query string, ``{qid: text}``, Queries or Ranking."""
    if isinstance(x, Queries | Ranking):
        return x
    if isinstance(x, str):
        return Queries({"q0": x})
    if isinstance(x, Mapping):
        return Queries({str(k): v for k, v in x.items()})
    if isinstance(x, Sequence):
        return Queries({f"q{i}": t for i, t in enumerate(x)})
    raise IrkitError(f"a stage takes Queries, a Ranking, a query string or {{qid: text}}, not {type(x).__name__}")


def queries_of(x: StageInput, stage: Stage) -> Queries:
    """The queries behind a stage's input (a Ranking must carry its queries)."""
    if isinstance(x, Queries):
        return x
    if x.queries is None:
        raise IrkitError(f"{stage!r} needs query texts, but the ranking it was given carries none")
    return x.queries


def candidates_of(x: StageInput, stage: Stage) -> Ranking:
    """The candidate ranking a reranker needs; plain queries are an error."""
    if not isinstance(x, Ranking):
        raise IrkitError(
            f"{stage!r} reranks candidates but was given queries without candidates; put a retriever before it"
        )
    queries_of(x, stage)
    return x


def candidate_texts(x: StageInput, stage: Stage) -> tuple[Ranking, Queries, DocStore]:
    """Candidates plus the query texts and the DocStore a text-reading reranker needs."""
    run = candidates_of(x, stage)
    if run.docstore is None:
        raise IrkitError(
            f"{stage!r} needs document texts, but the ranking carries no docstore "
            "(retrieve from an irkit index, or attach one: ranking.docstore = DocStore(path))"
        )
    return run, queries_of(run, stage), run.docstore


class Stage:
    """Maps queries (with or without candidates) to a Ranking. Pipelines are stages too."""

    #: Registry name used by the YAML form; ``None`` for stages that have no YAML form.
    name: ClassVar[str | None] = None

    def transform(self, inp: StageInput) -> Ranking:
        raise NotImplementedError

    def __call__(self, inp: object) -> Ranking:
        return self.transform(as_input(inp))

    def search(self, query: str, k: int = 10) -> list[tuple[str, float]]:
        """Rank for one query string: ``[(docid, score), ...]``, best first."""
        docids, scores = (self % k).transform(Queries({"q0": query}))["q0"]
        return list(zip(docids, scores.tolist(), strict=True))

    def params(self) -> dict[str, Any]:
        """Keyword arguments that rebuild this stage (its YAML body)."""
        return {}

    def __rshift__(self, other: Stage) -> Then:
        return Then([self, other])

    def __mod__(self, k: int) -> TopK:
        return TopK(self, k)

    def __or__(self, other: Stage) -> Stage:
        from irkit.retrieve.fusion import Fuse

        return Fuse([self, other])

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.params().items())
        return f"{type(self).__name__}({args})"


class Then(Stage):
    """Run stages in sequence, each on the previous one's output."""

    def __init__(self, stages: list[Stage]) -> None:
        flat: list[Stage] = []
        for s in stages:
            if not isinstance(s, Stage):
                raise IrkitError(f"'>>' joins stages, got {type(s).__name__}")
            flat.extend(s.stages if isinstance(s, Then) else [s])
        self.stages = flat

    def transform(self, inp: StageInput) -> Ranking:
        out: StageInput = inp
        for s in self.stages:
            out = s.transform(out)
        if not isinstance(out, Ranking):
            raise IrkitError(f"pipeline ended with {type(out).__name__}, not a Ranking")
        return out

    def __repr__(self) -> str:
        return " >> ".join(repr(s) for s in self.stages)


class TopK(Stage):
    """Keep the best ``k`` of each query; retrievers are asked for exactly ``k``."""

    def __init__(self, stage: Stage, k: int) -> None:
        if not isinstance(k, int) or isinstance(k, bool) or k < 1:
            raise IrkitError(f"'%' takes a positive integer cutoff, got {k!r}")
        self.stage, self.k = stage, k

    def transform(self, inp: StageInput) -> Ranking:
        with_k = getattr(self.stage, "transform_k", None)
        out = with_k(inp, self.k) if with_k is not None else self.stage.transform(inp)
        return out.top_k(self.k)

    def __repr__(self) -> str:
        return f"({self.stage!r} % {self.k})"
