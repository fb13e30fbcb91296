"""The fused CPU selective scan: build (once per machine, cached), load, and the autograd-aware entry point.

The kernel is ``_selective_scan_cpu.cpp`` next to this file: the bare S6 recurrence ``h_t = exp(delta_t A) h_{t-1}
+ delta_t u_t B_t``, ``y_t = C_t . h_t`` with a recomputing reverse-time backward (see the C++ file's header). It is
compiled on first use with ``torch.utils.cpp_extension`` (gcc or clang, and ninja: ``pip install
'tricklab[fast]'`` brings ninja; the ``test`` extra has it too) and registered with the dispatcher as
``torch.ops.tricklab.selective_scan_fwd`` / ``selective_scan_bwd`` (no Python headers needed). Autograd and a
fake (meta) implementation are registered with ``torch.library``, so the op works under autograd and
``torch.compile``.

Cache. The shared library is stored as ``<cache>/selective_scan_<key>.so``, ``<cache>`` =
``$TRICKLAB_CACHE_DIR/extensions`` or ``$XDG_CACHE_HOME/tricklab/extensions`` (default ``~/.cache/...``), and
``<key>`` a hash of the source, the compiler flags, torch's and Python's versions and the CPU's instruction-set
flags (the build uses ``-march=native``). A process that finds the file loads it directly: no compiler, no ninja,
no output. Building is serialised across processes by an ``fcntl.flock`` on ``<cache>/selective_scan_<key>.lock``
(released by the kernel if the builder dies, unlike cpp_extension's own lock file, which a killed build leaves
behind and every later process then waits on forever); the finished library is published with an atomic rename,
so a reader never sees half a file.

Failure. If the build fails (no compiler, no ninja, read-only cache), :func:`load` raises
:class:`FusedScanUnavailable` with the reason, and the reason is kept: the build is not retried in this process.
``selective_scan(impl="auto")`` then falls back to the chunked path with ONE warning per process;
``impl="fused"`` raises.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import platform
import shutil
import sys
import tempfile
import warnings
from collections.abc import Iterator
from pathlib import Path

import torch
from torch import Tensor

__all__ = ["FusedScanUnavailable", "cache_dir", "fused_available", "fused_chunk_size", "fused_scan", "fused_step",
           "load", "warn_fallback_once"]

SOURCE = Path(__file__).with_name("_selective_scan_cpu.cpp")
_CFLAGS = ("-O3", "-march=native", "-fopenmp")
_LDFLAGS = ("-fopenmp",)  # the OpenMP runtime resolves to the libgomp torch has already loaded (same soname)
_NAME = "selective_scan"

# Per-process state: the outcome of the first load attempt and whether the fallback warning was shown.
_STATE: dict[str, object] = {"loaded": False, "error": None, "warned": False}


class FusedScanUnavailable(RuntimeError):
    """The fused selective-scan kernel could not be built or loaded; the message says why and what to do."""


def cache_dir() -> Path:
    """Where compiled extensions are kept: ``$TRICKLAB_CACHE_DIR/extensions``, else
    ``$XDG_CACHE_HOME/tricklab/extensions``, else ``~/.cache/tricklab/extensions``."""
    root = os.environ.get("TRICKLAB_CACHE_DIR")
    if root:
        return Path(root).expanduser() / "extensions"
    xdg = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(xdg).expanduser() / "tricklab" / "extensions"


def _cpu_signature() -> str:
    """The CPU's instruction-set flags (``-march=native`` compiles for them), else the processor name."""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith(("flags", "Features")):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def build_key() -> str:
    """Hash of everything the compiled library depends on (16 hex digits)."""
    h = hashlib.sha256()
    for part in (SOURCE.read_bytes(), repr(_CFLAGS + _LDFLAGS).encode(), torch.__version__.encode(),
                 sys.version.encode(), platform.machine().encode(), _cpu_signature().encode()):
        h.update(part)
        h.update(b"\0")
    return h.hexdigest()[:16]


@contextlib.contextmanager
def _build_lock(path: Path) -> Iterator[None]:
    """Exclusive inter-process lock held while building (the kernel drops it if the holder dies)."""
    try:
        import fcntl
    except ImportError:  # not POSIX: rely on cpp_extension's own lock file
        yield
        return
    with open(path, "a+b") as fh:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


def _ninja_dir() -> str | None:
    """Folder holding a ninja executable: on PATH, else the ``ninja`` pip package's (a venv's bin, which is not on
    PATH when the venv's python is run without activating it)."""
    found = shutil.which("ninja")
    if found:
        return str(Path(found).parent)
    try:
        import ninja  # type: ignore[import-not-found]
    except ImportError:
        return None
    bin_dir = getattr(ninja, "BIN_DIR", None)
    if bin_dir and shutil.which("ninja", path=bin_dir):
        return str(bin_dir)
    return None


def _compile(so_path: Path, build_dir: Path) -> None:
    """Compile the source into ``build_dir`` with cpp_extension (which also loads it into this process), then
    publish a copy at ``so_path`` atomically. Caller holds the build lock."""
    from torch.utils import cpp_extension

    compiler = os.environ.get("CXX", "c++")  # what cpp_extension runs
    if shutil.which(compiler) is None:
        raise FusedScanUnavailable(f"no C++ compiler: {compiler!r} is not on PATH (Debian/Ubuntu: apt-get install g++)")
    ninja_dir = _ninja_dir()
    if ninja_dir is None:
        raise FusedScanUnavailable("ninja is not installed (pip install 'tricklab[fast]' or pip install ninja)")
    build_dir.mkdir(parents=True, exist_ok=True)
    # a lock file left by a killed cpp_extension build would make load() wait forever; we hold the real lock
    (build_dir / "lock").unlink(missing_ok=True)
    print(f"tricklab: compiling the fused selective-scan kernel (once; about 30 s; cached in {so_path.parent})",
          file=sys.stderr, flush=True)
    old_path = os.environ.get("PATH", "")
    if ninja_dir not in old_path.split(os.pathsep):
        os.environ["PATH"] = ninja_dir + os.pathsep + old_path  # cpp_extension runs "ninja" from PATH
    try:
        built = cpp_extension.load(name=so_path.stem, sources=[str(SOURCE)],
                                   extra_cflags=list(_CFLAGS), extra_ldflags=list(_LDFLAGS),
                                   build_directory=str(build_dir), is_python_module=False, verbose=False)
    finally:
        os.environ["PATH"] = old_path
    fd, tmp = tempfile.mkstemp(dir=so_path.parent, prefix=so_path.name, suffix=".tmp")
    os.close(fd)
    try:
        shutil.copyfile(str(built), tmp)
        os.replace(tmp, so_path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _register_python_side() -> None:
    """Autograd formula and fake (shape-only) kernels for the C++ ops, once per process after loading."""

    @torch.library.register_fake("tricklab::selective_scan_fwd")
    def _fwd_fake(u: Tensor, delta: Tensor, A: Tensor, B: Tensor, C: Tensor, D: Tensor | None, z: Tensor | None,
                  delta_bias: Tensor | None, h0: Tensor, delta_softplus: bool, chunk: int,
                  save: bool) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        b, d, length = u.shape
        n = A.shape[1]
        lanes = 64 // u.element_size()  # the kernel pads N to whole 64-byte vectors (kVecBytes in the C++)
        ck = u.new_empty((b, d, -(-length // chunk), -(-n // lanes) * lanes)) if save else u.new_empty((0,))
        ypre = u.new_empty((b, d, length)) if save and z is not None else u.new_empty((0,))
        return torch.empty_like(u), u.new_empty((b, d, n)), ck, ypre  # out takes u's layout, as in the kernel

    @torch.library.register_fake("tricklab::selective_scan_bwd")
    def _bwd_fake(u: Tensor, delta: Tensor, A: Tensor, B: Tensor, C: Tensor, D: Tensor | None, z: Tensor | None,
                  delta_bias: Tensor | None, delta_softplus: bool, checkpoints: Tensor, y_pre_gate: Tensor,
                  dout: Tensor, dh_last: Tensor, chunk: int) -> tuple[Tensor, ...]:
        # as the kernel: du, ddelta, dz take their inputs' layouts (empty_like), the rest are contiguous
        def fresh(t: Tensor | None) -> Tensor:
            return u.new_empty((0,)) if t is None else t.new_empty(t.shape)

        return (torch.empty_like(u), torch.empty_like(delta), fresh(A), fresh(B), fresh(C), fresh(D),
                u.new_empty((0,)) if z is None else torch.empty_like(z), fresh(delta_bias), fresh(dh_last))

    def setup_context(ctx: object, inputs: tuple, output: tuple) -> None:
        u, delta, A, B, C, D, z, delta_bias, _h0, softplus, chunk, save = inputs
        ctx.save_for_backward(u, delta, A, B, C, D, z, delta_bias, output[2], output[3])  # type: ignore[attr-defined]
        ctx.softplus, ctx.chunk, ctx.saved_states = softplus, chunk, save  # type: ignore[attr-defined]

    def backward(ctx: object, dout: Tensor | None, dh_last: Tensor | None, *_unused: Tensor | None) -> tuple:
        u, delta, A, B, C, D, z, delta_bias, ck, ypre = ctx.saved_tensors  # type: ignore[attr-defined]
        if not ctx.saved_states:  # type: ignore[attr-defined]
            raise RuntimeError("tricklab fused scan: the forward ran with save=False, so it kept no states for the "
                               "backward; call it through selective_scan()")
        b, d, _ = u.shape
        dout = torch.zeros_like(u) if dout is None else dout
        dh_last = u.new_zeros(b, d, A.shape[1]) if dh_last is None else dh_last
        du, dd, dA, dB, dC, dD, dz, dbias, dh0 = torch.ops.tricklab.selective_scan_bwd(
            u, delta, A, B, C, D, z, delta_bias, ctx.softplus, ck, ypre, dout, dh_last,  # type: ignore[attr-defined]
            ctx.chunk)  # type: ignore[attr-defined]
        return (du, dd, dA, dB, dC, None if D is None else dD, None if z is None else dz,
                None if delta_bias is None else dbias, dh0, None, None, None)

    torch.library.register_autograd("tricklab::selective_scan_fwd", backward, setup_context=setup_context)

    @torch.library.register_fake("tricklab::selective_scan_step")
    def _step_fake(h: Tensor, u: Tensor, delta: Tensor, A: Tensor, B: Tensor, C: Tensor, D: Tensor | None,
                   z: Tensor | None, delta_bias: Tensor | None, delta_softplus: bool,
                   selective: bool) -> tuple[Tensor, Tensor]:
        return u.new_empty(u.shape), h.new_empty(h.shape)


def load() -> None:
    """Build (if needed) and load the kernel once per process; raise :class:`FusedScanUnavailable` if it cannot
    be. A failure is remembered: later calls raise the same error without trying again."""
    if _STATE["loaded"]:  # the common case, and the only one torch.compile traces
        return
    _load_once()


@torch.compiler.disable  # file locks, hashing, a compiler run: never traced (torch.compile runs it eagerly once)
def _load_once() -> None:
    if _STATE["loaded"]:
        return
    if _STATE["error"] is not None:
        raise FusedScanUnavailable(str(_STATE["error"]))
    try:
        key = build_key()
        root = cache_dir()
        root.mkdir(parents=True, exist_ok=True)
        so_path = root / f"{_NAME}_{key}.so"
        compiled_here = False
        if not so_path.exists():
            with _build_lock(root / f"{_NAME}_{key}.lock"):
                if not so_path.exists():  # another process may have built it while we waited
                    _compile(so_path, root / f"{_NAME}_{key}.build")
                    compiled_here = True  # cpp_extension has loaded it; loading twice re-registers the ops
        if not compiled_here:
            torch.ops.load_library(str(so_path))
        _register_python_side()
    except Exception as exc:  # any build or load failure means: no fused kernel in this process
        reason = exc if isinstance(exc, FusedScanUnavailable) else FusedScanUnavailable(
            f"building or loading {SOURCE.name} failed ({type(exc).__name__}: {_tail(str(exc))})")
        _STATE["error"] = str(reason)
        raise reason from exc
    _STATE["loaded"] = True


def _tail(text: str, lines: int = 6, chars: int = 600) -> str:
    """The end of a build log on one line, at most ``chars`` characters (compiler errors can be pages long)."""
    tail = " | ".join(line.strip() for line in text.strip().splitlines()[-lines:])
    return tail if len(tail) <= chars else "..." + tail[-chars:]


def fused_available() -> bool:
    """True when the kernel is loaded or can be (the first call may compile it)."""
    if _STATE["loaded"]:
        return True
    if _STATE["error"] is not None:
        return False
    try:
        _load_once()
    except FusedScanUnavailable:
        return False
    return True


@torch.compiler.disable
def warn_fallback_once() -> None:
    """The one warning per process that ``impl="auto"`` took the chunked path because the kernel is missing."""
    if _STATE["warned"]:
        return
    _STATE["warned"] = True
    warnings.warn(f"selective_scan: the fused CPU kernel is unavailable, using the chunked PyTorch scan "
                  f"(slower, same results). Reason: {_STATE['error']}. Pass impl='chunked' to choose it "
                  f"explicitly and silence this warning.", RuntimeWarning, stacklevel=3)


def fused_chunk_size(length: int) -> int:
    """States saved for the backward every ``T`` steps; the backward recomputes one chunk of T at a time in a
    per-thread buffer of 2 T N numbers. T = 64 keeps that buffer in L1 (8 KB at N = 16, float32) and saves 1/64
    of the full states; measured flat from 32 to 128 in ``benchmarks/ssm_scan.py``."""
    return max(1, min(64, length))


def fused_scan(u: Tensor, delta: Tensor, A: Tensor, B: Tensor, C: Tensor, D: Tensor | None, z: Tensor | None,
               delta_bias: Tensor | None, delta_softplus: bool, h0: Tensor,
               chunk: int | None = None) -> tuple[Tensor, Tensor]:
    """The whole of ``selective_scan`` (bias, softplus, scan, skip, gate) through the fused kernel:
    returns (y (B, Dm, L), h_L (B, Dm, N)). float32/float64 CPU tensors of one dtype, shapes as
    :func:`~tricklab.layers.ssm.selective_scan` checks them; differentiable in every tensor input."""
    load()
    length = u.shape[-1]
    chunk = fused_chunk_size(length) if chunk is None else chunk
    tensors = [t for t in (u, delta, A, B, C, D, z, delta_bias, h0) if t is not None]
    save = torch.is_grad_enabled() and any(t.requires_grad for t in tensors)
    y, h_last, _, _ = torch.ops.tricklab.selective_scan_fwd(u, delta, A, B, C, D, z, delta_bias, h0,
                                                            bool(delta_softplus), chunk, save)
    return y, h_last


def fused_step(h: Tensor, u: Tensor, delta: Tensor, A: Tensor, B: Tensor, C: Tensor, D: Tensor | None,
               z: Tensor | None, delta_bias: Tensor | None, delta_softplus: bool,
               selective: bool) -> tuple[Tensor, Tensor]:
    """One recurrence step in one call (generation, no autograd): (y (B, Dm), new state (B, Dm, N)); shapes as
    :func:`~tricklab.layers.ssm.selective_step`, float32/float64 CPU tensors of one dtype."""
    load()
    return torch.ops.tricklab.selective_scan_step(h, u, delta, A, B, C, D, z, delta_bias, bool(delta_softplus),
                                                  bool(selective))
