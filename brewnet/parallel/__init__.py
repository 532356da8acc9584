"""Data-parallel training over torch.distributed (Caffe's multi-GPU training, book 5.6.2, on processes).

    from brewnet.parallel import train
    train("solver.prototxt", procs=2)        # caffe train -solver solver.prototxt -procs 2
"""
from .distributed import (DistributedSolverMixin, GradientAverager, distributed_class, distributed_solver,
                          train, train_rank)
from .launch import DistributedError, init_from_environment, launch, torchrun_environment

__all__ = ["DistributedError", "DistributedSolverMixin", "GradientAverager", "distributed_class",
           "distributed_solver", "init_from_environment", "launch", "torchrun_environment", "train", "train_rank"]
