"""Distillation data for a cross-encoder: LLM-written queries for corpus passages, labelled by teacher rerankers.

No labelled web data exists offline, but rerankers that transfer do (SPLADE-tiny and nomic-embed,
trained on MS MARCO). Following InPars and GPL, a small LLM writes a query for each sampled
corpus passage; a first stage retrieves candidates for it; the teachers score those candidates.
A generated query is kept only if its own passage comes back near the top of the teachers' list
(Promptagator's round-trip filter), which drops the generic questions a 135M model often writes.
The student then learns the teachers' whole list, not one positive: the trainer's loss is the
cross-entropy between its scores' softmax and the teachers' (listwise KL, up to a constant).

Teachers on different scales (a SPLADE dot product, a cosine) are made comparable by standardising
each query's list (mean 0, std 1) and averaging; ``temperature`` sets how sharp the target is.
"""

from __future__ import annotations

import hashlib
import random
import re
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

import numpy as np

from irkit.errors import IrkitError
from irkit.tune.trainer import Example

if TYPE_CHECKING:
    from irkit.data.types import Ranking
    from irkit.models.llm import CausalLM
    from irkit.pipeline.stage import Stage

#: prompt kind -> (user message with ``{text}``, the reply's forced start); claims read like SciFact
#: queries, questions like web queries
PROMPTS: dict[str, tuple[str, str]] = {
    "question": ("{text}\n\nWrite one question that the text above answers. Reply with the question only.", ""),
    "claim": (
        "{text}\n\nWrite one short factual claim that the text above supports. Reply with the claim only.",
        "The text supports the claim that",
    ),
}
_GENERIC = re.compile(r"\b(the|this) (text|passage|article|study|question|answer)\b", re.I)


def clean_query(reply: str, min_words: int = 3, max_words: int = 40) -> str | None:
    """The first line and sentence of an LLM reply as a query, or None when it is unusable.

    Unusable: too short or long, or about the prompt rather than the passage ("What is the
    purpose of this text?"), which no passage answers better than another.
    """
    line = reply.strip().split("\n", 1)[0].strip().strip('"').strip()
    match = re.match(r"(.+?[.?!])(\s|$)", line)
    query = (match.group(1) if match else line).strip()
    if query.endswith(".") and not query.endswith(".."):
        query = query[:-1]
    words = query.split()
    if not min_words <= len(words) <= max_words or _GENERIC.search(query):
        return None
    return query[0].upper() + query[1:]


def prompt_kind(docid: str, kinds: Sequence[str]) -> str:
    """A stable choice of prompt kind per passage (hash of the id), so reruns ask the same thing."""
    return kinds[int(hashlib.sha256(docid.encode()).hexdigest(), 16) % len(kinds)]


def generate_queries(
    passages: Mapping[str, str],
    llm: str | CausalLM = "smollm2",
    kinds: Sequence[str] = ("question", "claim"),
    max_passage_tokens: int = 128,
    max_new_tokens: int = 40,
    cache: str | None = None,
    batch_size: int = 16,
) -> dict[str, str]:
    """One greedy LLM query per passage id (``{docid: query}``; unusable replies are left out).

    Replies go through the reply cache (:class:`irkit.reformulate.llm_cache.CachedLLM`): a rerun
    or a resumed job asks the LLM only for what is missing, and a crash loses one batch. Passages are
    cut with the LLM's own tokenizer, so the model loads even when every reply is cached (seconds).
    """
    from tqdm.auto import tqdm

    from irkit.reformulate.llm_cache import CachedLLM, Request

    unknown = [k for k in kinds if k not in PROMPTS]
    if unknown or not kinds:
        raise IrkitError(f"unknown prompt kind(s) {unknown}; known: {sorted(PROMPTS)}")
    cached = CachedLLM(llm, cache, batch_size)
    ids = list(passages)
    out: dict[str, str] = {}
    step = batch_size * 8  # progress granularity; the cache stores every batch
    for start in tqdm(range(0, len(ids), step), desc="generate queries", unit="chunk"):
        chunk = ids[start : start + step]
        requests = []
        for docid in chunk:
            template, lead = PROMPTS[prompt_kind(docid, kinds)]
            text = cached.llm.truncate(passages[docid], max_passage_tokens)
            requests.append(Request(prompt=template.format(text=text), query=f"passage:{docid}", lead=lead))
        for docid, reply in zip(chunk, cached.generate(requests, max_new_tokens), strict=True):
            query = clean_query(reply)
            if query is not None:
                out[docid] = query
    return out


def standardise(scores: np.ndarray) -> np.ndarray:
    """Scores with mean 0 and std 1 (all zeros when every score is equal)."""
    scores = np.asarray(scores, dtype=np.float64)
    std = scores.std()
    return (scores - scores.mean()) / std if std > 0 else np.zeros_like(scores)


def combine_teachers(rankings: Sequence[Ranking]) -> dict[str, dict[str, float]]:
    """Per query and document, the mean of each teacher's standardised score (teachers rank the same lists)."""
    if not rankings:
        raise IrkitError("distillation needs at least one teacher")
    out: dict[str, dict[str, float]] = {}
    for qid in rankings[0]:
        total: dict[str, float] = {}
        for r in rankings:
            if qid not in r:
                raise IrkitError(f"a teacher did not score query {qid!r}")
            docids, scores = r[qid]
            for d, s in zip(docids, standardise(scores), strict=True):
                total[d] = total.get(d, 0.0) + float(s)
        out[qid] = {d: s / len(rankings) for d, s in total.items()}
    return out


def distillation_examples(
    teacher: Mapping[str, Mapping[str, float]],
    query_text: Mapping[str, str],
    doc_text: Mapping[str, str],
    source: Mapping[str, str] | None = None,
    list_size: int = 8,
    keep_top: int = 3,
    temperature: float = 1.0,
    seed: int = 13,
) -> list[Example]:
    """One listwise example per query: the teachers' best document and ``list_size - 1`` others of its list.

    With ``source`` (query id -> the passage it was written for) a query is dropped unless that
    passage is among the teachers' ``keep_top`` (round-trip filter). Each example's ``teacher``
    holds the combined teacher scores divided by ``temperature``: the trainer's soft target.
    """
    if list_size < 2 or keep_top < 1 or temperature <= 0:
        raise IrkitError(
            f"list_size must be >= 2, keep_top >= 1 and temperature > 0, got {list_size}, {keep_top}, {temperature}"
        )
    rng = random.Random(seed)
    out = []
    for qid in sorted(teacher):
        ranked = sorted(teacher[qid].items(), key=lambda kv: -kv[1])
        if len(ranked) < list_size or qid not in query_text:
            continue
        if source is not None and source.get(qid) not in {d for d, _ in ranked[:keep_top]}:
            continue
        picked = [ranked[0], *rng.sample(ranked[1:], list_size - 1)]
        texts = [doc_text[d] for d, _ in picked]
        out.append(Example(query_text[qid], texts[0], texts[1:], teacher=[s / temperature for _, s in picked]))
    return out


def synthetic_examples(
    passages: Mapping[str, str],
    first_stage: Stage,
    teachers: Sequence[Stage],
    llm: str | CausalLM = "smollm2",
    list_size: int = 8,
    keep_top: int = 3,
    temperature: float = 1.0,
    seed: int = 13,
    cache: str | None = None,
) -> tuple[list[Example], dict[str, int]]:
    """Distillation examples from ``passages`` (``{docid: text}``): LLM queries, ``first_stage`` candidates
    (a retriever whose rankings carry the corpus's DocStore), the teachers' combined scores, the round trip.

    Returns the examples and counts of what survived each step (passages, queries, examples).
    """
    from irkit.data.docstore import DocTexts
    from irkit.data.types import Queries

    written = generate_queries(passages, llm, cache=cache)
    queries = Queries.from_pairs((f"gen-{d}", q) for d, q in written.items())
    candidates = first_stage.transform(queries)
    if candidates.docstore is None:
        raise IrkitError("the first stage's rankings carry no DocStore: the teachers cannot read the candidates")
    scores = combine_teachers([t.transform(candidates) for t in teachers])
    examples = distillation_examples(
        scores,
        dict(queries.items()),
        DocTexts(candidates.docstore),
        source={f"gen-{d}": d for d in written},
        list_size=list_size,
        keep_top=keep_top,
        temperature=temperature,
        seed=seed,
    )
    return examples, {"passages": len(passages), "queries": len(queries), "examples": len(examples)}
