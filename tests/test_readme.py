"""The README works when followed word for word: its Python examples run as written, and
its ``cnnjax`` commands parse into valid configurations."""

import builtins
import pathlib
import re
import shlex

import pytest

from cnnjax import cli
from cnnjax.train import cli as train_cli

README = pathlib.Path(__file__).resolve().parent.parent / "README.md"


def _blocks(language):
  return re.findall(rf"```{language}\n(.*?)```", README.read_text(), flags=re.S)


def test_readme_opens_with_two_commands():
  commands = [
      line for line in _blocks("bash")[0].splitlines()
      if line.strip() and not line.lstrip().startswith("#")
  ]
  assert len(commands) == 2, commands
  assert "pip install" in commands[0] and "cnnjax" in commands[0]
  assert "pytest" in commands[1]


def test_readme_python_examples_run():
  blocks = _blocks("python")
  assert blocks, "the README has Python examples"
  namespace = {}
  for block in blocks:
    lines = []
    for line in block.splitlines():
      # A line documented to raise is checked to raise, with the message it names.
      m = re.match(r"(.*?)\s*# (\w+Error): (.*?)(?: \.\.\.)?$", line)
      if m:
        exec(compile("\n".join(lines), "README.md", "exec"), namespace)  # noqa: S102
        lines = []
        code, error, message = m.groups()
        with pytest.raises(getattr(builtins, error), match=re.escape(message)):
          exec(compile(code, "README.md", "exec"), namespace)  # noqa: S102
        continue
      lines.append(line)
    exec(compile("\n".join(lines), "README.md", "exec"), namespace)  # noqa: S102


def _cnnjax_commands():
  """Every ``cnnjax …`` command of the README's shell blocks, continuation lines joined,
  comments and a trailing ``&`` dropped, as argument lists without the program."""
  commands = []
  for block in _blocks("bash"):
    for line in block.replace("\\\n", " ").splitlines():
      words = shlex.split(line, comments=True)
      if words and words[-1] == "&":
        words.pop()
      for i, word in enumerate(words):
        if word.endswith("bin/cnnjax") or word == "cnnjax":
          commands.append(words[i + 1:])
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
