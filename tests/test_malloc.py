"""``cnnjax._malloc``: with ``configure_cpu(allocator=True)``, glibc keeps XLA:CPU's freed
temporaries for reuse.

Checked by its effect: the minor page faults of repeated executions of a program with
large temporaries, in a fresh process with the setting and without it.
"""

import json
import os
import platform
import subprocess
import sys

import pytest

from cnnjax import _malloc

pytestmark = pytest.mark.skipif(
    not (sys.platform.startswith("linux") and platform.libc_ver()[0] == "glibc"),
    reason="the allocator settings are glibc's (Linux); elsewhere nothing is changed",
)

# seed-cnn's gradient at batch 128 (its temporaries: activations and gradients of a few
# MiB to 12 MiB each), run 6 times after a warm-up; prints the minor page faults of those
# 6 runs. Measured: 68 k without the settings (three runs), 0, 0 and 22 k with them.
_PROBE = """
import json, resource
import cnnjax
cnnjax.configure_cpu(allocator=True)
import jax, jax.numpy as jnp
from flax import nnx
from cnnjax import _malloc, models
model = models.get("seed-cnn", num_classes=10, rngs=nnx.Rngs(0), input_shape=(32, 32, 3))
graphdef, params, rest = nnx.split(model, nnx.Param, ...)
f = jax.jit(jax.grad(lambda p, x: jnp.sum(nnx.merge(graphdef, p, rest)(x) ** 2)))
x = jnp.ones((128, 32, 32, 3), jnp.float32)
jax.block_until_ready(f(params, x))
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(6):
  jax.block_until_ready(f(params, x))
after = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
print(json.dumps({"faults": after - before, "wanted": _malloc.wanted()}))
"""


def _probe(**env_changes):
  env = {
      k: v
      for k, v in os.environ.items()
      if k != "GLIBC_TUNABLES" and not (k.startswith("MALLOC_") and k.endswith("_"))
  }
  env.pop(_malloc.OPT_OUT, None)
  env["JAX_PLATFORMS"] = "cpu"  # XLA:CPU's temporaries (an accelerator's live on it)
  env.update(env_changes)
  out = subprocess.run(
      [sys.executable, "-c", _PROBE],
      env=env,
      check=True,
      timeout=300,
      capture_output=True,
      text=True,
  ).stdout
  return json.loads(out.strip().splitlines()[-1])


def test_freed_temporaries_are_reused_not_faulted_in_again():
  on, off = _probe(), _probe(**{_malloc.OPT_OUT: "0"})
  assert on["wanted"] and not off["wanted"]
  pages = 6 * 12 * 2**20 // 4096  # the largest temporary, were it faulted in every run
  assert off["faults"] > pages, off  # glibc's default: mmap and unmap per run
  assert on["faults"] < off["faults"] / 2, (on, off)


def test_a_users_own_allocator_settings_are_kept(monkeypatch):
  for name, value in (("GLIBC_TUNABLES", "glibc.malloc.arena_max=2"), ("MALLOC_ARENA_MAX_", "2")):
    monkeypatch.setenv(name, value)
    assert not _malloc.wanted() and not _malloc.apply()
    monkeypatch.delenv(name)
  monkeypatch.setenv(_malloc.OPT_OUT, "off")
  assert not _malloc.wanted()
  monkeypatch.delenv(_malloc.OPT_OUT)
  assert _malloc.wanted()
