"""Run a worker on two gloo ranks (CPU) and collect what each rank reports."""

from __future__ import annotations

import os
import socket
from collections.abc import Callable
from typing import Any

import torch
import torch.distributed as dist
import torch.multiprocessing as mp


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _entry(rank: int, port: int, worker: Callable[[int, Any], None], out: Any) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=2)
    torch.set_num_threads(1)
    try:
        worker(rank, out)
    finally:
        dist.destroy_process_group()


def run_two_ranks(worker: Callable[[int, Any], None]) -> dict[Any, Any]:
    """Spawn two ranks running ``worker(rank, out)`` (a module-level function); returns ``out``."""
    out = mp.get_context("spawn").Manager().dict()
    mp.start_processes(_entry, args=(_free_port(), worker, out), nprocs=2, start_method="spawn")
    return dict(out)
