"""What every experiment shares: arguments, data, training a model, and the results page.

An experiment script reads top to bottom as::

    import common

    def main(argv=None):
      args = common.parse_args(argv, name="baselines", description=__doc__)
      ds = common.load_data(args)
      run = common.train_model("seed-cnn", ds, args, epochs=common.pick(args, 10, 2))
      report = common.Report("baselines", args, title="Baselines on CIFAR-10")
      report.table(["model", "params", "val accuracy", "lecture"],
                   [["seed-cnn", common.count(run.params), common.percent(run.val_accuracy),
                     "72%"]])
      report.write()

Conventions:

* ``python experiments/NAME.py --data-dir PATH`` is the full run on CIFAR-10: ``PATH`` is
  the CIFAR-10 image-folder zip (``../shared/data/cifar10-train-jpeg.zip``), a directory
  holding it, or any offline copy ``cnnjax.data.load`` reads. The page goes to
  ``experiments/results/NAME.md`` (+ PNGs), to be committed.
* ``--quick`` trains tiny models for a few steps on a small generated ``"shapes"`` set
  (no files needed): a smoke run for the test suite, seconds long. Its page goes to a
  temporary directory unless ``--out`` is given, so it never overwrites committed results.
* Training runs (checkpoints, metrics, curves) go to a temporary directory that is
  deleted at the end, unless ``--runs DIR`` keeps them.

Only cnnjax's public API is used (plus NumPy and matplotlib).
"""

from __future__ import annotations

import os

# XLA:CPU compiles the "partitionable" threefry random-bit generator (jax's default) very
# slowly: measured here, a jitted jax.random.normal of a 3×3×8×9 kernel took 5-7 s of CPU
# to compile vs 0.4 s with the classic generator. cnnjax.train draws initial weights with
# the classic generator itself; the experiments run on one device, where partitioning buys
# nothing, so they use it for every other draw too (shuffling, augmentation, their own
# probes) unless the environment says otherwise (the variable is read when jax is first
# imported: a process that imported jax already keeps its setting). Those draws therefore
# differ from `cnnjax train`'s for the same seed; initial weights do not.
os.environ.setdefault("JAX_THREEFRY_PARTITIONABLE", "0")

import argparse  # noqa: E402
import dataclasses  # noqa: E402
import datetime  # noqa: E402
import platform  # noqa: E402
import re  # noqa: E402
import shlex  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable, Sequence  # noqa: E402
from typing import Any  # noqa: E402

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

import cnnjax  # noqa: E402
from cnnjax import data  # noqa: E402

__all__ = [
    "EXPERIMENTS_DIR",
    "RESULTS_DIR",
    "Report",
    "Trained",
    "count",
    "count_params",
    "load_data",
    "machine_info",
    "markdown_table",
    "parse_args",
    "percent",
    "pick",
    "train_model",
    "versus",
    "accuracy_figure",
]

EXPERIMENTS_DIR = os.path.dirname(os.path.abspath(__file__))
RESULTS_DIR = os.path.join(EXPERIMENTS_DIR, "results")
DEFAULT_DATA = os.path.join(
    EXPERIMENTS_DIR, os.pardir, os.pardir, "shared", "data", "cifar10-train-jpeg.zip"
)
CIFAR_ZIP = "cifar10-train-jpeg.zip"

# The --quick data: small, generated, 32×32×3 like CIFAR-10, 4 shape classes.
QUICK_DATA = dict(num_train=640, num_test=1, val_size=128, num_classes=4)


# --------------------------------------------------------------------------------------
# Arguments.


def parse_args(
    argv: Sequence[str] | None = None,
    *,
    name: str,
    description: str | None = None,
    extra: Callable[[argparse.ArgumentParser], None] | None = None,
) -> argparse.Namespace:
  """Parses an experiment's command line.

  Args:
    argv: the arguments (None: ``sys.argv[1:]``).
    name: the experiment's name, e.g. ``"baselines"`` (the page is ``NAME.md``).
    description: the ``--help`` text (the script's docstring).
    extra: adds the experiment's own flags to the parser.

  Returns:
    A namespace with ``data_dir``, ``quick``, ``out`` (the results directory, made to
    exist), ``runs`` (training run directory or None), ``seed``, ``epochs`` (an override
    or None), ``name`` and ``argv`` (for the command line on the page).
  """
  parser = argparse.ArgumentParser(
      prog=f"python experiments/{name}.py",
      description=description,
      formatter_class=argparse.RawDescriptionHelpFormatter,
  )
  parser.add_argument(
      "--data-dir",
      default=None,
      help="CIFAR-10: the image-folder zip (cifar10-train-jpeg.zip), a directory holding "
      "it, or any offline copy cnnjax.data.load reads (default: ../shared/data/"
      f"{CIFAR_ZIP} beside the repository). Unused with --quick.",
  )
  parser.add_argument(
      "--quick",
      action="store_true",
      help="a smoke run: small generated 'shapes' data, tiny models and epochs (seconds).",
  )
  parser.add_argument(
      "--out",
      default=None,
      help="where NAME.md and its PNGs are written (default: experiments/results; with "
      "--quick a temporary directory, so committed results are never overwritten).",
  )
  parser.add_argument(
      "--runs",
      default=None,
      help="keep the training runs (config, metrics, checkpoints, curves) under this "
      "directory (default: a temporary directory, deleted at the end).",
  )
  parser.add_argument(
      "--seed",
      type=int,
      default=0,
      help="seed of the data split, initialisation and shuffling (default 0).",
  )
  parser.add_argument(
      "--epochs",
      type=int,
      default=None,
      help="override every model's number of epochs (default: the "
      "experiment's choice per model).",
  )
  if extra is not None:
    extra(parser)
  argv = list(sys.argv[1:] if argv is None else argv)
  args = parser.parse_args(argv)
  args.name = name
  args.argv = argv
  if args.epochs is not None and args.epochs < 1:
    parser.error(f"--epochs got {args.epochs!r}; expected a positive int.")
  if args.out is None:
    args.out = (
        os.path.join(tempfile.gettempdir(), "cnnjax-experiments") if args.quick else RESULTS_DIR
    )
  args.out = os.path.abspath(args.out)
  os.makedirs(args.out, exist_ok=True)
  args.started = time.time()
  return args


def pick(args: argparse.Namespace, full: Any, quick: Any) -> Any:
  """``quick`` under ``--quick``, else ``full``: one line per knob in the scripts."""
  return quick if args.quick else full


# --------------------------------------------------------------------------------------
# Data.


def _resolve_data_dir(data_dir: str | None) -> str:
  path = os.path.normpath(DEFAULT_DATA if data_dir is None else os.path.expanduser(data_dir))
  if os.path.isdir(path) and os.path.isfile(os.path.join(path, CIFAR_ZIP)):
    path = os.path.join(path, CIFAR_ZIP)
  if not os.path.exists(path):
    raise FileNotFoundError(
        f"experiments: --data-dir got {data_dir!r} ({path}), which does not exist; expected "
        f"the CIFAR-10 zip ({CIFAR_ZIP}), a directory holding it, or a CIFAR-10 release "
        "directory. Use --quick to run on generated data."
    )
  return path


def load_data(args: argparse.Namespace) -> data.Dataset:
  """The experiment's dataset: CIFAR-10 (45,000 / 5,000), or small shapes with --quick.

  With ``--quick``: :data:`QUICK_DATA` generated shapes (512 train / 128 validation, 4
  classes, the test split dropped). Otherwise ``cnnjax.data.load("cifar10",
  data_dir=...)``, its validation split seeded by ``--seed`` (the same 5,000 images for
  every model of an experiment).
  """
  if args.quick:
    ds = data.load("shapes", seed=args.seed, progress=False, **QUICK_DATA)
    # No test split: validation accuracy is what every experiment reports (as on the
    # CIFAR-10 zip), and evaluating a second array shape would cost a compilation.
    ds = dataclasses.replace(ds, test_images=None, test_labels=None)
  else:
    ds = data.load("cifar10", data_dir=_resolve_data_dir(args.data_dir), seed=args.seed)
  args.dataset_line = (
      f"{ds.name} ({ds.source}): {len(ds.train_labels):,} train / {len(ds.val_labels):,} "
      f"validation images of {'×'.join(map(str, ds.train_images.shape[1:]))}, "
      f"{len(ds.class_names)} classes"
  )
  print(args.dataset_line, flush=True)
  return ds


# --------------------------------------------------------------------------------------
# Training.


@dataclasses.dataclass
class Trained:
  """A trained model and its figures.

  Attributes:
    label: the name shown in tables.
    val_accuracy: validation accuracy after the last epoch, in [0, 1].
    params: the number of trained parameters.
    seconds: wall-clock seconds of ``cnnjax.train.train`` (compile included).
    epochs: epochs trained.
    history: the per-epoch ``metrics.jsonl`` records.
    result: the ``cnnjax.train.TrainResult`` (``result.model`` is the trained model).
    mean, std: the per-channel statistics the inputs were normalised with.
  """

  label: str
  val_accuracy: float
  params: int
  seconds: float
  epochs: int
  history: list[dict[str, Any]]
  result: Any = dataclasses.field(repr=False)
  mean: jax.Array = dataclasses.field(repr=False)
  std: jax.Array = dataclasses.field(repr=False)
  _predict: Callable | None = dataclasses.field(default=None, repr=False, compare=False)

  @property
  def model(self):
    """The trained ``nnx.Module``, in evaluation mode."""
    return self.result.model

  @property
  def seconds_per_epoch(self) -> float:
    """Median training seconds of one epoch (the compile excluded)."""
    return float(np.median([r["train_seconds"] for r in self.history]))

  def normalize(self, images: jax.Array) -> jax.Array:
    """``uint8 [N, H, W, C]`` images → the normalised float inputs the model was trained on."""
    return data.normalize(jnp.asarray(images), self.mean, self.std)

  def logits(self, images, *, batch_size: int = 500) -> jax.Array:
    """The trained model's logits ``[N, K]`` for ``uint8 [N, H, W, C]`` images.

    Compiled once per model and batch size (the last batch is padded).
    """
    if self._predict is None:
      from flax import nnx

      graphdef, state = nnx.split(self.model)

      @jax.jit
      def predict(state, x):
        return nnx.merge(graphdef, state)(self.normalize(x))

      self._predict = lambda x: predict(state, x)
    images = jnp.asarray(images)
    n = images.shape[0]
    size = min(batch_size, n)
    out = []
    for i in range(0, n, size):
      batch = images[i : i + size]
      pad = size - batch.shape[0]
      if pad:
        batch = jnp.concatenate([batch, jnp.zeros((pad, *batch.shape[1:]), batch.dtype)])
      out.append(self._predict(batch)[: size - pad])
    return jnp.concatenate(out)

  def accuracy(self, images, labels) -> float:
    """Accuracy of the trained model on ``uint8`` ``images`` with ``labels``."""
    return float(jnp.mean(jnp.argmax(self.logits(images), -1) == jnp.asarray(labels)))


def count_params(tree) -> int:
  """The number of array elements in a pytree of parameters (e.g. ``nnx.state(model)``)."""
  return int(sum(np.size(x) for x in jax.tree.leaves(tree)))


def train_model(
    model: str,
    dataset: data.Dataset,
    args: argparse.Namespace,
    *,
    epochs: int,
    label: str | None = None,
    model_options: dict[str, Any] | None = None,
    model_fn: Callable[..., Any] | None = None,
    **config: Any,
) -> Trained:
  """Trains a zoo model (or ``model_fn``'s) with ``cnnjax.train`` and returns its figures.

  Args:
    model: the zoo name (``cnnjax.models.names()``); with ``model_fn``, just a label for
      the run's config.
    dataset: from :func:`load_data`.
    args: the parsed arguments (``--epochs`` overrides ``epochs``; ``--seed``; ``--runs``).
    epochs: epochs to train.
    label: the name in tables (default ``model``).
    model_options: keyword options for ``cnnjax.models.get`` (e.g. ``conv="tiled"``).
    model_fn: a factory ``(num_classes=, rngs=, input_shape=) -> nnx.Module`` used
      instead of the zoo (for architectures the zoo lacks).
    **config: any other ``cnnjax.TrainConfig`` field (optimizer, lr, augment, seed, ...;
      ``seed`` defaults to ``--seed``). Defaults here: Adam, lr 1e-3, cosine schedule,
      no weight decay, batch 128 (64 with ``--quick``).

  Returns:
    A :class:`Trained`.
  """
  from cnnjax import train as cnn_train

  label = label or model
  settings = dict(
      optimizer="adam",
      lr=1e-3,
      weight_decay=0.0,
      schedule="cosine",
      batch_size=pick(args, 128, 64),
      eval_batch_size=pick(args, 1000, 128),
      checkpoint_every=10_000,
      keep_checkpoints=1,
  )
  settings.update(config)
  settings.setdefault("seed", args.seed)
  cfg = cnn_train.TrainConfig(
      model=model,
      model_options=dict(model_options or {}),
      data=dataset.name,
      epochs=args.epochs or epochs,
      **settings,
  )
  slug = re.sub(r"[^A-Za-z0-9_.-]+", "-", label).strip("-") or "run"
  print(
      f"[{args.name}] training {label}: {cfg.epochs} epoch(s), {cfg.optimizer} lr " f"{cfg.lr:g}",
      flush=True,
  )
  with _run_dir(args, slug) as out_dir:
    t0 = time.perf_counter()
    result = cnn_train.train(
        cfg, out_dir=out_dir, dataset=dataset, model_fn=model_fn, quiet=args.quick, plots=False
    )
    seconds = time.perf_counter() - t0
  mean, std = jnp.asarray(result.spec.mean), jnp.asarray(result.spec.std)
  run = Trained(
      label=label,
      val_accuracy=float(result.history[-1]["val_accuracy"]),
      params=count_params(result.state.params),
      seconds=seconds,
      epochs=cfg.epochs,
      history=result.history,
      result=result,
      mean=mean,
      std=std,
  )
  print(
      f"[{args.name}] {label}: val accuracy {run.val_accuracy:.4f}, {run.params:,} "
      f"parameters, {seconds:.1f} s",
      flush=True,
  )
  return run


class _run_dir:
  """A training run directory: under ``--runs`` (kept), else temporary (deleted)."""

  def __init__(self, args, slug: str):
    self.args, self.slug, self.tmp = args, slug, None

  def __enter__(self) -> str:
    if self.args.runs:
      base = os.path.join(os.path.abspath(self.args.runs), self.args.name)
      os.makedirs(base, exist_ok=True)
      path, i = os.path.join(base, self.slug), 1
      while os.path.exists(path):
        i += 1
        path = os.path.join(base, f"{self.slug}-{i}")
      return path
    self.tmp = tempfile.TemporaryDirectory(prefix=f"cnnjax-{self.args.name}-")
    return os.path.join(self.tmp.name, self.slug)

  def __exit__(self, *exc) -> None:
    if self.tmp is not None:
      self.tmp.cleanup()


# --------------------------------------------------------------------------------------
# Formatting.


def percent(x: float | None, digits: int = 1) -> str:
  """``0.7234`` → ``"72.3%"`` (``"—"`` for None)."""
  return "—" if x is None else f"{100 * x:.{digits}f}%"


def count(n: int | None) -> str:
  """``2152010`` → ``"2,152,010"`` (``"—"`` for None)."""
  return "—" if n is None else f"{int(n):,}"


def versus(measured: float | None, lecture: float | None) -> str:
  """The difference to the lecture's figure in percentage points: ``"+2.3 pt"``."""
  if measured is None or lecture is None:
    return "—"
  return f"{100 * (measured - lecture):+.1f} pt"


def accuracy_figure(runs: Sequence[Trained], *, title: str = ""):
  """A matplotlib figure of validation accuracy per epoch, one line per run."""
  import matplotlib

  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  fig, ax = plt.subplots(figsize=(5.5, 3.6))
  for run in runs:
    epochs = [r["epoch"] for r in run.history]
    ax.plot(
        epochs,
        [100 * r["val_accuracy"] for r in run.history],
        marker="o",
        markersize=3,
        label=f"{run.label} ({run.val_accuracy:.1%})",
    )
  ax.set_xlabel("epoch")
  ax.set_ylabel("validation accuracy (%)")
  ax.grid(alpha=0.3)
  ax.legend(fontsize=8)
  if title:
    ax.set_title(title)
  fig.tight_layout()
  return fig


def markdown_table(
    headers: Sequence[str], rows: Sequence[Sequence[Any]], align: str | None = None
) -> str:
  """A GitHub markdown table.

  Args:
    headers: column titles.
    rows: one sequence of cells per row (converted with ``str``).
    align: one letter per column, ``l``/``r``/``c`` (default: first column left, the
      others right).
  """
  align = align or "l" + "r" * (len(headers) - 1)
  if len(align) != len(headers):
    raise ValueError(f"markdown_table: align got {align!r}; expected {len(headers)} letters.")
  marks = {"l": ":--", "r": "--:", "c": ":-:"}
  lines = ["| " + " | ".join(headers) + " |", "|" + "|".join(marks[a] for a in align) + "|"]
  for row in rows:
    if len(row) != len(headers):
      raise ValueError(
          f"markdown_table: a row got {len(row)} cells {list(row)!r}; expected {len(headers)}."
      )
    lines.append("| " + " | ".join(str(c).replace("|", "\\|") for c in row) + " |")
  return "\n".join(lines)


def _versions() -> str:
  import flax
  import optax

  return (
      f"Python {platform.python_version()}, jax {jax.__version__}, flax {flax.__version__}"
      f", optax {optax.__version__}, numpy {np.__version__}, cnnjax {cnnjax.__version__}"
      f"; jax_threefry_partitionable={jax.config.jax_threefry_partitionable}"
  )


def _git_commit() -> str | None:
  """The short commit of the checkout, noting uncommitted changes to tracked files."""

  def git(*cmd):
    return subprocess.run(
        ["git", *cmd], cwd=EXPERIMENTS_DIR, capture_output=True, text=True, timeout=10
    )

  try:
    head, status = git("rev-parse", "--short", "HEAD"), git(
        "status", "--porcelain", "--untracked-files=no"
    )
  except (OSError, subprocess.SubprocessError):
    return None
  if head.returncode != 0 or not head.stdout.strip():
    return None
  dirty = status.returncode == 0 and status.stdout.strip()
  return head.stdout.strip() + (" (with uncommitted changes)" if dirty else "")


def machine_info() -> dict[str, str]:
  """The machine, library versions, commit and date, for the results page."""
  devices = jax.devices()
  kinds = sorted({d.device_kind for d in devices})
  cpu = platform.processor() or platform.machine()
  try:
    with open("/proc/cpuinfo") as f:
      names = re.findall(r"model name\s*:\s*(.+)", f.read())
    cpu = names[0].strip() if names else cpu
  except OSError:
    pass
  return {
      "machine": f"{platform.system()} {platform.machine()}, {os.cpu_count()} CPU core(s) "
      f"({cpu}); jax backend {jax.default_backend()}: {len(devices)} x "
      f"{', '.join(kinds)}",
      "versions": _versions(),
      "commit": _git_commit() or "unknown",
      "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
  }


def command_line(args: argparse.Namespace) -> str:
  """The command that reproduces the run, as typed from the repository root."""
  return " ".join(["python", f"experiments/{args.name}.py", *map(shlex.quote, args.argv)])


# --------------------------------------------------------------------------------------
# The results page.


def _mode(args: argparse.Namespace) -> str:
  if args.quick:
    return "--quick smoke run (generated data, tiny epochs): NOT the real figures"
  if args.epochs is not None:
    return (
        f"full data, every model cut to --epochs {args.epochs}: a sanity run, not the "
        "experiment's figures"
    )
  return "full run"


class Report:
  """Builds ``OUT/NAME.md``: title, text, tables, figures, then how it was made.

  Example:
    >>> report = Report("baselines", args, title="Baselines")  # doctest: +SKIP
    >>> report.table(["model", "accuracy", "lecture"], [["linear", "39.1%", "38%"]])
    >>> report.figure(fig, "curves", "Validation accuracy per epoch.")
    >>> report.write()  # returns the path of the page
  """

  def __init__(self, name: str, args: argparse.Namespace, *, title: str, intro: str | None = None):
    self.name, self.args, self.title = name, args, title
    self.parts: list[str] = []
    self.figures: list[str] = []
    if intro:
      self.text(intro)

  def text(self, text: str) -> None:
    """A paragraph (markdown)."""
    self.parts.append(text.strip())

  def heading(self, text: str) -> None:
    """A section heading."""
    self.parts.append(f"## {text}")

  def table(
      self, headers: Sequence[str], rows: Sequence[Sequence[Any]], align: str | None = None
  ) -> str:
    """A table (see :func:`markdown_table`); returns its markdown."""
    md = markdown_table(headers, rows, align)
    self.parts.append(md)
    return md

  def figure(self, fig, stem: str, caption: str = "") -> str:
    """Saves a matplotlib figure as ``OUT/NAME_STEM.png`` and shows it on the page.

    Returns:
      The PNG's path.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    filename = f"{self.name}_{stem}.png"
    path = os.path.join(self.args.out, filename)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    self.figures.append(path)
    self.parts.append(f"![{caption or stem}]({filename})" + (f"\n\n*{caption}*" if caption else ""))
    return path

  def markdown(self) -> str:
    """The page as markdown."""
    info = machine_info()
    elapsed = time.time() - getattr(self.args, "started", time.time())
    footer = [
        "## How this was made",
        f"- Command: `{command_line(self.args)}`",
        f"- Data: {getattr(self.args, 'dataset_line', 'none')}",
        f"- Mode: {_mode(self.args)}",
        f"- Machine: {info['machine']}",
        f"- Versions: {info['versions']}",
        f"- Commit: {info['commit']}; date: {info['date']}; wall time {elapsed:.0f} s",
    ]
    return "\n\n".join([f"# {self.title}", *self.parts, "\n".join(footer)]) + "\n"

  def write(self) -> str:
    """Writes ``OUT/NAME.md`` (atomically) and returns its path."""
    path = os.path.join(self.args.out, f"{self.name}.md")
    tmp = f"{path}.tmp"
    with open(tmp, "w") as f:
      f.write(self.markdown())
    os.replace(tmp, path)
    print(f"[{self.name}] wrote {path}", flush=True)
    return path
