"""Running under torchrun: this process's rank and device, the process group, work splits.

``torchrun --nproc-per-node G -m mmal train|extract ...`` starts G processes
whose environment holds ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``,
``MASTER_ADDR`` and ``MASTER_PORT``. :func:`setup` reads them, picks the
device (``cuda:LOCAL_RANK`` when CUDA is used) and starts the process group
once per process: NCCL on GPUs, Gloo on CPUs. Its timeout
(``MMAL_DIST_TIMEOUT_S``, default 1800 s) bounds every collective, so a rank
waiting on a dead peer fails instead of hanging. Barriers and Python-object
collectives always go through a Gloo group (the default group on CPUs, a
second group beside NCCL): they need no GPU memory and honour the timeout.

Without those variables (a plain ``mmal ...``) :func:`setup` returns a
single-process :class:`Dist` and nothing here touches ``torch.distributed``.
"""

from __future__ import annotations

import atexit
import logging
import os
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist

from mmal.errors import ConfigError
from mmal.models.runtime import resolve_device
from mmal.settings import env_seconds

log = logging.getLogger(__name__)

TIMEOUT_ENV = "MMAL_DIST_TIMEOUT_S"
DEFAULT_TIMEOUT_S = 1800.0
_LAUNCH_VARS = ("RANK", "WORLD_SIZE")
_cpu_group: Any = None  # Gloo group for barriers/objects when the default group is NCCL


@dataclass(frozen=True)
class Dist:
    """Where this process stands in a (possibly one-process) job.

    Attributes
    ----------
    device : torch.device
        This rank's device (``cuda:LOCAL_RANK`` under torchrun with CUDA).
    rank, world_size, local_rank : int
    enabled : bool
        True under torchrun (even with ``WORLD_SIZE=1``): the process group is up.
    """

    device: torch.device
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    enabled: bool = False

    @property
    def is_main(self) -> bool:
        """Rank 0 writes the shared outputs (checkpoints, metrics, the joined cache)."""
        return self.rank == 0

    def barrier(self) -> None:
        """Wait for every rank (no-op in a single process)."""
        if self.enabled:
            dist.barrier(group=_cpu_group)

    def broadcast(self, obj: Any) -> Any:
        """Rank 0's ``obj`` on every rank (picklable objects)."""
        if not self.enabled:
            return obj
        box = [obj]
        dist.broadcast_object_list(box, src=0, group=_cpu_group)
        return box[0]

    def all_gather(self, obj: Any) -> list[Any]:
        """Every rank's ``obj``, in rank order."""
        if not self.enabled:
            return [obj]
        out: list[Any] = [None] * self.world_size
        dist.all_gather_object(out, obj, group=_cpu_group)
        return out

    def all_reduce_sum(self, values: list[float]) -> list[float]:
        """Element-wise float64 sum of ``values`` over the ranks."""
        if not self.enabled:
            return list(values)
        t = torch.tensor(values, dtype=torch.float64)
        dist.all_reduce(t, group=_cpu_group)
        return t.tolist()


def launched() -> bool:
    """True when a launcher such as torchrun set ``RANK`` and ``WORLD_SIZE``."""
    return all(v in os.environ for v in _LAUNCH_VARS)


def env_rank() -> int:
    """``RANK`` of this process (0 outside torchrun); for deciding who prints."""
    return int(os.environ.get("RANK", "0") or 0) if launched() else 0


def setup(device: str = "auto", *, distributed: bool | None = None) -> Dist:
    """This process's :class:`Dist`, starting the process group on first use.

    Parameters
    ----------
    device : {"auto", "cpu", "cuda"}
        As for a single process; under torchrun CUDA means ``cuda:LOCAL_RANK``.
    distributed : bool, optional
        None: distributed exactly when launched by torchrun; False: a single
        process even under torchrun; True: require torchrun's variables.

    Returns
    -------
    Dist
    """
    if distributed is None:
        distributed = launched()
    if not distributed:
        return Dist(device=resolve_device(device))
    if not launched():
        raise ConfigError("distributed run requested but RANK and WORLD_SIZE are not set; "
                          "launch with `torchrun --nproc-per-node G -m mmal ...`")
    rank, world, local = (_env_int("RANK"), _env_int("WORLD_SIZE"),
                          _env_int("LOCAL_RANK", _env_int("RANK")))
    dev = _rank_device(resolve_device(device), local)
    if not dist.is_initialized():
        _init_group(dev, rank, world)
    elif dist.get_world_size() != world or dist.get_rank() != rank:
        raise ConfigError(f"the running process group (rank {dist.get_rank()} of "
                          f"{dist.get_world_size()}) disagrees with RANK={rank}, WORLD_SIZE={world}")
    return Dist(device=dev, rank=rank, world_size=world, local_rank=local, enabled=True)


def split_rows(num_rows: int, world_size: int, rank: int, *, align: int = 1) -> range:
    """Rank ``rank``'s contiguous share of ``range(num_rows)``.

    Shares follow rank order, so concatenating them gives ``range(num_rows)``.
    Boundaries fall on multiples of ``align`` (e.g. the batch size, so every
    rank runs exactly the batches a single process would); blocks of ``align``
    rows are dealt as evenly as possible. A share may be empty when there are
    fewer blocks than ranks.

    Examples
    --------
    >>> [split_rows(10, 3, r, align=2) for r in range(3)]
    [range(0, 2), range(2, 6), range(6, 10)]
    """
    if world_size < 1 or not 0 <= rank < world_size or align < 1 or num_rows < 0:
        raise ValueError(f"bad split: num_rows={num_rows} world_size={world_size} rank={rank} "
                         f"align={align}")
    blocks = -(-num_rows // align)
    lo, hi = rank * blocks // world_size, (rank + 1) * blocks // world_size
    return range(min(lo * align, num_rows), min(hi * align, num_rows))


def timeout_seconds() -> float:
    """Collective timeout: ``MMAL_DIST_TIMEOUT_S`` or 1800 s."""
    return env_seconds(TIMEOUT_ENV, DEFAULT_TIMEOUT_S, zero_ok=False)


def _init_group(dev: torch.device, rank: int, world: int) -> None:
    global _cpu_group
    missing = [v for v in ("MASTER_ADDR", "MASTER_PORT") if v not in os.environ]
    if missing:
        raise ConfigError(f"environment variable {missing[0]} is not set; launch with torchrun, "
                          "which sets it")
    backend = "nccl" if dev.type == "cuda" else "gloo"
    timeout = timedelta(seconds=timeout_seconds())
    dist.init_process_group(backend, rank=rank, world_size=world, timeout=timeout)
    _cpu_group = dist.new_group(backend="gloo", timeout=timeout) if backend != "gloo" else None
    atexit.register(_shutdown)
    log.info("rank %d of %d: %s process group on %s", rank, world, backend, dev)


def _shutdown() -> None:
    global _cpu_group
    if dist.is_initialized():
        dist.destroy_process_group()
    _cpu_group = None


def _rank_device(dev: torch.device, local_rank: int) -> torch.device:
    if dev.type != "cuda":
        return dev
    count = torch.cuda.device_count()
    if local_rank >= count:
        raise ConfigError(f"LOCAL_RANK={local_rank} but only {count} CUDA GPU(s) are visible; "
                          f"start at most {count} processes per node (--nproc-per-node)")
    dev = torch.device("cuda", local_rank)
    torch.cuda.set_device(dev)
    return dev


def _env_int(name: str, default: int | None = None) -> int:
    raw = os.environ.get(name)
    if raw is None and default is not None:
        return default
    try:
        return int(raw)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise ConfigError(f"environment variable {name}={raw!r} is not an integer; launch "
                          "with torchrun, which sets it") from None
