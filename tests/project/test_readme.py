"""The README works when followed word for word: its Python examples run as written in a
fresh Python, and its ``cnnjax`` commands, and the guides', parse into valid
configurations. The Python examples of ``docs/index.md`` and the guides run the same way;
every stated result is an ``assert`` (or a ``# SomeError: message`` comment)."""

import ast
import os
import pathlib
import re
import shlex
import subprocess
import sys
import textwrap

import pytest

from cnnjax import cli
from cnnjax.train import cli as train_cli

ROOT = pathlib.Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
GUIDES = sorted((ROOT / "docs" / "guides").glob("*.md"))
# The pages with Python examples (the tutorials are executed by the docs build instead;
# the migration guide by tests/project/test_migration.py, which runs it the same way and
# checks each row's result).
DOCS = [
    p
    for p in (ROOT / "docs" / "index.md", *GUIDES)
    if "```python" in p.read_text() and p.name != "migration.md"
]
# Where a page's examples run from: the repository root, except an experiment script's.
DOCS_CWD = {"experiments.md": ROOT / "experiments"}


def _blocks(language, path=README):
  return re.findall(rf"```{language}\n(.*?)```", path.read_text(), flags=re.S)


def test_readme_opens_with_two_commands():
  commands = [
      line
      for line in _blocks("bash")[0].splitlines()
      if line.strip() and not line.lstrip().startswith("#")
  ]
  assert len(commands) == 2, commands
  assert "pip install" in commands[0] and "cnnjax" in commands[0]
  assert "pytest" in commands[1]


def _script(blocks):
  """The blocks as one script; a line ending ``# SomeError: message`` must raise that."""
  lines = []
  for line in "\n".join(blocks).splitlines():
    m = re.match(r"(\s*)(.*?)\s*# (\w+Error): (.*?)(?: \.\.\.)?$", line)
    if not m:
      lines.append(line)
      continue
    indent, code, error, message = m.groups()
    lines += textwrap.indent(
        textwrap.dedent(f"""\
        try:
          {code}
        except {error} as e:
          assert {message!r} in str(e), str(e)
        else:
          raise AssertionError({f"expected {error}: {message}"!r})
        """),
        indent,
    ).splitlines()
  return "\n".join(lines)


def test_readme_python_examples_run():
  # In a fresh Python, as a reader runs them: the first block calls configure_cpu(),
  # which must come before JAX computes anything.
  blocks = _blocks("python")
  assert blocks, "the README has Python examples"
  proc = subprocess.run(
      [sys.executable, "-c", _script(blocks)],
      capture_output=True,
      text=True,
      timeout=600,
      env=dict(os.environ, JAX_PLATFORMS="cpu"),
  )
  assert proc.returncode == 0, proc.stderr[-3000:]


# Appended to a page's script: the names it reads from modules exist, also inside
# functions the page defines but does not call (the experiment template's main()).
_CHECK_MODULE_NAMES = """
import ast as _ast, types as _types
for _node in _ast.walk(_ast.parse(_SOURCE)):
  if isinstance(_node, _ast.Attribute) and isinstance(_node.value, _ast.Name):
    _module = globals().get(_node.value.id)
    if isinstance(_module, _types.ModuleType):
      assert hasattr(_module, _node.attr), f"{_node.value.id}.{_node.attr} does not exist"
"""


def _unasserted_results(blocks):
  """Lines that state a result in a comment instead of asserting it: a bare expression
  whose trailing comment is a Python value, like ``x.shape  # (1, 3, 3, 1)``."""
  found = []
  for line in "\n".join(blocks).splitlines():
    code, sep, comment = line.partition("  # ")
    if not sep:
      continue
    try:
      statements = ast.parse(code.strip()).body
      ast.literal_eval(comment.strip())
    except Exception:  # not a whole statement, or a comment in words
      continue
    if len(statements) == 1 and isinstance(statements[0], ast.Expr):
      found.append(line)
  return found


@pytest.mark.parametrize("path", DOCS, ids=lambda p: str(p.relative_to(ROOT)))
def test_docs_python_examples_run(path):
  # Each page in a fresh Python, from its first block, as a reader runs it.
  blocks = _blocks("python", path)
  unasserted = _unasserted_results(blocks)
  assert not unasserted, f"state these results with assert: {unasserted}"
  script = _script(blocks)
  script += f"\n_SOURCE = {script!r}\n{_CHECK_MODULE_NAMES}"
  proc = subprocess.run(
      [sys.executable, "-c", script],
      capture_output=True,
      text=True,
      timeout=600,
      cwd=DOCS_CWD.get(path.name, ROOT),
      env=dict(os.environ, JAX_PLATFORMS="cpu"),
  )
  assert proc.returncode == 0, proc.stderr[-3000:]


def test_readme_results_are_asserted():
  unasserted = _unasserted_results(_blocks("python"))
  assert not unasserted, f"state these results with assert: {unasserted}"


def _cnnjax_commands():
  """Every ``cnnjax …`` command of the README's and the guides' shell blocks, continuation
  lines joined, comments and a trailing ``&`` dropped, as argument lists without the
  program."""
  commands = []
  for block in [b for path in (README, *GUIDES) for b in _blocks("bash", path)]:
    for line in block.replace("\\\n", " ").splitlines():
      words = shlex.split(line, comments=True)
      if words and words[-1] == "&":
        words.pop()
      for i, word in enumerate(words):
        if word.endswith("bin/cnnjax") or word == "cnnjax":
          commands.append(words[i + 1 :])
          break
  return commands


def test_readme_cnnjax_commands_parse_and_make_valid_configs():
  # The runs need data or earlier runs; their flags and values are checked here, so a
  # renamed flag or a refused value fails the suite instead of a reader.
  commands = _cnnjax_commands()
  assert sum(c[0] == "train" for c in commands) >= 6, commands
  parser = cli.build_parser()
  for argv in commands:
    args = parser.parse_args(argv)
    if argv[0] == "train" and "--config" not in argv:
      config = train_cli.config_from_args(args)  # the config checks every value
      for name in ("model", "epochs", "dtype", "data_dir"):
        if hasattr(args, name):
          assert getattr(config, name) == getattr(args, name), (name, argv)
