"""How this process was launched: alone, or as one rank of a multi-process job (torchrun, SLURM's srun,
MASTER_ADDR/NODE_RANK by hand, Lightning's own DDP children). Read before the predict loop (predict.py),
without importing Lightning, so a run with nothing to generate never pays for that import.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

# The launcher's variables as this process started with them: a Lightning DDP run in this process sets
# LOCAL_RANK, WORLD_SIZE, ... in os.environ for its children and leaves them there.
LAUNCH_ENV = {k: os.environ.get(k, "") for k in ("WORLD_SIZE", "SLURM_NTASKS", "SLURM_PROCID")}


def joins_process_group(trainer: Mapping[str, Any], env: Mapping[str, str] | None = None) -> bool:
    """Whether this process is one rank of a job started as several processes.

    Such a process enters the predict loop even when its own plan is empty: the ranks work from rank 0's plan
    (see predict.ProposalData), and one that stayed out would leave the others waiting for it at a barrier.
    `trainer` is the run's `trainer` config; `env` defaults to the variables this process started with.
    """
    env = LAUNCH_ENV if env is None else env

    def count(name: str) -> int:
        value = env.get(name, "")
        return int(value) if value.isdigit() else 1

    nodes = trainer.get("num_nodes", 1)
    return (
        (isinstance(nodes, int) and nodes > 1)
        or count("WORLD_SIZE") > 1
        or (bool(env.get("SLURM_PROCID")) and count("SLURM_NTASKS") > 1)
    )
