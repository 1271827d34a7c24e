"""Optax optimizers and learning-rate schedules built from a ``TrainConfig``.

Schedules are functions of the optimizer step; epoch-valued settings (warm-up, piecewise
boundaries) are converted with ``steps_per_epoch``.
"""

from __future__ import annotations

from typing import Any, cast

import jax
import jax.numpy as jnp
import optax

from cnnjax.train.config import TrainConfig

__all__ = [
    "lookahead_schedule",
    "make_optimizer",
    "make_schedule",
    "norm_param_mask",
    "weight_decay_mask",
]


def make_schedule(config: TrainConfig, *, steps_per_epoch: int) -> optax.Schedule:
  """The learning-rate schedule of ``config`` as a function of the step.

  Args:
    config: the run's configuration (``lr``, ``schedule``, ``warmup_epochs``, ...).
    steps_per_epoch: optimizer steps per epoch.

  Returns:
    An ``optax.Schedule`` mapping the step (0-based) to a learning rate.

  Example:
    >>> sched = make_schedule(TrainConfig(lr=0.1, epochs=10), steps_per_epoch=100)
    >>> round(float(sched(0)), 4), round(float(sched(500)), 4)
    (0.1, 0.05)
  """
  if steps_per_epoch < 1:
    raise ValueError(
        f"make_schedule: steps_per_epoch got {steps_per_epoch!r}; expected a positive int."
    )
  total = config.epochs * steps_per_epoch
  warmup = min(int(round(config.warmup_epochs * steps_per_epoch)), total)
  lr = cast(float, config.lr)  # (TrainConfig resolves a None lr when it is made)
  end = lr * config.final_lr_fraction
  if config.schedule == "onecycle":
    pct = warmup / total if warmup else 0.3
    return optax.cosine_onecycle_schedule(total, lr, pct_start=pct)
  rest = max(total - warmup, 1)
  if config.schedule == "constant":
    main = optax.constant_schedule(lr)
  elif config.schedule == "cosine":
    main = optax.cosine_decay_schedule(lr, rest, alpha=config.final_lr_fraction)
  elif config.schedule == "linear":
    main = optax.linear_schedule(lr, end, rest)
  else:  # piecewise
    boundaries = {
        int(round(b * steps_per_epoch)) - warmup: config.piecewise_factor
        for b in config.piecewise_boundaries
    }
    main = optax.piecewise_constant_schedule(lr, {b: f for b, f in boundaries.items() if b > 0})
  if not warmup:
    return main
  start = lr * config.warmup_start_fraction
  return optax.join_schedules([optax.linear_schedule(start, lr, warmup), main], [warmup])


def weight_decay_mask(params: Any, *, decay_all: bool = False) -> Any:
  """True for the parameters to decay: kernels (``ndim >= 2``), or all with ``decay_all``."""
  return jax.tree.map(lambda p: decay_all or p.ndim >= 2, params)


def _is_norm_layer(name) -> bool:
  name = str(name).lower()
  return "norm" in name or name.startswith("bn")


def norm_param_mask(params: Any) -> Any:
  """True for the parameters of normalisation layers, by the owning layer's name.

  A parameter is a normalisation layer's when the attribute holding its layer contains
  ``"norm"`` (airbench's rule: ``norm1``, ``batch_norm``, ``layernorm``) or starts with
  ``"bn"`` (the zoo's ``bn``, ``bn1``): the path key just before the parameter's own name.

  Example:
    >>> norm_param_mask({"bn1": {"bias": jnp.zeros(2)}, "conv": {"bias": jnp.zeros(2)}})
    {'bn1': {'bias': True}, 'conv': {'bias': False}}
  """

  def name(key):
    for attr in ("key", "name", "idx"):
      if hasattr(key, attr):
        return getattr(key, attr)
    return key

  def owner_is_norm(path, _):
    names = [name(k) for k in path]
    if names and names[-1] == "value":  # an nnx.Variable's own leaf
      names = names[:-1]
    return len(names) >= 2 and _is_norm_layer(names[-2])

  return jax.tree_util.tree_map_with_path(owner_is_norm, params)


def lookahead_schedule(config: TrainConfig, *, steps_per_epoch: int) -> optax.Schedule:
  """Lookahead's slow step size ``α(t) = 1 − decay^k · (t / T)³`` (airbench's ramp).

  ``k`` is ``config.lookahead_sync_period``, ``decay`` ``config.lookahead_decay`` and ``T``
  the run's steps: ``α`` starts at 1 (the slow parameters follow the fast ones) and ends
  at ``1 − decay^k`` (about 0.23: an average over the last few dozen steps).

  Example:
    >>> s = lookahead_schedule(TrainConfig(epochs=1), steps_per_epoch=100)
    >>> float(s(0)), round(float(s(100)), 3)
    (1.0, 0.226)
  """
  total = config.epochs * steps_per_epoch
  rho = config.lookahead_decay**config.lookahead_sync_period

  def schedule(count):
    return 1.0 - rho * (jnp.minimum(count, total) / total) ** 3

  return schedule


def make_optimizer(config: TrainConfig, *, steps_per_epoch: int) -> optax.GradientTransformation:
  """The Optax optimizer of ``config``: clipping, weight decay, SGD/Adam/AdamW, schedule,
  and optionally Lookahead around them all.

  With ``config.lookahead`` the optimizer is ``optax.lookahead`` (its slow step size
  injected as a hyperparameter following :func:`lookahead_schedule`): ``init`` and
  ``update`` then take ``optax.LookaheadParams`` (see
  :func:`cnnjax.train.state.create_train_state`), gradients are those of the fast
  parameters.

  Args:
    config: the run's configuration.
    steps_per_epoch: optimizer steps per epoch (for the schedule).

  Returns:
    An ``optax.GradientTransformation``; its ``update`` needs ``params``.

  Example:
    >>> tx = make_optimizer(TrainConfig(optimizer="adamw", lr=3e-4), steps_per_epoch=10)
    >>> params = {"kernel": jnp.ones((2, 2))}
    >>> updates, _ = tx.update(params, tx.init(params), params)  # gradients, state, params
    >>> updates["kernel"].shape
    (2, 2)
  """
  sched = make_schedule(config, steps_per_epoch=steps_per_epoch)
  mask = lambda params: weight_decay_mask(params, decay_all=config.decay_all)  # noqa: E731
  parts = []
  if config.clip_grad_norm is not None:
    parts.append(optax.clip_by_global_norm(config.clip_grad_norm))
  if config.norm_lr_scale != 1:  # SGD only (checked by TrainConfig): scales before decay
    parts.append(optax.masked(optax.scale(config.norm_lr_scale), norm_param_mask))
  if config.optimizer == "adamw":
    parts.append(
        optax.adamw(
            sched,
            b1=config.b1,
            b2=config.b2,
            eps=config.eps,
            weight_decay=config.weight_decay,
            mask=mask,
        )
    )
  else:
    if config.weight_decay:
      parts.append(optax.add_decayed_weights(config.weight_decay, mask=mask))
    if config.optimizer == "sgd":
      parts.append(optax.sgd(sched, momentum=config.momentum or None, nesterov=config.nesterov))
    else:
      parts.append(optax.adam(sched, b1=config.b1, b2=config.b2, eps=config.eps))
  tx = optax.chain(*parts)
  if config.lookahead:
    tx = optax.inject_hyperparams(optax.lookahead, static_args=("sync_period", "reset_state"))(
        fast_optimizer=tx,
        sync_period=config.lookahead_sync_period,
        slow_step_size=lookahead_schedule(config, steps_per_epoch=steps_per_epoch),
    )
  return tx
