"""Training Flax NNX models with Optax: config, steps, loop, checkpoints, sharding, search.

Example:
  >>> from cnnjax.train import TrainConfig, train
  >>> result = train(TrainConfig(epochs=1), out_dir="/tmp/run")  # trains  # doctest: +SKIP
"""

from cnnjax.train.augment import alternating_flip, tta_logits
from cnnjax.train.checkpoint import Checkpointer, CheckpointError, verify_checkpoint
from cnnjax.train.config import (
    FLIP_MODES,
    OPTIMIZERS,
    RECIPES,
    SCHEDULES,
    TTA_MODES,
    TrainConfig,
)
from cnnjax.train.evaluation import evaluate, load_run
from cnnjax.train.inference import Classifier, load_model
from cnnjax.train.lock import RunInUseError, RunLock
from cnnjax.train.loop import NonFiniteLossError, TrainResult, train
from cnnjax.train.metrics import read_metrics
from cnnjax.train.optim import (
    lookahead_schedule,
    make_optimizer,
    make_schedule,
    norm_param_mask,
)
from cnnjax.train.run import InputSpec, Run, build_run, load_dataset
from cnnjax.train.search import SearchSpace, search
from cnnjax.train.sharding import PeerLostError, initialize_distributed, make_mesh
from cnnjax.train.state import TrainState, create_train_state, eval_params
from cnnjax.train.steps import cross_entropy, make_steps, make_train_step

__all__ = [
    "FLIP_MODES",
    "OPTIMIZERS",
    "RECIPES",
    "SCHEDULES",
    "TTA_MODES",
    "CheckpointError",
    "Checkpointer",
    "Classifier",
    "InputSpec",
    "NonFiniteLossError",
    "PeerLostError",
    "RunInUseError",
    "Run",
    "RunLock",
    "SearchSpace",
    "TrainConfig",
    "TrainResult",
    "TrainState",
    "alternating_flip",
    "build_run",
    "create_train_state",
    "cross_entropy",
    "eval_params",
    "evaluate",
    "initialize_distributed",
    "load_dataset",
    "load_model",
    "load_run",
    "lookahead_schedule",
    "make_mesh",
    "make_optimizer",
    "make_schedule",
    "make_steps",
    "make_train_step",
    "norm_param_mask",
    "read_metrics",
    "search",
    "train",
    "tta_logits",
    "verify_checkpoint",
]
