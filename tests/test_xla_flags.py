"""cnnjax's XLA:CPU flag: appended at import where it can act, never over a user's choice."""

import json
import os
import subprocess
import sys
import textwrap
import warnings

import jax
import pytest

from cnnjax import _xla_flags


@pytest.fixture
def backends_started(monkeypatch):
  from jax._src import xla_bridge

  def set_started(started: bool):
    monkeypatch.setattr(xla_bridge, "backends_are_initialized", lambda: started)

  return set_started


def test_appends_to_existing_flags(backends_started):
  backends_started(False)
  environ = {"XLA_FLAGS": "--xla_force_host_platform_device_count=2"}
  assert _xla_flags.apply(environ)
  assert environ["XLA_FLAGS"] == (
      "--xla_force_host_platform_device_count=2 " + _xla_flags.YNN_CONV_OFF)


def test_sets_flags_when_absent(backends_started):
  backends_started(False)
  environ = {}
  assert _xla_flags.apply(environ)
  assert environ["XLA_FLAGS"] == _xla_flags.YNN_CONV_OFF


def test_keeps_the_users_own_ynn_setting(backends_started):
  backends_started(False)
  environ = {"XLA_FLAGS": "--xla_cpu_experimental_ynn_fusion_type="}
  assert not _xla_flags.apply(environ)
  assert environ["XLA_FLAGS"] == "--xla_cpu_experimental_ynn_fusion_type="


@pytest.mark.parametrize("value", ["0", "false", "OFF"])
def test_opt_out(backends_started, value):
  backends_started(False)
  environ = {_xla_flags.OPT_OUT: value}
  assert not _xla_flags.apply(environ)
  assert "XLA_FLAGS" not in environ


@pytest.mark.skipif(jax.default_backend() != "cpu",
                    reason="the warning concerns XLA:CPU only; other backends ignore the flag")
def test_warns_when_the_cpu_backend_already_started(backends_started):
  backends_started(True)  # true in this process anyway once a test has run JAX
  environ = {}
  with pytest.warns(UserWarning, match="imported after JAX had started"):
    assert not _xla_flags.apply(environ)
  assert "XLA_FLAGS" not in environ
  with warnings.catch_warnings():
    warnings.simplefilter("error")
    assert not _xla_flags.apply({_xla_flags.OPT_OUT: "0"})  # opted out: silent


@pytest.mark.parametrize("version, knows", [
    ((0, 5, 0), False), ((0, 8, 1), False), ((0, 10, 1), False), ((0, 10, 2), True),
    ((0, 11, 2), True), ((1, 0, 0), True), (None, False)])
def test_older_jaxlib_never_gets_the_flag(backends_started, monkeypatch, version, knows):
  # XLA aborts the process at the first operation on a flag it does not know.
  backends_started(False)
  monkeypatch.setattr(_xla_flags, "jaxlib_version", lambda: version)
  environ = {"XLA_FLAGS": "--xla_force_host_platform_device_count=2"}
  assert _xla_flags.apply(environ) == knows
  assert (_xla_flags.YNN_CONV_OFF in environ["XLA_FLAGS"]) == knows


def test_installed_jaxlib_version_is_read():
  assert _xla_flags.jaxlib_version() == tuple(
      int(n) for n in jax.lib.__version__.split(".")[:3])


def test_import_takes_convolutions_off_ynnpack():
  """In a fresh process, a convolution compiled after ``import cnnjax`` is not a YNN fusion
  (the backend honoured the flag); with the opt-out it is (this jaxlib has YNNPACK)."""
  script = textwrap.dedent("""
      import json, os, sys
      import cnnjax, jax, jax.numpy as jnp
      x, w = jnp.ones((4, 16, 16, 32)), jnp.ones((3, 3, 32, 32))  # YNN takes this size
      f = lambda x, w: jax.lax.conv_general_dilated(x, w, (1, 1), "SAME",
                                                    dimension_numbers=("NHWC", "HWIO", "NHWC"))
      hlo = jax.jit(f).lower(x, w).compile().as_text()
      print(json.dumps({"flags": os.environ.get("XLA_FLAGS", ""), "ynn": "ynn" in hlo}))
  """)
  runs = {}
  for opt_out in ("1", "0"):
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    env.update(JAX_PLATFORMS="cpu", CNNJAX_XLA_FLAGS=opt_out)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          env=env, timeout=300, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    runs[opt_out] = proc.stdout.strip().splitlines()[-1]
  on, off = json.loads(runs["1"]), json.loads(runs["0"])
  assert on["flags"] == _xla_flags.YNN_CONV_OFF and not on["ynn"]
  assert off["flags"] == "" and off["ynn"]
