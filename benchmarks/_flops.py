"""FLOPs of a train step and the machine's matmul ceiling, shared by the benchmarks.

XLA's ``cost_analysis()`` counts what XLA itself emits: on GPU it misses cuDNN
convolutions (fastnet's bf16 step read 0.009 GFLOP per image, for 0.711 true), and some
backends return nothing. :func:`step_flops` therefore takes the larger of the compiled
count and the model's own count from :func:`cnnjax.summary.summary` (2 FLOPs per
multiply-add of the forward pass, × 3 for a train step: forward, and backward to inputs
and to weights), and reports both. The ceiling is a large square matmul in the step's own
dtype (a bfloat16 step against a bfloat16 matmul, not a float32/TF32 one).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import jax
import jax.numpy as jnp

__all__ = ["compiled_flops", "matmul_ceiling", "model_flops", "step_dtype", "step_flops"]

# Options that change the dtype, not the count, and that cnnjax.summary.summary reads as
# its own (the input dtype of the trace).
_DTYPE_OPTIONS = ("dtype", "param_dtype")


def compiled_flops(compiled) -> float | None:
  """``compiled.cost_analysis()["flops"]`` (a ``jax.stages.Compiled``), or None if absent."""
  try:
    cost = compiled.cost_analysis()
  except Exception:  # some backends do not implement it
    return None
  if isinstance(cost, (list, tuple)):  # older JAX: one dict per program
    cost = cost[0] if cost else None
  if not cost or "flops" not in cost:
    return None
  return float(cost["flops"])


def model_flops(
    model: Any, input_shape, *, train: bool = True, options: Mapping[str, Any] | None = None
) -> float:
  """FLOPs per image from :func:`cnnjax.summary.summary`: 2 × multiply-adds of the forward
  pass, × 3 for a train step (``train=True``).

  Args:
    model: a zoo name or an ``nnx.Module``.
    input_shape: ``(H, W, C)``.
    train: count a train step (forward + backward) rather than a forward pass.
    options: zoo options (``dtype`` and ``param_dtype`` are ignored: they do not change
      the count).
  """
  from cnnjax.summary import summary

  options = {k: v for k, v in (options or {}).items() if k not in _DTYPE_OPTIONS}
  macs = summary(model, tuple(input_shape), **options).total_ops
  return (3 if train else 1) * 2.0 * macs


def step_flops(compiled, model_count: float) -> dict[str, Any]:
  """The FLOPs of a compiled step: ``{"flops", "source", "compiled", "model"}``.

  ``flops`` is the compiled count unless it is missing or below ``model_count`` (the
  model's count for the same step, e.g. ``model_flops(...) * batch``), when it is
  ``model_count``; ``source`` says which (``"cost_analysis"`` or ``"summary"``).
  """
  counted = compiled_flops(compiled)
  if counted is not None and counted >= model_count:
    return {"flops": counted, "source": "cost_analysis", "compiled": counted, "model": model_count}
  return {"flops": model_count, "source": "summary", "compiled": counted, "model": model_count}


def step_dtype(config=None, options: Mapping[str, Any] | None = None) -> jnp.dtype:
  """The compute dtype of a run's step, as :func:`cnnjax.train.run.model_arguments` gives
  it to the model: ``config.dtype`` when set, else the model option ``dtype``
  (``options``, else ``config.model_options``), else float32."""
  dtype = getattr(config, "dtype", None)
  if dtype is None:
    if options is None:
      options = getattr(config, "model_options", None) or {}
    dtype = options.get("dtype")
  return jnp.dtype(dtype or jnp.float32)


def matmul_ceiling(
    n: int, dtype: Any = jnp.float32, *, block: bool = True
) -> tuple[Callable[[], jax.Array], float, jnp.dtype]:
  """A compiled ``n × n @ n × n`` matmul in ``dtype``, warmed up.

  Args:
    n: the size.
    dtype: the operands' dtype (the step's: :func:`step_dtype`).
    block: ``run()`` waits for its result; False: it only dispatches (several calls back
      to back, then one ``jax.block_until_ready`` on their results, keep an accelerator
      busy the way a train loop does).

  Returns:
    ``(run, flops, dtype)``: ``run()`` computes it (and waits for the result with
    ``block``); ``flops`` is ``2 n³``; ``dtype`` the operands' (and result's) dtype.
  """
  dtype = jnp.dtype(dtype)
  k1, k2 = jax.random.split(jax.random.key(0))
  a = jax.random.normal(k1, (n, n), jnp.float32).astype(dtype)
  b = jax.random.normal(k2, (n, n), jnp.float32).astype(dtype)
  matmul = jnp.matmul
  if jax.default_backend() == "cpu" and dtype.itemsize < 4:
    # XLA:CPU runs a bfloat16 × bfloat16 → bfloat16 dot 3–5x slower than the same dot
    # accumulating in float32 (AMX), which is what the bf16 steps' lowering does.
    def matmul(a, b):
      return jnp.matmul(a, b, preferred_element_type=jnp.float32).astype(dtype)

  f = jax.jit(matmul).lower(a, b).compile()
  f(a, b).block_until_ready()
  if block:
    return (lambda: f(a, b).block_until_ready()), 2.0 * n**3, dtype
  return (lambda: f(a, b)), 2.0 * n**3, dtype
