"""PRP: pairwise ranking prompting (Qin et al., 2023) — an LLM judges which of two passages is more relevant.

Every pair is asked in both orders to cancel the model's position bias: a document wins
only when both answers agree; a disagreement is a tie worth 0.5 to each side.

Modes: ``scoring`` compares the log-likelihood of "Passage A" against "Passage B" after
the prompt (one batched forward pass per batch of prompts); ``generation`` starts the reply
with "Passage", decodes two tokens and parses the letter (an unparseable answer counts as a tie).

Variants over N candidates (in first-stage order); ``passes`` is how many top documents the
last two put in order:

- ``allpair``: all N(N-1)/2 pairs; a document's score is its number of wins (ties 0.5).
- ``sorting``: heapsort that stops once the top ``passes`` are extracted; the rest keep their
  first-stage order. A tie ranks the first-stage earlier document higher.
- ``sliding``: ``passes`` bubble passes from the bottom of the list to the top; pass p stops at
  position p (the top p are final) and swaps a pair only on a clear win.

``comparator`` replaces the LLM with any function ``(query, passage_a, passage_b) -> "A" | "B"``.
LLM use is counted: ``comparisons`` (pairs judged), ``llm_calls`` (prompts judged, two per
pair) and ``forward_passes`` (batched model invocations); a reranked ranking holds them per
query in ``Ranking.meta``.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from itertools import combinations
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from irkit.errors import IrkitError
from irkit.models.llm import CausalLM, load_llm
from irkit.pipeline.stage import Reranker, doc_text

if TYPE_CHECKING:
    from irkit.data.docstore import Doc

PROMPT = (
    'Given a query "{query}", which of the following two passages is more relevant to the query? '
    'Passage A: "{a}" Passage B: "{b}" Output Passage A or Passage B:'
)
MODES = ("scoring", "generation")
VARIANTS = ("allpair", "sorting", "sliding")
_ANSWER = re.compile(r"passage\s*([AB])\b|^\W*([AB])\b", re.IGNORECASE)

Judge = Callable[[list[tuple[int, int]]], list[float]]


def both_orders(ab: str, ba: str) -> float:
    """Outcome for the first document from the answers to (first, second) and (second, first)."""
    if ab == "A" and ba == "B":
        return 1.0
    if ab == "B" and ba == "A":
        return 0.0
    return 0.5


def allpair(n: int, judge: Judge) -> np.ndarray:
    """Wins of each of ``n`` documents over all others (ties count 0.5)."""
    pairs = list(combinations(range(n), 2))
    wins = np.zeros(n)
    for (i, j), o in zip(pairs, judge(pairs), strict=True):
        wins[i] += o
        wins[j] += 1.0 - o
    return wins


def _above(i: int, j: int, judge: Judge) -> bool:
    """Whether document ``i`` ranks above ``j``: a clear win, or a tie and ``i`` came first."""
    o = judge([(i, j)])[0]
    return o > 0.5 or (o == 0.5 and i < j)


def heap_top_k(n: int, k: int, judge: Judge) -> list[int]:
    """Order of ``n`` documents: the top ``k`` by heapsort, then the rest in input order."""
    heap = list(range(n))

    def sift(root: int, size: int) -> None:
        while True:
            best, left, right = root, 2 * root + 1, 2 * root + 2
            if left < size and _above(heap[left], heap[best], judge):
                best = left
            if right < size and _above(heap[right], heap[best], judge):
                best = right
            if best == root:
                return
            heap[root], heap[best] = heap[best], heap[root]
            root = best

    for root in range(n // 2 - 1, -1, -1):
        sift(root, n)
    top: list[int] = []
    for size in range(n, n - min(k, n), -1):
        top.append(heap[0])
        heap[0] = heap[size - 1]
        sift(0, size - 1)
    chosen = set(top)
    return top + [i for i in range(n) if i not in chosen]


def sliding(n: int, passes: int, judge: Judge) -> list[int]:
    """Order of ``n`` documents after ``passes`` bottom-up bubble passes (swap only on a clear win)."""
    order = list(range(n))
    for p in range(min(passes, n - 1)):
        for pos in range(n - 1, p, -1):
            if judge([(order[pos], order[pos - 1])])[0] == 1.0:
                order[pos - 1], order[pos] = order[pos], order[pos - 1]
    return order


class PRP(Reranker):
    """Rerank candidates by pairwise LLM preferences (allpair, heapsort top-k, or sliding passes)."""

    name: ClassVar[str | None] = "prp"

    def __init__(
        self,
        model: str | CausalLM = "smollm2",
        mode: str = "scoring",
        variant: str = "sliding",
        passes: int = 10,
        max_doc_tokens: int = 128,
        batch_size: int = 8,
        comparator: Callable[[str, str, str], str] | None = None,
    ) -> None:
        if mode not in MODES:
            raise IrkitError(f"PRP mode must be one of {MODES}, got {mode!r}")
        if variant not in VARIANTS:
            raise IrkitError(f"PRP variant must be one of {VARIANTS}, got {variant!r}")
        if passes < 1 or max_doc_tokens < 1 or batch_size < 1:
            raise IrkitError(
                f"passes, max_doc_tokens and batch_size must be >= 1, got {passes}, {max_doc_tokens}, {batch_size}"
            )
        self.mode, self.variant, self.passes = mode, variant, passes
        self.max_doc_tokens, self.batch_size = max_doc_tokens, batch_size
        self.comparator = comparator
        self.llm = None if comparator is not None else load_llm(model)
        if self.llm is not None and mode == "scoring":
            self._lead, self._a, self._b = self._answer_tokens(self.llm)
        #: pairs judged and prompts asked so far (per query in the ranking's ``meta``)
        self.comparisons = self.llm_calls = 0
        self._last: dict[str, Any] = {}

    def params(self) -> dict[str, Any]:
        model = "custom" if self.llm is None else self.llm.name
        return {
            "model": model,
            "mode": self.mode,
            "variant": self.variant,
            "passes": self.passes,
            "max_doc_tokens": self.max_doc_tokens,
            "batch_size": self.batch_size,
        }

    @staticmethod
    def _answer_tokens(llm: CausalLM) -> tuple[list[int], int, int]:
        """Shared lead tokens of "Passage A"/"Passage B" and the one token where they differ."""
        a, b = llm.encode("Passage A"), llm.encode("Passage B")
        c = 0
        while c < min(len(a), len(b)) and a[c] == b[c]:
            c += 1
        if len(a) != c + 1 or len(b) != c + 1:
            raise IrkitError(
                f"scoring mode needs 'Passage A'/'Passage B' to differ in one final token under "
                f"{llm.name!r}'s tokenizer; use mode='generation'"
            )
        return a[:c], a[c], b[c]

    # -- asking the LLM -------------------------------------------------------------------------

    def ask(self, prompts: list[str]) -> list[str]:
        """The answer ("A", "B" or "?") to each prompt, in batches of ``batch_size`` on the shared LLM backend."""
        assert self.llm is not None
        if self.mode == "scoring":
            logits = self.llm.next_token_logits(prompts, [self._a, self._b], self._lead, self.batch_size)
            return ["A" if a > b else "B" for a, b in logits]
        # the reply is started with "Passage" so the model only has to name the letter
        texts = self.llm.generate(prompts, max_new_tokens=2, lead="Passage", batch_size=self.batch_size)
        return [self.parse("Passage" + t) for t in texts]

    @staticmethod
    def parse(text: str) -> str:
        """ "A" or "B" from a generated answer such as "Passage B"; "?" when it names neither."""
        m = _ANSWER.search(text.strip())
        return (m.group(1) or m.group(2)).upper() if m else "?"

    def judge(self, query: str, texts: Sequence[str]) -> Judge:
        """A pair judge for one query: ``[(i, j)] -> [outcome for i]``, asking both orders, memoised."""
        seen: dict[tuple[int, int], float] = {}

        def run(pairs: list[tuple[int, int]]) -> list[float]:
            todo = [p for p in dict.fromkeys(pairs) if p not in seen and p[::-1] not in seen]
            prompts = []
            for i, j in todo:
                prompts.append(PROMPT.format(query=query, a=texts[i], b=texts[j]))
                prompts.append(PROMPT.format(query=query, a=texts[j], b=texts[i]))
            if self.comparator is not None:
                answers = [self.comparator(query, texts[a], texts[b]) for i, j in todo for a, b in ((i, j), (j, i))]
            else:
                answers = self.ask(prompts)
            self.comparisons += len(todo)
            self.llm_calls += len(prompts)
            for n, pair in enumerate(todo):
                seen[pair] = both_orders(answers[2 * n], answers[2 * n + 1])
            return [seen[p] if p in seen else 1.0 - seen[p[::-1]] for p in pairs]

        run.seen = seen  # type: ignore[attr-defined]  # the outcomes so far, for query_meta
        return run

    # -- ranking ----------------------------------------------------------------------------------

    def _calls(self) -> tuple[int, int, int]:
        return self.comparisons, self.llm_calls, self.llm.forward_passes if self.llm is not None else 0

    def query_meta(self) -> dict[str, Any]:
        """Pairs judged, prompts and forward passes of the last ranked query, and each pair's outcome."""
        return self._last

    def score(self, query: str, docs: Sequence[Doc | str]) -> np.ndarray:
        """PRP scores of ``docs`` (in input order); higher ranks first."""
        texts = [doc_text(d) for d in docs]
        if self.llm is not None:
            texts = [self.llm.truncate(t, self.max_doc_tokens) for t in texts]
        n = len(texts)
        before = self._calls()
        judge = self.judge(query, texts)
        if self.variant == "allpair":
            scores = allpair(n, judge)
        else:
            order = heap_top_k(n, self.passes, judge) if self.variant == "sorting" else sliding(n, self.passes, judge)
            scores = np.zeros(n)
            scores[order] = np.arange(n, 0, -1, dtype=np.float64)
        spent = (a - b for a, b in zip(self._calls(), before, strict=True))
        self._last = dict(zip(("comparisons", "llm_calls", "forward_passes"), spent, strict=True))
        self._last["outcomes"] = [[i, j, o] for (i, j), o in judge.seen.items()]  # type: ignore[attr-defined]
        return scores
