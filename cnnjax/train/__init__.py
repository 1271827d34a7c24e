"""Training Flax NNX models with Optax: config, steps, loop, checkpoints, sharding, search.

Example:
  >>> from cnnjax.train import TrainConfig, train
  >>> result = train(TrainConfig(epochs=1), out_dir="/tmp/run")  # doctest: +SKIP
"""

from cnnjax.train.checkpoint import Checkpointer
from cnnjax.train.config import OPTIMIZERS, SCHEDULES, TrainConfig
from cnnjax.train.loop import NonFiniteLossError, TrainResult, evaluate, load_run, train
from cnnjax.train.metrics import read_metrics
from cnnjax.train.optim import make_optimizer, make_schedule
from cnnjax.train.search import SearchSpace, search
from cnnjax.train.sharding import initialize_distributed, make_mesh
from cnnjax.train.state import TrainState, create_train_state
from cnnjax.train.steps import cross_entropy, make_steps, make_train_step

__all__ = [
    "OPTIMIZERS",
    "SCHEDULES",
    "Checkpointer",
    "NonFiniteLossError",
    "SearchSpace",
    "TrainConfig",
    "TrainResult",
    "TrainState",
    "create_train_state",
    "cross_entropy",
    "evaluate",
    "initialize_distributed",
    "load_run",
    "make_mesh",
    "make_optimizer",
    "make_schedule",
    "make_steps",
    "make_train_step",
    "read_metrics",
    "search",
    "train",
]
