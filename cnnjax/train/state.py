"""``TrainState``: everything that changes while training, as one pytree.

A Flax NNX model is split once into static graph definitions (one in training mode, one in
evaluation mode: they differ in ``BatchNorm.use_running_average`` / ``Dropout.deterministic``)
and the state: parameters (``nnx.Param``) and the rest of the model state (BatchNorm running
statistics, dropout RNG streams, ...). The state, the optimizer state, the step counter and
the run's base RNG key form a ``TrainState``: a plain pytree that ``jax.jit`` donates,
``jax.sharding`` places and Orbax checkpoints, and that alone determines how training goes on.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax
from flax import nnx

__all__ = [
    "ModelDef",
    "TrainState",
    "create_train_state",
    "eval_params",
    "fast_params",
    "merge_model",
    "split_model",
]


class ModelDef(NamedTuple):
  """The static halves of a split NNX model: graph definitions for both modes."""

  train: Any  # nnx.GraphDef with training-mode attributes
  eval: Any  # nnx.GraphDef with evaluation-mode attributes


class TrainState(NamedTuple):
  """The pytree carried from step to step.

  Attributes:
    step: optimizer steps taken, an ``int32`` scalar.
    params: the model's ``nnx.Param`` variables (an ``nnx.State``); with Lookahead an
      ``optax.LookaheadParams`` pair of them (``fast``: trained by the gradient steps,
      ``slow``: evaluated, see :func:`eval_params`).
    model_state: all other model variables: BatchNorm statistics, RNG streams, ...
    opt_state: the Optax optimizer state.
    rng: the run's base PRNG key as raw ``uint32`` key data (``jax.random.key_data``);
      epoch ``e`` shuffles and augments with keys folded from it.
  """

  step: jax.Array
  params: Any
  model_state: Any
  opt_state: optax.OptState
  rng: jax.Array


def split_model(model: nnx.Module) -> tuple[ModelDef, Any, Any]:
  """Splits ``model`` into its ``ModelDef`` (train and eval), params and other state.

  Leaves ``model`` in evaluation mode.

  Example:
    >>> m = nnx.Linear(2, 3, rngs=nnx.Rngs(0))
    >>> graphdefs, params, rest = split_model(m)
    >>> params["kernel"][...].shape
    (2, 3)
  """
  model.train()
  train_def, params, rest = nnx.split(model, nnx.Param, ...)
  model.eval()
  eval_def, _, _ = nnx.split(model, nnx.Param, ...)
  return ModelDef(train_def, eval_def), params, rest


def fast_params(params: Any) -> Any:
  """The parameters gradients are taken at: ``params.fast`` under Lookahead, else ``params``."""
  return params.fast if isinstance(params, optax.LookaheadParams) else params


def eval_params(params: Any) -> Any:
  """The parameters a model is evaluated with: ``params.slow`` under Lookahead, else
  ``params``."""
  return params.slow if isinstance(params, optax.LookaheadParams) else params


def merge_model(graphdef: Any, params: Any, model_state: Any) -> nnx.Module:
  """Rebuilds a module from a graph definition (train or eval) and its state (with
  :func:`eval_params` under Lookahead)."""
  return nnx.merge(graphdef, eval_params(params), model_state)


def create_train_state(
    model: nnx.Module, tx: optax.GradientTransformation, *, seed: int, lookahead: bool = False
) -> tuple[ModelDef, TrainState]:
  """Splits ``model`` and initialises the optimizer: the starting ``TrainState``.

  Args:
    model: a freshly initialised NNX module (NHWC input, logits output).
    tx: the Optax optimizer.
    seed: the run's seed; the base key is ``jax.random.key(seed)``, folded with a constant
      so that it is independent of the parameter-initialisation key.
    lookahead: ``tx`` is an ``optax.lookahead``: keep the parameters as a synchronised
      ``optax.LookaheadParams(fast, slow)`` pair.

  Returns:
    ``(model_def, state)``.

  Example:
    >>> defs, state = create_train_state(
    ...     nnx.Linear(2, 3, rngs=nnx.Rngs(0)), optax.sgd(0.1), seed=0)
    >>> int(state.step)
    0
  """
  model_def, params, rest = split_model(model)
  if lookahead:
    # Distinct buffers for the two copies: a donated state must not alias itself.
    params = optax.LookaheadParams(fast=params, slow=jax.tree.map(jnp.copy, params))
  rng = jax.random.key_data(jax.random.fold_in(jax.random.key(seed), 0x7AE1))
  state = TrainState(
      step=jnp.zeros((), jnp.int32),
      params=params,
      model_state=rest,
      opt_state=tx.init(params),
      rng=rng,
  )
  return model_def, state
