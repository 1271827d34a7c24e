"""Random hyperparameter search on the validation split (the lecture's recipe).

Each trial samples every searched ``TrainConfig`` field independently: log-uniformly on
``[lo, hi]`` when ``lo > 0`` (learning rates, weight decay: what matters is the order of
magnitude), uniformly otherwise; trains a few epochs; and is ranked by its final validation
accuracy. Random search beats a grid because every trial tries a new value of every
hyperparameter (Bergstra & Bengio, 2012). Never select on the test split.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import numpy as np

from cnnjax.train.config import TrainConfig
from cnnjax.train.loop import NonFiniteLossError, train
from cnnjax.train.preflight import check_config
from cnnjax.train.run import ModelFn, load_dataset

if TYPE_CHECKING:
  from cnnjax.data.dataset import Dataset

__all__ = ["DEFAULT_SPACE", "SearchSpace", "format_table", "sample", "search"]

SearchSpace = Mapping[str, tuple[float, float]]
DEFAULT_SPACE: SearchSpace = {"lr": (1e-3, 0.3), "weight_decay": (1e-5, 1e-2)}

_SEARCHABLE_FLOATS = (
    "lr",
    "weight_decay",
    "label_smoothing",
    "momentum",
    "warmup_epochs",
    "final_lr_fraction",
    "b1",
    "b2",
    "eps",
    "clip_grad_norm",
    "warmup_start_fraction",
    "norm_lr_scale",
    "lookahead_decay",
)


def _check_space(space: SearchSpace) -> None:
  if not space:
    raise ValueError(f"search: space got {dict(space)!r}; expected at least one field.")
  for name, rng in space.items():
    if name not in _SEARCHABLE_FLOATS:
      raise ValueError(
          f"search: space got field {name!r}; expected float fields of TrainConfig from "
          f"{_SEARCHABLE_FLOATS}."
      )
    if len(rng) != 2 or not (0 <= rng[0] <= rng[1]) or not math.isfinite(rng[1]):
      raise ValueError(
          f"search: space[{name!r}] got {tuple(rng)!r}; expected (lo, hi) with "
          "0 <= lo <= hi < inf."
      )


def sample(space: SearchSpace, rng: np.random.Generator) -> dict[str, float]:
  """One random point: log-uniform where ``lo > 0``, uniform otherwise.

  Example:
    >>> p = sample({"lr": (1e-3, 1e-1)}, np.random.default_rng(0))
    >>> 1e-3 <= p["lr"] <= 1e-1
    True
  """
  _check_space(space)
  point = {}
  for name in sorted(space):
    lo, hi = space[name]
    if lo > 0:
      point[name] = float(math.exp(rng.uniform(math.log(lo), math.log(hi))))
    else:
      point[name] = float(rng.uniform(lo, hi))
  return point


def format_table(results: list[dict[str, Any]], names: list[str]) -> str:
  """A Markdown table of trials, best first."""
  head = ["rank", "trial", *names, "val_accuracy", "val_loss", "status"]
  lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
  for rank, r in enumerate(results, 1):
    acc = r.get("val_accuracy")
    loss = r.get("val_loss")
    cells = [
        str(rank),
        str(r["trial"]),
        *(f"{r['params'][n]:.3g}" for n in names),
        "-" if acc is None else f"{acc:.4f}",
        "-" if loss is None else f"{loss:.4f}",
        r["status"],
    ]
    lines.append("| " + " | ".join(cells) + " |")
  return "\n".join(lines)


def search(
    base: TrainConfig,
    *,
    out_dir: str | os.PathLike[str],
    trials: int = 8,
    epochs: int = 2,
    space: SearchSpace = DEFAULT_SPACE,
    seed: int = 0,
    dataset: Dataset | None = None,
    model_fn: ModelFn | None = None,
    quiet: bool = False,
) -> list[dict[str, Any]]:
  """Random search: ``trials`` short runs of ``base`` with sampled hyperparameters.

  Args:
    base: the configuration every trial starts from (its ``epochs`` is replaced).
    out_dir: where trials go (``trial-000/``, ...), with ``results.jsonl``, ``results.md``
      and ``best_config.json`` (the best trial's config, with ``base.epochs`` restored).
    trials: how many trials.
    epochs: epochs per trial.
    space: ``{field: (lo, hi)}``; log-uniform when ``lo > 0``.
    seed: seed of the sampling (the trials all train with ``base.seed``).
    dataset: the data, if already loaded (loaded once otherwise).
    model_fn: a model factory instead of the zoo.
    quiet: print nothing.

  Returns:
    One dict per trial, best validation accuracy first: ``trial``, ``params``,
    ``val_accuracy``, ``val_loss``, ``status`` (``"ok"`` or ``"diverged"``), ``out_dir``.

  Example:
    >>> best = search(TrainConfig(), out_dir="/tmp/search", trials=4)[0]  # trains  # doctest: +SKIP
  """
  _check_space(space)
  if not isinstance(trials, int) or trials < 1:
    raise ValueError(f"search: trials got {trials!r}; expected a positive int.")
  if not isinstance(epochs, int) or epochs < 1:
    raise ValueError(f"search: epochs got {epochs!r}; expected a positive int.")
  out_dir = os.fspath(out_dir)
  os.makedirs(out_dir, exist_ok=True)
  if dataset is None:
    check_config(base, model=model_fn is None)  # before any data is read
    dataset = load_dataset(base)
  if getattr(dataset, "test_images", None) is not None:  # selection never sees the test split
    dataset = dataclasses.replace(dataset, test_images=None, test_labels=None)
  rng = np.random.default_rng(seed)
  names = sorted(space)
  say = (lambda s: None) if quiet else (lambda s: print(s, flush=True))
  results = []
  jsonl = os.path.join(out_dir, "results.jsonl")
  open(jsonl, "w").close()
  for t in range(trials):
    params = sample(space, rng)
    config = base.replace(epochs=epochs, checkpoint_every=epochs, keep_checkpoints=1, **params)
    trial_dir = os.path.join(out_dir, f"trial-{t:03d}")
    entry: dict[str, Any] = {"trial": t, "params": params, "out_dir": trial_dir}
    try:
      run = train(
          config, out_dir=trial_dir, dataset=dataset, model_fn=model_fn, quiet=True, plots=False
      )
      last = run.history[-1]
      entry.update(
          val_accuracy=last.get("val_accuracy"), val_loss=last.get("val_loss"), status="ok"
      )
    except NonFiniteLossError as e:
      entry.update(val_accuracy=None, val_loss=None, status="diverged", error=str(e))
    results.append(entry)
    with open(jsonl, "a") as f:
      f.write(json.dumps(entry) + "\n")
    shown = ", ".join(f"{n}={params[n]:.3g}" for n in names)
    acc = entry["val_accuracy"]
    say(
        f"trial {t + 1}/{trials}: {shown} -> "
        + ("diverged" if acc is None else f"val_accuracy {acc:.4f}")
    )
  results.sort(key=lambda r: (r["val_accuracy"] is None, -(r["val_accuracy"] or 0.0), r["trial"]))
  table = format_table(results, names)
  with open(os.path.join(out_dir, "results.md"), "w") as f:
    f.write(table + "\n")
  best = results[0]
  if best["val_accuracy"] is not None:
    base.replace(**best["params"]).save(os.path.join(out_dir, "best_config.json"))
  say(table)
  if best["val_accuracy"] is not None:
    shown = ", ".join(f"{n}={best['params'][n]:.3g}" for n in names)
    say(
        f"Best: trial {best['trial']} ({shown}); config in "
        f"{os.path.join(out_dir, 'best_config.json')}"
    )
  return results
