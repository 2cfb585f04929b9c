"""CPU memory allocators that keep freed pages, so large activations are not mapped afresh on every pass.

glibc's ``malloc`` serves every allocation above its mmap threshold (128 KiB, adapting up to 32 MiB) with
a fresh ``mmap`` and returns it with ``munmap`` on free. A full-size VAE pass allocates activations of
tens to hundreds of MB, so each pass faults every page in again (tens of thousands of minor page faults,
seconds of kernel time on two cores). Three ways to keep the pages, from most to least effective:

* **jemalloc** (Debian/Ubuntu ``libjemalloc2``) or **tcmalloc** (``libtcmalloc-minimal4``), preloaded with
  ``LD_PRELOAD`` and told to retain memory (:data:`JEMALLOC_CONF`, :data:`TCMALLOC_ENV`). ``LD_PRELOAD``
  must be set before the process starts: the command line re-executes itself (``apdepth --allocator
  jemalloc ...``, or ``APDEPTH_ALLOCATOR=jemalloc``); library users start Python with the variables of
  :func:`preload_env`, e.g. ``env $(python -m apdepth.allocator jemalloc) python my_script.py``.
* **glibc, retained** (:func:`retain_glibc_memory`, in process, no extra library): ``mallopt`` turns off
  mmap for large blocks and raises the trim threshold, so freed blocks stay in the heap for the next pass.

``auto`` on the CPU keeps glibc's memory (``glibc-retain``) and elsewhere picks tcmalloc, then jemalloc,
when installed; on a GPU it changes nothing. None of this changes results: only where memory comes from. Measure with ``apdepth bench``
(the ``allocator`` rows: minor page faults and time of a VAE encode).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os
import sys

logger = logging.getLogger(__name__)

CHOICES = ("system", "auto", "jemalloc", "tcmalloc", "glibc-retain")
ENV_CHOICE = "APDEPTH_ALLOCATOR"  # the command line's default for --allocator
_ENV_DONE = "_APDEPTH_ALLOCATOR_EXEC"  # set on re-exec, so a missing library cannot loop

# Keep freed extents mapped (retain) and never purge their pages (decay -1), purging aside on a background
# thread. With a finite decay (even 30 s) jemalloc 5.3 still gave a freed 64 MB block's pages back before
# the next allocation of it (16k faults each time, measured); with -1 none.
JEMALLOC_CONF = "retain:true,background_thread:true,dirty_decay_ms:-1,muzzy_decay_ms:-1"
# gperftools: never give free pages back to the kernel (release rate 0).
TCMALLOC_ENV = {"TCMALLOC_RELEASE_RATE": "0"}

_LIBRARIES = {"jemalloc": ("libjemalloc.so.2", "libjemalloc.so"),
              "tcmalloc": ("libtcmalloc_minimal.so.4", "libtcmalloc.so.4", "libtcmalloc_minimal.so")}
_SEARCH_DIRS = ("/usr/lib/x86_64-linux-gnu", "/usr/lib/aarch64-linux-gnu", "/usr/lib64", "/usr/lib",
                "/usr/local/lib", "/lib/x86_64-linux-gnu", "/lib/aarch64-linux-gnu")

# mallopt parameters (glibc malloc.h)
_M_TRIM_THRESHOLD, _M_MMAP_MAX = -1, -4


def find_library(name: str) -> str | None:
    """Path of the shared library of allocator ``name`` (``jemalloc`` or ``tcmalloc``), or ``None``."""
    if name not in _LIBRARIES:
        raise ValueError(f"unknown allocator {name!r}; choose jemalloc or tcmalloc")
    prefix = os.environ.get("CONDA_PREFIX") or sys.prefix
    for directory in (os.path.join(prefix, "lib"), *_SEARCH_DIRS):
        for filename in _LIBRARIES[name]:
            path = os.path.join(directory, filename)
            if os.path.isfile(path):
                return path
    found = ctypes.util.find_library(name if name == "jemalloc" else "tcmalloc_minimal")
    return found if found and os.path.isabs(found) else None


_glibc_retained = False  # whether retain_glibc_memory() is in effect in this process


def active_allocator(maps: str = "/proc/self/maps") -> str:
    """``jemalloc`` or ``tcmalloc`` when one is loaded into this process, else ``glibc-retain`` when
    :func:`retain_glibc_memory` is in effect, else ``system``."""
    fallback = "glibc-retain" if _glibc_retained else "system"
    try:
        with open(maps) as f:
            text = f.read()
    except OSError:
        return fallback
    for name in ("jemalloc", "tcmalloc"):
        if f"lib{name}" in text:
            return name
    return fallback


def resolve(choice: str, device: str | None = None) -> str:
    """The allocator ``choice`` means here. ``auto`` on the CPU (``device`` ``None``: the CPU unless an
    NVIDIA GPU is visible): ``glibc-retain`` under glibc (measured: no page faults left, the least CPU
    time, no re-exec), else tcmalloc, else jemalloc when installed; ``system`` on GPUs (their activations
    live in the CUDA caching allocator)."""
    if choice not in CHOICES:
        raise ValueError(f"unknown allocator {choice!r}; choose one of {', '.join(CHOICES)}")
    if choice != "auto":
        return choice
    on_cpu = device.startswith("cpu") if device else not _nvidia_visible()
    if not on_cpu:
        return "system"
    if _has_glibc_mallopt():
        return "glibc-retain"
    return next((name for name in ("tcmalloc", "jemalloc") if find_library(name)), "system")


def _has_glibc_mallopt() -> bool:
    try:
        return hasattr(ctypes.CDLL("libc.so.6"), "mallopt")
    except OSError:
        return False


def _nvidia_visible() -> bool:
    if os.environ.get("CUDA_VISIBLE_DEVICES", None) in ("", "-1"):
        return False
    return os.path.exists("/dev/nvidiactl")


def preload_env(name: str, environ: dict | None = None) -> dict[str, str]:
    """The environment variables that make a new process use allocator ``name`` with retained memory."""
    library = find_library(name)
    if library is None:
        package = "libjemalloc2" if name == "jemalloc" else "libtcmalloc-minimal4"
        raise FileNotFoundError(f"allocator {name!r} is not installed (Debian/Ubuntu package {package})")
    environ = os.environ if environ is None else environ
    preload = " ".join(p for p in (library, environ.get("LD_PRELOAD", "")) if p)
    env = {"LD_PRELOAD": preload}
    if name == "jemalloc":
        env["MALLOC_CONF"] = environ.get("MALLOC_CONF") or JEMALLOC_CONF
    else:
        env.update({k: environ.get(k, v) for k, v in TCMALLOC_ENV.items()})
    return env


def retain_glibc_memory(enable: bool = True) -> bool:
    """Make glibc malloc keep freed memory in this process (no mmap per large block, no trimming).

    ``enable=False`` restores glibc's defaults (mmap for large blocks, 128 KiB trim threshold). Returns
    whether glibc accepted the settings (``False`` on other C libraries, where nothing changes).
    """
    try:
        libc = ctypes.CDLL("libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
    global _glibc_retained
    if enable:
        ok = mallopt(_M_MMAP_MAX, 0) and mallopt(_M_TRIM_THRESHOLD, 2**31 - 1)
    else:
        ok = mallopt(_M_MMAP_MAX, 65536) and mallopt(_M_TRIM_THRESHOLD, 128 * 1024)
    if ok:
        _glibc_retained = enable
    return bool(ok)


def add_argument(parser) -> None:
    """The command line's ``--allocator`` option (default: ``$APDEPTH_ALLOCATOR`` or ``system``)."""
    default = os.environ.get(ENV_CHOICE, "system")
    parser.add_argument("--allocator", choices=CHOICES, default=default if default in CHOICES else "system",
                        help="CPU memory allocator: auto (on CPU: glibc-retain, or tcmalloc/jemalloc without glibc), jemalloc, "
                             "tcmalloc (re-executes with LD_PRELOAD, memory retained), glibc-retain (glibc keeps "
                             "freed memory), system (default; or set $APDEPTH_ALLOCATOR). Same results, fewer "
                             "page faults")


def apply(choice: str, device: str | None = None, argv: list[str] | None = None) -> str:
    """Put allocator ``choice`` into effect for the command line; returns the allocator in use.

    jemalloc/tcmalloc re-execute the process (``python -m apdepth`` with ``argv``) with :func:`preload_env`;
    this happens only when ``argv`` is given (the real command line), never inside a library call.
    ``glibc-retain`` applies :func:`retain_glibc_memory` in process.
    """
    name = resolve(choice, device)
    if name == "system":
        return active_allocator()
    if name == "glibc-retain":
        if not retain_glibc_memory():
            if choice != "auto":
                logger.warning("--allocator glibc-retain: this C library has no glibc mallopt; nothing changed")
            return active_allocator()
        return name
    if active_allocator() == name:
        logger.info("memory allocator: %s (%s)", name, os.environ.get("MALLOC_CONF") or
                    " ".join(f"{k}={os.environ.get(k)}" for k in TCMALLOC_ENV))
        return name
    if argv is None or os.environ.get(_ENV_DONE):
        if choice == "auto":  # no re-exec possible: keep glibc's memory instead
            return apply("glibc-retain")
        logger.warning("allocator %s is not loaded and cannot be switched inside a running process; start "
                       "Python with: %s", name, " ".join(f"{k}={v!r}" for k, v in preload_env(name).items()))
        return active_allocator()
    try:
        env = {**os.environ, **preload_env(name), _ENV_DONE: "1"}
    except FileNotFoundError as e:
        if choice == "auto":
            return apply("glibc-retain")
        raise SystemExit(f"--allocator {choice}: {e}") from None
    logger.debug("re-executing with %s", env["LD_PRELOAD"])
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(sys.executable, [sys.executable, "-m", "apdepth", *argv], env)
    return name  # not reached


if __name__ == "__main__":  # print the variables for a shell: env $(python -m apdepth.allocator jemalloc) ...
    which = resolve(sys.argv[1] if len(sys.argv) > 1 else "auto", "cpu")
    if which in ("jemalloc", "tcmalloc"):
        print(" ".join(f"{k}={v}" for k, v in preload_env(which).items()))
