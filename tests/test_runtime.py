"""``cnnjax.configure_cpu`` and ``cnnjax.cpu_forms``: an inert import, one explicit call
for the CPU runtime, and a form switch that jit's cache sees."""

import json
import os
import subprocess
import sys
import textwrap
import warnings

import jax
import jax.numpy as jnp
import pytest

import cnnjax
from cnnjax import _env, _malloc, _xla_flags, runtime
from cnnjax._lowering import forms

_SUBPACKAGES = (
    "cnnjax.nn",
    "cnnjax.models",
    "cnnjax.train",
    "cnnjax.data",
    "cnnjax.equivariance",
    "cnnjax.summary",
    "cnnjax.cli",
)


def _python(*parts: str, args=(), **env_changes) -> subprocess.CompletedProcess:
  """Runs the dedented ``parts`` in a fresh CPU Python, without XLA_FLAGS."""
  env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
  env.update(JAX_PLATFORMS="cpu", **env_changes)
  script = "\n".join(textwrap.dedent(part) for part in parts)
  return subprocess.run(
      [sys.executable, "-c", script, *args],
      capture_output=True,
      text=True,
      env=env,
      timeout=300,
      check=False,
  )


def _last_json(proc: subprocess.CompletedProcess):
  assert proc.returncode == 0, proc.stderr[-3000:]
  return json.loads(proc.stdout.strip().splitlines()[-1])


# A 256 MiB NumPy array is served by its own mmap unless glibc was told otherwise
# (M_MMAP_MAX = 0): the mapping holding its data is then exactly its size (page-rounded).
_OWN_MAPPING = """
def own_mapping():
  import numpy as np
  a = np.ones(256 * 2**20, np.uint8)
  address = a.ctypes.data
  with open("/proc/self/maps") as f:
    for line in f:
      lo, hi = (int(v, 16) for v in line.split()[0].split("-"))
      if lo <= address < hi:
        return "[heap]" not in line and hi - lo < 257 * 2**20
  return False
"""


@pytest.mark.skipif(
    not sys.platform.startswith("linux"),
    reason="reads /proc/self/maps (Linux) for the allocation's mapping",
)
def test_import_changes_no_environment_variable_and_no_allocator_setting():
  # Whatever jax, flax, optax and orbax set when imported is recorded first; importing
  # cnnjax and every subpackage afterwards changes nothing more.
  proc = _python(
      _OWN_MAPPING,
      f"""
      import json, os
      import jax, flax, optax, orbax.checkpoint
      before = dict(os.environ)
      import importlib, cnnjax
      for name in {_SUBPACKAGES!r}:
        importlib.import_module(name)
      changed = sorted(k for k in set(os.environ) | set(before)
                       if os.environ.get(k) != before.get(k))
      print(json.dumps({{"changed": changed, "own_mapping": own_mapping()}}))
  """,
  )
  got = _last_json(proc)
  assert got == {"changed": [], "own_mapping": True}


def test_import_after_jax_has_computed_warns_about_nothing():
  proc = subprocess.run(
      [
          sys.executable,
          "-W",
          "error",
          "-c",
          "import jax.numpy as jnp; jnp.ones(3).block_until_ready(); import cnnjax; "
          "import cnnjax.nn, cnnjax.models, cnnjax.train",
      ],
      capture_output=True,
      text=True,
      timeout=300,
      check=False,
      env=dict(os.environ, JAX_PLATFORMS="cpu"),
  )
  assert proc.returncode == 0, proc.stderr[-3000:]


@pytest.mark.skipif(
    not sys.platform.startswith("linux") or not _malloc.wanted(),
    reason="the allocator setting is glibc's (Linux), and not with "
    "CNNJAX_MALLOC=0 or a GLIBC_TUNABLES/MALLOC_*_ of your own",
)
def test_configure_cpu_sets_the_flag_and_the_allocator_only_when_asked():
  script = """
      import json, os, sys
      import cnnjax
      settings = cnnjax.configure_cpu(allocator=sys.argv[-1] == "1")
      print(json.dumps({"settings": settings._asdict(), "own_mapping": own_mapping(),
                        "flags": os.environ.get("XLA_FLAGS", "")}))
  """
  got = {a: _last_json(_python(_OWN_MAPPING, script, args=(a,))) for a in ("0", "1")}
  assert got["0"]["settings"] == {
      "xla_flag": True,
      "allocator": False,
      "bf16_matmul": got["0"]["settings"]["bf16_matmul"],
  }
  assert got["0"]["flags"] == _xla_flags.YNN_CONV_OFF and got["0"]["own_mapping"]
  assert got["1"]["settings"]["allocator"] and not got["1"]["own_mapping"]


def test_configure_cpu_raises_once_a_backend_started():
  jnp.ones(2).block_until_ready()
  with pytest.raises(RuntimeError, match="configure_cpu: a JAX backend has already started"):
    cnnjax.configure_cpu()


@pytest.mark.parametrize(
    "kwargs, name",
    [
        (dict(xla_flag="yes"), "xla_flag"),
        (dict(allocator=1), "allocator"),
        (dict(bf16_matmul="no"), "bf16_matmul"),
    ],
)
def test_configure_cpu_names_a_bad_argument(kwargs, name):
  with pytest.raises(ValueError, match=f"configure_cpu: {name} got"):
    cnnjax.configure_cpu(**kwargs)


@pytest.fixture
def backends_not_started(monkeypatch):
  monkeypatch.setattr(runtime, "_backend_started", lambda: False)
  monkeypatch.setattr(forms, "set_default", lambda **kw: None)


@pytest.fixture
def flag_cache(monkeypatch, tmp_path):
  """The probe's cache in tmp_path, and a count of the child processes started."""
  calls = []
  monkeypatch.setattr(_xla_flags, "_cache_path", lambda: tmp_path / "xla-flags.json")
  real = _xla_flags._probe
  monkeypatch.setattr(_xla_flags, "_probe", lambda flag: calls.append(flag) or real(flag))
  return tmp_path / "xla-flags.json", calls


def test_a_flag_xla_rejects_is_found_by_a_child_and_never_written(flag_cache):
  path, calls = flag_cache
  bogus = "--xla_cnnjax_no_such_flag=1"  # XLA aborts at its first operation on it
  assert not _xla_flags.accepted(bogus)
  assert _xla_flags.accepted()  # the real one, on the jaxlib the suite runs
  assert not _xla_flags.accepted(bogus) and _xla_flags.accepted()  # read back, not re-run
  assert calls == [bogus, _xla_flags.YNN_CONV_OFF]
  assert sorted(json.loads(path.read_text()).values()) == [False, True]


@pytest.mark.parametrize("damage", ["{not json", "[1, 2]", '{"k": "yes"}', "[" * 100_000])
def test_a_damaged_probe_cache_is_probed_again_and_rewritten(flag_cache, damage):
  path, calls = flag_cache
  path.write_text(damage)
  assert _xla_flags.accepted()
  assert calls == [_xla_flags.YNN_CONV_OFF]
  assert list(json.loads(path.read_text()).values()) == [True]


def test_rejected_flag_warns_once_and_leaves_xla_flags_alone(monkeypatch, backends_not_started):
  monkeypatch.setattr(_xla_flags, "accepted", lambda flag=None: False)
  environ = {"XLA_FLAGS": "--xla_force_host_platform_device_count=2"}
  monkeypatch.setattr(os, "environ", environ)
  with pytest.warns(RuntimeWarning, match="does not accept") as record:
    assert cnnjax.configure_cpu().xla_flag is False
  assert len(record) == 1
  assert environ == {"XLA_FLAGS": "--xla_force_host_platform_device_count=2"}


def test_appends_to_existing_flags(monkeypatch):
  monkeypatch.setattr(_xla_flags, "accepted", lambda flag=None: True)
  environ = {"XLA_FLAGS": "--xla_force_host_platform_device_count=2"}
  assert _xla_flags.apply(environ)
  assert environ["XLA_FLAGS"] == (
      "--xla_force_host_platform_device_count=2 " + _xla_flags.YNN_CONV_OFF
  )


def test_keeps_the_users_own_ynn_setting_and_the_opt_out(monkeypatch):
  monkeypatch.setattr(_xla_flags, "accepted", lambda flag=None: True)
  environ = {"XLA_FLAGS": "--xla_cpu_experimental_ynn_fusion_type="}
  assert not _xla_flags.apply(environ)
  assert environ == {"XLA_FLAGS": "--xla_cpu_experimental_ynn_fusion_type="}
  for value in ("0", "false", " OFF ", "no"):
    environ = {_xla_flags.OPT_OUT: value}
    with warnings.catch_warnings():
      warnings.simplefilter("error")
      assert not _xla_flags.apply(environ)
    assert "XLA_FLAGS" not in environ


@pytest.mark.parametrize(
    "value, on",
    [
        (None, True),
        ("1", True),
        ("yes", True),
        ("0", False),
        ("False", False),
        (" off ", False),
        ("NO", False),
    ],
)
def test_one_parser_for_switches(value, on):
  environ = {} if value is None else {"CNNJAX_X": value}
  assert _env.switch("CNNJAX_X", environ) is on


def test_the_flag_takes_convolutions_off_ynnpack():
  """In a fresh process, a convolution compiled after ``configure_cpu()`` is not a YNN
  fusion (the backend honoured the flag); with the opt-out it is (jaxlib 0.10.2 has
  YNNPACK; on a jaxlib whose program text differs the first half still holds)."""
  script = """
      import json, os
      import cnnjax
      cnnjax.configure_cpu()
      import jax, jax.numpy as jnp
      x, w = jnp.ones((4, 16, 16, 32)), jnp.ones((3, 3, 32, 32))  # YNN takes this size
      f = lambda x, w: jax.lax.conv_general_dilated(x, w, (1, 1), "SAME",
                                                    dimension_numbers=("NHWC", "HWIO", "NHWC"))
      hlo = jax.jit(f).lower(x, w).compile().as_text()
      print(json.dumps({"flags": os.environ.get("XLA_FLAGS", ""), "ynn": "ynn" in hlo}))
  """
  on = _last_json(_python(script))
  off = _last_json(_python(script, CNNJAX_XLA_FLAGS="0"))
  assert on["flags"] == _xla_flags.YNN_CONV_OFF and not on["ynn"]
  assert off["flags"] == ""
  if jax.lib.__version__ == "0.10.2":
    assert off["ynn"]


# ------------------------------------------------------------------------------ cpu_forms


def test_cpu_forms_is_part_of_jits_cache_key():
  traces = []

  @jax.jit
  def f(x, w):
    traces.append(forms.current())
    return cnnjax.cross_correlate(x, w, padding="SAME")

  x, w = jnp.ones((2, 8, 8, 3), jnp.float32), jnp.ones((3, 3, 3, 4), jnp.float32)
  on = f(x, w)
  with cnnjax.cpu_forms(enabled=False) as inside:
    off = f(x, w)
    assert inside.enabled is False
  again = f(x, w)
  assert [t.enabled for t in traces] == [True, False]  # traced twice, then cached
  assert jnp.array_equal(on, off) and jnp.array_equal(on, again)


def test_cpu_forms_changes_the_program_traced():
  x, w = jnp.ones((4, 14, 14, 32), jnp.float32), jnp.ones((5, 5, 32, 64), jnp.float32)
  f = jax.jit(lambda x, w: cnnjax.cross_correlate(x, w))
  assert "custom_jvp_call" in str(jax.make_jaxpr(f)(x, w))
  for off in (dict(enabled=False), dict(rows=False)):
    with cnnjax.cpu_forms(**off):
      assert "custom_jvp_call" not in str(jax.make_jaxpr(f)(x, w))
  assert "custom_jvp_call" in str(jax.make_jaxpr(f)(x, w))


def test_cpu_forms_names_a_bad_value():
  with pytest.raises(ValueError, match="cpu_forms: rows got 'no'"), cnnjax.cpu_forms(rows="no"):
    pass
