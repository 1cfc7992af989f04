"""Per-process state: the model cache, thread settings, devices and cache fingerprints."""

from __future__ import annotations

import functools
import importlib.metadata
import logging
import os
import sys
from collections.abc import Callable
from pathlib import Path

import xxhash
from datasets.fingerprint import Hasher

from .version import __version__

logger = logging.getLogger("u2s_hf")

_models: dict[tuple, object] = {}
_models_pid = os.getpid()
_inherited: list[dict] = []  # models copied in by fork: kept alive, never used
_threads_pid: int | None = None  # the process whose thread counts were set (a fork must set its own)
_bound_pid: int | None = None  # the worker process that asked to die with its parent
_PR_SET_PDEATHSIG = 1  # <linux/prctl.h>
_children_bound = False
_AFTER_FORK = type("AfterFork", (), {})()  # multiprocess keeps its after-fork hooks only while this object lives


def cached_model(key: tuple, load: Callable[[], object]):
    """One instance per (kind, model id, revision, dtype, device) per process.

    A forked num_proc worker inherits its parent's models but not their runtime threads: it must neither use them
    nor destroy them (onnxruntime's destructor waits forever for threads that did not survive the fork). They are
    set aside, never freed, and the worker loads its own.
    """
    global _models, _models_pid
    if os.getpid() != _models_pid:
        _inherited.append(_models)
        _models, _models_pid = {}, os.getpid()
    if key not in _models:
        logger.info("loading %s", " / ".join(str(part) for part in key))
        _models[key] = load()
    return _models[key]


def in_worker() -> bool:
    """True inside a `datasets` num_proc worker (those come from the `multiprocess` package)."""
    import multiprocessing

    parents = [multiprocessing.parent_process()]
    if "multiprocess" in sys.modules:
        parents.append(sys.modules["multiprocess"].parent_process())
    return any(p is not None for p in parents)


def exit_with_parent() -> None:
    """In a num_proc worker, ask Linux to kill this process when its parent dies (once per process).

    `datasets` workers are not told when the parent is killed (kill -9, OOM): they would keep computing, then wait
    forever. PR_SET_PDEATHSIG makes the kernel end them; a worker whose parent is already gone exits at once.
    """
    global _bound_pid
    if _bound_pid == os.getpid() or not sys.platform.startswith("linux") or not in_worker():
        return
    _bound_pid = os.getpid()
    import ctypes
    import multiprocessing
    import signal

    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    parents = [multiprocessing.parent_process()]
    if "multiprocess" in sys.modules:
        parents.append(sys.modules["multiprocess"].parent_process())
    if not any(p is not None and p.pid == os.getppid() for p in parents):
        os._exit(1)  # the parent died before the death signal was armed


def children_exit_with_parent() -> None:
    """Every `multiprocess` child started from now on in this process (the num_proc workers, and the queue manager
    `datasets` starts beside them, which runs no stage) dies with this process (see `exit_with_parent`)."""
    global _children_bound
    if _children_bound:
        return
    import multiprocess.util

    multiprocess.util.register_after_fork(_AFTER_FORK, lambda _: exit_with_parent())
    _children_bound = True


def thread_count(requested: int | None = None) -> int:
    """Threads a model may use here: all cores in the main process, one in a worker (workers share the cores)."""
    if requested:
        return requested
    return 1 if in_worker() else max(1, os.cpu_count() or 1)


def configure_threads(requested: int | None = None) -> int:
    """Set torch's thread count once per process (forked workers too), before its first op; returns the count.

    Multi-threaded torch/OpenMP in a parent followed by fork deadlocks the workers; one thread per worker avoids it.
    onnxruntime sessions get the count when they are created. OpenCV's pool is left alone: resizing it in a forked
    child waits forever for the parent's threads.
    """
    global _threads_pid
    n = thread_count(requested)
    if _threads_pid != os.getpid() and "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(n)
    _threads_pid = os.getpid()
    return n


def device_for(rank: int | None) -> str:
    """`cuda:{rank % n}` when torch sees GPUs, else CPU. Torch is only consulted if something already imported it."""
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available():
        return f"cuda:{(rank or 0) % torch.cuda.device_count()}"
    return "cpu"


@functools.lru_cache(maxsize=1)
def code_version() -> str:
    """Package version plus a hash of its source, so editing the code invalidates cached maps."""
    digest = xxhash.xxh64()
    root = Path(__file__).parent
    for path in sorted(root.rglob("*")):
        if path.suffix in (".py", ".txt") and "__pycache__" not in path.parts:
            digest.update(str(path.relative_to(root)).encode())
            digest.update(path.read_bytes())
    return f"{__version__}+{digest.hexdigest()[:12]}"


def fingerprint(*parts) -> str:
    """A `datasets` cache fingerprint that always mixes in the code version."""
    return Hasher.hash((code_version(), *parts))


def content_digest(ds, image_column: str) -> str:
    """A digest of every image's stored bytes (the Arrow buffers, nothing decoded): with the dataset's own
    fingerprint it keys the cache on the pixels actually read, not on file names and modification times."""
    digest = xxhash.xxh3_128()
    for chunk in ds.data.column(image_column).chunks:
        for buffer in (*chunk.field("bytes").buffers(), *chunk.field("path").buffers()):
            digest.update(b"\0" if buffer is None else memoryview(buffer))
    return digest.hexdigest()


def package_version(package: str) -> str:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return "missing"


def in_chunks(rows: list, size: int, run: Callable[[list], list]) -> dict:
    """{row: result} from `run` over chunks of `size` rows; a chunk that fails is retried row by row, and a row that
    still fails maps to its exception, so one bad row fails alone."""
    results = {}
    for start in range(0, len(rows), size):
        chunk = rows[start : start + size]
        try:
            results.update(zip(chunk, run(chunk), strict=True))
        except Exception:
            for row in chunk:
                try:
                    results[row] = run([row])[0]
                except Exception as exc:
                    results[row] = exc
    return results


def torch_dtype(name: str, device: str, on_gpu: str = "float16"):
    """A torch dtype by name; "auto" is `on_gpu` on CUDA and float32 on the CPU."""
    import torch

    if name == "auto":
        name = on_gpu if device.startswith("cuda") else "float32"
    return {"float16": torch.float16, "bfloat16": torch.bfloat16, "float32": torch.float32}[name]
