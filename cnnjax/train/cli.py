"""The ``cnnjax train``, ``eval``, ``predict`` and ``search`` subcommands.

Every ``TrainConfig`` field is a flag (``--batch-size`` for ``batch_size``); its help ends
with the default. With ``--resume`` the run's saved ``config.json`` is the starting point
and only the flags given on the command line change it.

Known failures (bad settings or files, I/O errors such as a read-only ``--out`` or a full
disk, unreadable pickles, checkpoint and Orbax errors, a lost peer process) are reported
as one line on stderr with exit code 2; ``--debug`` prints the full traceback as well, and
the logs of Orbax's background threads, which are otherwise silenced while a command runs
(:func:`_quiet_background`).
"""

from __future__ import annotations

import argparse
import ast
import contextlib
import dataclasses
import functools
import json
import os
import pickle
import sys
import time
import traceback
import zipfile
from typing import Any

from cnnjax.train.config import (
    FLIP_MODES,
    OPTIMIZERS,
    RECIPES,
    SCHEDULES,
    TTA_MODES,
    TrainConfig,
)

__all__ = ["add_subcommands", "config_from_args"]

_DEFAULTS = {
    f.name: (f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default)
    for f in dataclasses.fields(TrainConfig)
}


def _kv(text: str) -> tuple[str, Any]:
  if "=" not in text:
    raise argparse.ArgumentTypeError(f"got {text!r}; expected KEY=VALUE")
  key, value = text.split("=", 1)
  try:
    return key, ast.literal_eval(value)
  except (ValueError, SyntaxError):
    return key, value


def _range(text: str) -> tuple[str, tuple[float, float]]:
  try:
    key, value = text.split("=", 1)
    lo, hi = (float(v) for v in value.split(":"))
  except ValueError:
    raise argparse.ArgumentTypeError(
        f"got {text!r}; expected FIELD=LO:HI such as lr=1e-3:0.3"
    ) from None
  return key, (lo, hi)


def _none_or(kind):
  def parse(text: str):
    return None if text.lower() == "none" else kind(text)

  parse.__name__ = kind.__name__
  return parse


# (field, flag kwargs, help); the default is appended from TrainConfig.
_FLAGS: list[tuple[str, dict[str, Any], str]] = [
    (
        "model",
        {"metavar": "NAME"},
        "zoo model (cnnjax.models.names(): linear, mlp, seed-cnn, "
        "lenet5, vgg11, resnet20, fastnet, ...)",
    ),
    (
        "model_options",
        {"type": _kv, "action": "append", "metavar": "KEY=VALUE", "flag": "--model-option"},
        "extra model constructor option, repeatable (e.g. conv=tiled, hidden=200)",
    ),
    (
        "dtype",
        {"type": _none_or(str), "metavar": "DTYPE"},
        "the model's computation "
        "dtype: float32, bfloat16 or float16 (mixed precision: float32 parameters, optimizer "
        "state, BatchNorm statistics and loss; None: the model's default, float32)",
    ),
    (
        "data",
        {"metavar": "NAME"},
        "dataset: shapes (built in, no download), cifar10, "
        "cifar100, mnist, fashion_mnist, or folder (with --data-dir)",
    ),
    (
        "data_dir",
        {"metavar": "PATH"},
        "offline copy: CIFAR binary/python release directory, "
        "or an image folder directory or .zip of <split>/<class>/<image> (a train class folder "
        "without images is refused, as dropping it would shift the labels; keep its label with "
        "--data-option class_names=[...])",
    ),
    (
        "data_options",
        {"type": _kv, "action": "append", "metavar": "KEY=VALUE", "flag": "--data-option"},
        "extra cnnjax.data.load option, repeatable (e.g. num_train=600 for shapes, with "
        "--val-size 100)",
    ),
    (
        "cache_dir",
        {"metavar": "PATH"},
        "cache of decoded arrays (None: $CNNJAX_CACHE or " "~/.cache/cnnjax)",
    ),
    (
        "val_size",
        {"type": _none_or(int), "metavar": "N"},
        "training images held out for validation (None: the dataset's default, 5000 for "
        "CIFAR-10, 1000 for shapes)",
    ),
    ("epochs", {"type": int, "metavar": "N"}, "passes over the training split"),
    ("batch_size", {"type": int, "metavar": "B"}, "global batch size (split over devices)"),
    ("eval_batch_size", {"type": int, "metavar": "B"}, "evaluation batch size"),
    ("optimizer", {"choices": OPTIMIZERS}, "optimizer"),
    ("lr", {"type": float}, "peak learning rate (None: 0.05 for sgd, 1e-3 for adam/adamw)"),
    ("momentum", {"type": float}, "SGD momentum (0: plain SGD)"),
    ("nesterov", {"action": argparse.BooleanOptionalAction}, "Nesterov momentum (SGD)"),
    ("b1", {"type": float}, "Adam/AdamW beta1"),
    ("b2", {"type": float}, "Adam/AdamW beta2"),
    ("eps", {"type": float}, "Adam/AdamW epsilon"),
    (
        "weight_decay",
        {"type": float},
        "weight decay: L2 added to the gradient for sgd/adam, " "decoupled for adamw",
    ),
    (
        "decay_all",
        {"action": argparse.BooleanOptionalAction},
        "also decay biases and normalisation parameters, not only kernels",
    ),
    (
        "norm_lr_scale",
        {"type": float, "metavar": "S"},
        "learning-rate multiplier of "
        "normalisation-layer parameters (layers named *norm* or bn*), not of their weight decay; "
        "sgd only (airbench: 64)",
    ),
    ("label_smoothing", {"type": float}, "label smoothing of the training targets"),
    (
        "clip_grad_norm",
        {"type": _none_or(float)},
        "clip gradients to this global norm " "(None: no clipping)",
    ),
    (
        "schedule",
        {"choices": SCHEDULES},
        "learning-rate schedule (after --warmup-epochs of "
        "linear warm-up; onecycle has its own warm-up)",
    ),
    ("warmup_epochs", {"type": float, "metavar": "E"}, "linear warm-up length in epochs"),
    (
        "warmup_start_fraction",
        {"type": float, "metavar": "F"},
        "learning rate at the start " "of the warm-up, as a fraction of --lr (0: from zero)",
    ),
    (
        "final_lr_fraction",
        {"type": float},
        "final learning rate of cosine/linear decay, as a " "fraction of --lr",
    ),
    (
        "piecewise_boundaries",
        {"type": float, "nargs": "+", "metavar": "E"},
        "epochs at which the piecewise schedule multiplies the rate by --piecewise-factor",
    ),
    ("piecewise_factor", {"type": float}, "factor at each piecewise boundary"),
    (
        "lookahead",
        {"action": argparse.BooleanOptionalAction},
        "Lookahead (optax.lookahead): "
        "slow parameters, evaluated, pulled towards the fast ones every --lookahead-sync-period "
        "steps by alpha = 1 - decay^period * (t/T)^3",
    ),
    (
        "lookahead_sync_period",
        {"type": int, "metavar": "K"},
        "Lookahead: fast steps between " "synchronisations",
    ),
    (
        "lookahead_decay",
        {"type": float},
        "Lookahead: per-step decay of the slow average at " "the end of the run, in [0, 1)",
    ),
    (
        "augment",
        {"action": argparse.BooleanOptionalAction},
        "random crop (--crop-padding "
        "pixels of reflect padding) and horizontal flip (--flip) on the device",
    ),
    (
        "crop_padding",
        {"type": int, "metavar": "P"},
        "--augment: padding of the random crop " "(a translation by up to P pixels; 0: no crop)",
    ),
    (
        "flip",
        {"choices": FLIP_MODES},
        "--augment: horizontal flips, random (p=1/2 per "
        "image and step), alternating (a fixed coin per image, flipped the other way in odd "
        "epochs; airbench) or none",
    ),
    (
        "tta",
        {"choices": TTA_MODES},
        "test-time augmentation of every evaluation (of the "
        "last only with --tta-final-only): none, "
        "flip (mean logits of image and mirror: 2x eval cost) or flip_translate (also 1-pixel "
        "translations: 6x)",
    ),
    (
        "tta_final_only",
        {"action": argparse.BooleanOptionalAction},
        "apply --tta to the " "last epoch's evaluation only; earlier epochs evaluate without it",
    ),
    (
        "data_init_images",
        {"type": int, "metavar": "N"},
        "training images given to the "
        "model's data-dependent initialisation, if it has one (fastnet's patch-whitening "
        "layer); 0: skip it",
    ),
    (
        "seed",
        {"type": int},
        "seed of initialisation, validation split, shuffling, " "augmentation and dropout",
    ),
    (
        "steps_per_call",
        {"type": int, "metavar": "K"},
        "training steps per compiled call "
        "(lax.scan over K steps; 1: a Python loop over a jitted step)",
    ),
    ("unroll", {"type": int}, "lax.scan unroll factor when --steps-per-call > 1 (0: full)"),
    (
        "num_devices",
        {"type": _none_or(int), "metavar": "N"},
        "use the first N local devices " "(None: all), data parallel",
    ),
    (
        "distributed",
        {"action": argparse.BooleanOptionalAction},
        "call "
        "jax.distributed.initialize() for a multi-host run (None: only if "
        "JAX_COORDINATOR_ADDRESS is set)",
    ),
    (
        "checkpoint_every",
        {"type": int, "metavar": "E"},
        "checkpoint every E epochs (and at " "the end)",
    ),
    ("keep_checkpoints", {"type": int, "metavar": "N"}, "recent checkpoints to keep"),
    (
        "log_every",
        {"type": int, "metavar": "K"},
        "write the training loss, learning rate and "
        "images/s to steps.jsonl every K steps (0: never)",
    ),
    (
        "tensorboard",
        {"action": argparse.BooleanOptionalAction},
        "also write them and the "
        "epoch metrics as TensorBoard event files to <out>/tensorboard/ (needs tensorboardX: "
        "pip install 'cnnjax[tensorboard]')",
    ),
]


def _add_config_flags(parser: argparse.ArgumentParser) -> None:
  recipes = "; ".join(f"{name}: {r.description}" for name, r in RECIPES.items())
  recipes = recipes.replace("%", "%%")  # argparse %-formats help strings
  parser.add_argument(
      "--recipe",
      choices=sorted(RECIPES),
      default=None,
      help=f"start from a recipe's settings instead of the defaults; flags given explicitly "
      f"override it, and its derived values (fast: --lr and --weight-decay from --batch-size "
      f"and --momentum, --warmup-epochs = 0.23 x --epochs) follow the overrides. {recipes} "
      "(default: none)",
  )
  group = parser.add_argument_group("run configuration (TrainConfig fields)")
  for name, kwargs, text in _FLAGS:
    kwargs = dict(kwargs)
    flag = kwargs.pop("flag", "--" + name.replace("_", "-"))
    default = _DEFAULTS[name]
    shown = "none" if default in ({}, ()) else default
    group.add_argument(
        flag, dest=name, default=argparse.SUPPRESS, help=f"{text} (default: {shown})", **kwargs
    )


def config_from_args(
    args: argparse.Namespace, base: TrainConfig | None = None, *, base_flag: str = "--resume"
) -> TrainConfig:
  """``base`` (default ``TrainConfig()``, or ``--recipe``'s config) with the config flags
  given on the command line; ``base_flag`` is the flag that gave ``base``."""
  recipe = getattr(args, "recipe", None)
  if recipe is not None and base is not None:
    raise ValueError(
        f"--recipe got {recipe!r} with {base_flag}; expected no --recipe: the config already "
        "holds its recipe's values (change single flags instead)."
    )
  given = {}
  for name, _, _ in _FLAGS:
    if hasattr(args, name):
      value = getattr(args, name)
      if name in ("model_options", "data_options"):
        value = {**getattr(base or TrainConfig(), name), **dict(value)}
      given[name] = value
  if recipe is not None:
    return TrainConfig.from_recipe(recipe, **given)
  if base is None:
    return TrainConfig(**given)
  if "optimizer" in given and "lr" not in given and given["optimizer"] != base.optimizer:
    given["lr"] = None  # the new optimizer's default learning rate
  return base.replace(**given)


# Failures the commands report in one line (exit code 2); anything else is a bug and
# keeps its traceback.
_KNOWN = (ValueError, OSError, EOFError, pickle.UnpicklingError, zipfile.BadZipFile)


def _known(error: BaseException) -> bool:
  from cnnjax.train.sharding import PeerLostError

  if isinstance(error, (*_KNOWN, PeerLostError)):
    return True
  # Orbax, TensorStore and XLA runtime errors (unreadable checkpoints, full disks, ...).
  module = type(error).__module__ or ""
  return module.split(".")[0] in ("orbax", "tensorstore", "jaxlib") or (
      type(error).__name__ == "JaxRuntimeError"
  )


def _one_line(error: BaseException) -> str:
  lines = [line.strip() for line in str(error).strip().splitlines() if line.strip()]
  text = lines[0] if lines else ""
  if type(error) is not ValueError and not type(error).__module__.startswith("cnnjax"):
    text = f"{type(error).__name__}: {text}"  # OSError, UnpicklingError, Orbax's, ...
  if len(lines) > 1:
    text += " (...; --debug shows the whole message)"
  return text


def _fail(command: str, error: BaseException, args: argparse.Namespace | None = None) -> int:
  if args is not None and getattr(args, "debug", False):
    traceback.print_exception(error, file=sys.stderr)
  print(f"cnnjax {command}: {_message(command, error)}", file=sys.stderr, flush=True)
  return 2


def _message(command: str, error: BaseException) -> str:
  """The one line of ``error`` without a repeat of the command's name
  (``predict: top_k got 0`` from ``cnnjax predict``)."""
  text = _one_line(error)
  return text[len(command) + 2 :] if text.startswith(f"{command}: ") else text


@contextlib.contextmanager
def _quiet_background(args: argparse.Namespace):
  """Keeps a failure to the command's one line (unless ``--debug``).

  When a checkpoint write fails (a full disk, a run directory that became unwritable),
  Orbax's background threads log it through absl, with tracebacks (450 lines for one full
  disk, measured with Orbax 0.12.8); TensorStore's writes that complete after Orbax
  closed their event loop report ``RuntimeError: Event loop is closed`` through
  ``sys.unraisablehook``; the failed writes' gathered futures, once collected, log
  "exception was never retrieved" through asyncio's logger; and the coroutines of the
  threads the Checkpointer cancelled warn "was never awaited" when collected. The error
  itself reaches the command, which reports it once, after the Checkpointer has shut
  those threads down. All of these are silenced while the command runs (the garbage is
  collected before its end), and restored after it.
  """
  if getattr(args, "debug", False):
    yield
    return
  import gc
  import logging
  import warnings

  loggers = [logging.getLogger(name) for name in ("absl", "asyncio")]
  levels, previous = [lg.level for lg in loggers], sys.unraisablehook

  def unraisable(info):
    if not (
        isinstance(info.exc_value, RuntimeError) and str(info.exc_value) == "Event loop is closed"
    ):
      previous(info)

  for lg in loggers:
    lg.setLevel(logging.CRITICAL + 1)
  sys.unraisablehook = unraisable
  try:
    yield
  finally:
    with warnings.catch_warnings():  # collected now, while silenced
      warnings.filterwarnings(
          "ignore", message="coroutine .* was never awaited", category=RuntimeWarning
      )
      gc.collect()
    for lg, level in zip(loggers, levels, strict=True):
      lg.setLevel(level)
    sys.unraisablehook = previous


def _quietly(command):
  """``command(args)`` inside :func:`_quiet_background`."""

  @functools.wraps(command)
  def run(args: argparse.Namespace) -> int:
    with _quiet_background(args):
      return command(args)

  return run


def _exit_now(code: int) -> None:
  """Leaves a multi-process run at once: after a lost peer, jax.distributed's shutdown at
  exit would wait for it (minutes) and then abort."""
  sys.stdout.flush()
  sys.stderr.flush()
  os._exit(code)


def _default_out(config: TrainConfig) -> str:
  return os.path.join("runs", f"{config.model}-{config.data}-{time.strftime('%Y%m%d-%H%M%S')}")


def _train(args: argparse.Namespace) -> int:
  import jax

  from cnnjax.train import sharding
  from cnnjax.train.compile_cache import enable_compile_cache
  from cnnjax.train.loop import NonFiniteLossError, train

  out = args.out
  try:
    cache = enable_compile_cache(args.compile_cache)  # before anything compiles
    sharding.initialize_distributed(
        getattr(args, "distributed", None),
        coordinator_address=args.coordinator_address,
        num_processes=args.num_processes,
        process_id=args.process_id,
    )
    if cache is not None and jax.process_count() > 1 and jax.default_backend() == "cpu":
      # jaxlib 0.12.1: ranks that load their programs from the persistent cache hang in
      # the first train step's Gloo collectives (0.10.2 did not). CPU programs compile in
      # seconds, so a multi-process CPU run compiles them.
      enable_compile_cache("off")
      print(
          "compile cache: off for a multi-process CPU run (cached programs can hang in "
          "their collectives)",
          file=sys.stderr,
      )
    base, base_flag = None, "--resume"
    if args.resume:
      if args.out is None:
        raise ValueError("--resume got no --out; expected the run directory to continue.")
      if args.config is not None:
        raise ValueError(
            f"--config got {args.config!r} with --resume; expected one of them (--resume "
            "starts from the run's own config.json)."
        )
      saved = os.path.join(args.out, "config.json")
      if os.path.exists(saved):
        base = TrainConfig.load(saved)
    elif args.config is not None:
      base, base_flag = TrainConfig.load(args.config), "--config"
    config = config_from_args(args, base, base_flag=base_flag)
    out = args.out or _default_out(config)
    train(
        config,
        out_dir=out,
        resume=args.resume,
        quiet=args.quiet,
        plots=not args.no_plots,
        allow_schedule_change=args.allow_schedule_change,
    )
  except KeyboardInterrupt:
    print(
        f"\ncnnjax train: interrupted; continue with: cnnjax train --out {out} --resume",
        file=sys.stderr,
    )
    return 130
  except NonFiniteLossError as e:
    print(f"cnnjax train: {e}", file=sys.stderr)
    return 1
  except Exception as e:
    if not _known(e):
      raise
    code = _fail("train", e, args)
    if isinstance(e, sharding.PeerLostError):
      _exit_now(code)
    return code
  return 0


def _eval(args: argparse.Namespace) -> int:
  from cnnjax.train.evaluation import evaluate

  try:
    dataset = None
    if args.data_dir is not None:
      from cnnjax.train.run import load_dataset

      config = TrainConfig.load(os.path.join(args.run, "config.json"))
      dataset = load_dataset(config.replace(data_dir=args.data_dir))
    result = evaluate(args.run, epoch=args.epoch, splits=args.split, dataset=dataset, tta=args.tta)
    for key, value in result.items():
      print(f"{key}: {value:.4f}" if isinstance(value, float) else f"{key}: {value}")
    for split in args.split:
      if f"{split}_accuracy" not in result:
        continue
      record = {
          "epoch": result["epoch"],
          "tta": result["tta"],
          **{k: v for k, v in result.items() if k.startswith(f"{split}_")},
      }
      path = _free_path(os.path.join(args.run, f"eval-{split}-{result['tta']}"), ".json")
      _write_new(path, json.dumps(record, indent=2) + "\n")
      print(f"wrote {path}")
  except Exception as e:  # a read-only run directory: the metrics are printed, then this
    if not _known(e):
      raise
    return _fail("eval", e, args)
  return 0


def _write_new(path: str, text: str) -> None:
  """Writes ``text`` to the new file ``path`` (never overwritten); a failed write (a full
  disk) leaves no partial file behind."""
  with open(path, "x") as f:
    try:
      f.write(text)
      f.flush()  # a full disk fails here, not in close()
    except BaseException:
      with contextlib.suppress(OSError):
        os.remove(path)
      raise


def _free_path(stem: str, ext: str) -> str:
  """``stem + ext``, or ``stem-2 + ext``, ``stem-3 + ext``, ... : the first that is free."""
  path, i = stem + ext, 1
  while os.path.exists(path):
    i += 1
    path = f"{stem}-{i}{ext}"
  return path


def _predict(args: argparse.Namespace) -> int:
  from cnnjax.train.inference import predict_files

  skipped = []

  def skip(error):
    skipped.append(error.path)
    print(
        f"cnnjax predict: {_message('predict', error).rstrip('.')}; skipped.",
        file=sys.stderr,
        flush=True,
    )

  try:
    results = predict_files(
        args.run,
        args.images,
        top_k=args.top_k,
        epoch=args.epoch,
        on_unreadable=skip if args.skip_unreadable else None,
    )
    if len(skipped) == len(args.images):
      n = len(args.images)
      raise ValueError(
          f"predict: none of the {n} image files could be read."
          if n > 1
          else "predict: the image file could not be read."
      )
    for path, best in zip(args.images, results, strict=True):
      if best is not None:
        print(f"{path}: " + ", ".join(f"{name} {p:.4f}" for name, p in best))
  except Exception as e:
    if not _known(e):
      raise
    return _fail("predict", e, args)
  return 1 if skipped else 0


def _search(args: argparse.Namespace) -> int:
  from cnnjax.train.search import DEFAULT_SPACE, search

  try:
    config = config_from_args(args)
    space = dict(args.space) if args.space else dict(DEFAULT_SPACE)
    out = args.out or os.path.join(
        "runs", f"search-{config.model}-{config.data}-{time.strftime('%Y%m%d-%H%M%S')}"
    )
    search(
        config,
        out_dir=out,
        trials=args.trials,
        epochs=args.trial_epochs,
        space=space,
        seed=args.search_seed,
        quiet=args.quiet,
    )
  except Exception as e:
    if not _known(e):
      raise
    return _fail("search", e, args)
  return 0


def _add_debug(parser: argparse.ArgumentParser) -> None:
  parser.add_argument(
      "--debug",
      action="store_true",
      help="on a failure, print the full traceback, not only the one-line "
      "message (default: off)",
  )


def _add_run(parser: argparse.ArgumentParser) -> None:
  parser.add_argument(
      "--run",
      metavar="DIR",
      required=True,
      help="a directory written by " "`cnnjax train --out DIR`, here or moved (required)",
  )
  parser.add_argument(
      "--epoch", type=int, default=None, help="checkpoint epoch (default: the latest verified one)"
  )


def add_subcommands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
  """Adds ``train``, ``eval``, ``predict`` and ``search`` to the ``cnnjax`` subparsers
  ``sub``."""
  fmt = argparse.RawDescriptionHelpFormatter
  p = sub.add_parser(
      "train",
      formatter_class=fmt,
      help="train a model (default: seed-cnn on the built-in shapes data, about a minute)",
      description="Train a zoo model with Optax; writes config.json, metrics.jsonl, "
      "checkpoints/, curves.png and filters.png to --out.\n\nExamples:\n"
      "  cnnjax train\n"
      "  cnnjax train --model seed-cnn --data cifar10 --data-dir cifar10-train-jpeg.zip \\\n"
      "      --epochs 10 --augment --out runs/seed-cnn\n"
      "  cnnjax train --recipe fast --data cifar10 --data-dir cifar10-train-jpeg.zip \\\n"
      "      --out runs/fastnet        # airbench94: fastnet, 10 epochs of batch 1024\n"
      "  cnnjax train --config runs/search/best_config.json --epochs 20\n"
      "  cnnjax train --out runs/seed-cnn --resume --epochs 20 --allow-schedule-change",
  )
  _add_config_flags(p)
  p.add_argument(
      "--out",
      metavar="DIR",
      default=None,
      help="run directory (default: runs/<model>-<data>-<date>-<time>)",
  )
  p.add_argument(
      "--resume",
      action="store_true",
      help="continue the run in --out from its latest verified checkpoint "
      "(SHA-256; a damaged one is moved aside and the one before used), with the "
      "flags given changing its config (not --seed); config.json records the "
      "change once an epoch under it completes. With no flag changed it ends "
      "exactly as an uninterrupted run (default: off)",
  )
  p.add_argument(
      "--allow-schedule-change",
      action="store_true",
      help="with --resume: accept flags (--epochs, --batch-size) that change the "
      "learning-rate schedule's length; the rate then jumps to the new "
      "schedule's value where the run resumes (default: refused, naming the "
      "jump)",
  )
  p.add_argument(
      "--config",
      metavar="FILE",
      default=None,
      help="start from this config.json (a run's, or search's best_config.json) "
      "instead of the defaults; flags given explicitly override it (default: "
      "none)",
  )
  p.add_argument(
      "--quiet", action="store_true", help="no progress bar or per-epoch lines (default: off)"
  )
  p.add_argument(
      "--no-plots", action="store_true", help="skip curves.png and filters.png (default: plots on)"
  )
  p.add_argument(
      "--compile-cache",
      metavar="DIR",
      default=None,
      help="JAX's persistent compilation cache: a second run of the same model "
      "and shapes loads its compiled programs from DIR instead of compiling "
      "them (metrics.jsonl: compile_seconds per program); off: no cache "
      "(default: $CNNJAX_CACHE/jax, else ~/.cache/cnnjax/jax)",
  )
  _add_debug(p)
  m = p.add_argument_group(
      "multi-process runs (one process per host or device group; all three flags, or none "
      "for cluster detection with --distributed: SLURM, Open MPI, TPU pods)"
  )
  m.add_argument(
      "--coordinator-address",
      metavar="HOST:PORT",
      default=None,
      help="process 0's address for jax.distributed, e.g. 10.0.0.1:12345 "
      "(default: none, a single process unless --distributed)",
  )
  m.add_argument(
      "--num-processes",
      type=int,
      metavar="N",
      default=None,
      help="number of processes (default: none)",
  )
  m.add_argument(
      "--process-id",
      type=int,
      metavar="I",
      default=None,
      help="this process's rank in [0, N) (default: none)",
  )
  p.set_defaults(func=_quietly(_train))

  e = sub.add_parser(
      "eval",
      help="evaluate a run's checkpoint on its validation/test data",
      description="Rebuild a run from its config.json and latest (or --epoch) "
      "checkpoint and report loss and accuracy; also writes "
      "DIR/eval-<split>-<tta>.json per split (eval-<split>-<tta>-2.json, ... "
      "when it exists: nothing is overwritten).",
  )
  _add_run(e)
  e.add_argument(
      "--split",
      nargs="+",
      choices=("train", "val", "test"),
      default=["val", "test"],
      help="splits to evaluate (default: val test)",
  )
  e.add_argument(
      "--tta",
      choices=TTA_MODES,
      default=None,
      help="test-time augmentation: none, flip or flip_translate (default: the " "run's --tta)",
  )
  e.add_argument(
      "--data-dir",
      metavar="PATH",
      default=None,
      help="read the data from here instead of the run's --data-dir (default: " "the run's)",
  )
  _add_debug(e)
  e.set_defaults(func=_quietly(_eval))

  r = sub.add_parser(
      "predict",
      help="classify image files with a trained run (no dataset needed)",
      description="Load a run's model (its directory alone, moved or copied: config.json, "
      "run.json, a checkpoint) and print each image's most probable classes, one line per "
      "file: PATH: CLASS PROBABILITY, ... Images of another size are resized (bilinear) to "
      "the run's input size; grey and colour are converted, alpha is dropped.",
  )
  _add_run(r)
  r.add_argument("images", nargs="+", metavar="IMAGE", help="PNG or JPEG files")
  r.add_argument("--top-k", type=int, default=3, help="classes shown per image (default: 3)")
  r.add_argument(
      "--skip-unreadable",
      action="store_true",
      help="report each file that cannot be read or decoded in one line on "
      "stderr and classify the others; the exit code is then 1 if any file was "
      "skipped (0: none; 2: none could be read). Without it the first such file "
      "stops the command, exit code 2 (default: off)",
  )
  _add_debug(r)
  r.set_defaults(func=_quietly(_predict))

  s = sub.add_parser(
      "search",
      formatter_class=fmt,
      help="random hyperparameter search in log space on the validation split",
      description="Random search: --trials short runs (--trial-epochs each) with "
      "hyperparameters drawn log-uniformly (uniformly when LO is 0), ranked by validation "
      "accuracy; writes results.md, results.jsonl and best_config.json to --out.\n\n"
      "Example:\n  cnnjax search --model seed-cnn --trials 8 --trial-epochs 2 \\\n"
      "      --space lr=1e-3:0.3 --space weight_decay=1e-5:1e-2",
  )
  _add_config_flags(s)
  s.add_argument("--trials", type=int, default=8, help="number of trials (default: 8)")
  s.add_argument("--trial-epochs", type=int, default=2, help="epochs per trial (default: 2)")
  s.add_argument(
      "--space",
      type=_range,
      action="append",
      metavar="FIELD=LO:HI",
      help="a searched float field and its range, repeatable (default: "
      "lr=1e-3:0.3 and weight_decay=1e-5:1e-2)",
  )
  s.add_argument(
      "--search-seed", type=int, default=0, help="seed of the hyperparameter sampling (default: 0)"
  )
  s.add_argument(
      "--out",
      metavar="DIR",
      default=None,
      help="search directory (default: runs/search-<model>-<data>-<date>-<time>)",
  )
  s.add_argument("--quiet", action="store_true", help="print nothing but errors (default: off)")
  _add_debug(s)
  s.set_defaults(func=_quietly(_search))
