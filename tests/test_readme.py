"""The README works when followed word for word: its Python examples run as written."""

import builtins
import pathlib
import re

import pytest

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
