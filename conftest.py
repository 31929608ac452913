"""pytest setup shared by tests and doctests: simulated CPU devices.

XLA reads the flag once, when jax first initialises a backend, so it is set
here, before any test module imports jax.
"""

import importlib.util
import os
import tempfile

os.environ["XLA_FLAGS"] = (
    os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8"
).strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")
# Compiled programs persist on disk, shared by the session's xdist workers and
# its train.py subprocesses: many tests compile the same step again (a run and
# its resumed twin, the same seed twice). Measured on three test_loop tests:
# 116 s without, 76 s with a cold cache, 23 s warm. The key holds the jax
# version, the program and the compile options, so a hit is the same program.
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR",
                      os.path.join(tempfile.gettempdir(), "entropix-tests-jax-cache"))
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0.1")
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "0")

# Library modules that import an optional dependency, and that dependency:
# not collected where it is missing (the oldest-versions run of
# .ci/library_tests installs jax, optax and numpy alone).
OPTIONAL_IMPORTS = {"entropix/linen.py": "flax", "entropix/nnx.py": "flax"}
collect_ignore = [path for path, module in OPTIONAL_IMPORTS.items()
                  if importlib.util.find_spec(module) is None]
