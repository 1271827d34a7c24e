"""The README works when followed word for word: its Python examples run as written in a
fresh Python, and its ``cnnjax`` commands, and the guides', parse into valid
configurations."""

import os
import pathlib
import re
import shlex
import subprocess
import sys
import textwrap

from cnnjax import cli
from cnnjax.train import cli as train_cli

ROOT = pathlib.Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
GUIDES = sorted((ROOT / "docs" / "guides").glob("*.md"))


def _blocks(language, path=README):
  return re.findall(rf"```{language}\n(.*?)```", path.read_text(), flags=re.S)


def test_readme_opens_with_two_commands():
  commands = [
      line for line in _blocks("bash")[0].splitlines()
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
    lines += textwrap.indent(textwrap.dedent(f"""\
        try:
          {code}
        except {error} as e:
          assert {message!r} in str(e), str(e)
        else:
          raise AssertionError({f"expected {error}: {message}"!r})
        """), indent).splitlines()
  return "\n".join(lines)


def test_readme_python_examples_run():
  # In a fresh Python, as a reader runs them: the first block calls configure_cpu(),
  # which must come before JAX computes anything.
  blocks = _blocks("python")
  assert blocks, "the README has Python examples"
  proc = subprocess.run([sys.executable, "-c", _script(blocks)], capture_output=True,
                        text=True, timeout=600, env=dict(os.environ, JAX_PLATFORMS="cpu"))
  assert proc.returncode == 0, proc.stderr[-3000:]


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
