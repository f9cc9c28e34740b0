"""Test setup: 8 fake CPU devices, so sharding tests run on any laptop.

XLA reads the flag when the backend starts, so it is set before anything imports jax.
"""
import os
import shlex
import sys

os.environ["XLA_FLAGS"] = (
    os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8"
).strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
# pytest-xdist workers share the CPU. PyTorch's OpenMP threads spin while they wait, so two workers
# with a thread per core each made the reference tests' PyTorch passes 5x slower (a SmolLM2 forward
# pass: 2.7 s with 2 threads against 0.55 s with 1, beside another busy process on 2 cores). Each
# worker gets its share of the cores; OpenMP reads this when torch is imported, after this file.
if int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1")) > 1:
    os.environ.setdefault("OMP_NUM_THREADS",
                          str(max(1, (os.cpu_count() or 1) // int(os.environ["PYTEST_XDIST_WORKER_COUNT"]))))

import pytest  # noqa: E402  (after the XLA flags above)

from session_folders import built_once, session_folder  # noqa: E402


def pytest_configure(config):
    """One folder per test session, shared by the pytest-xdist workers (they inherit its path from
    the controller) and every Python process a test launches:
    - `xla_cache`: a persistent XLA compilation cache, for this process (jax.config) and, through
      the environment, for the launched processes: a program compiles once per session, not once
      per process or per test (the tiny tribes share their shapes, and tests build fresh jitted
      steps of the same shapes). A size limit turns on JAX's file lock around the cache's reads
      and writes, so two processes never read an entry half written. (In-process caching took
      the fast tier from 2 min 33 s to 2 min 0 s, and `.ci/run` to 19 min 37 s.)
    - `models`: the embedded models' HF folders, unpacked once per session, not once per worker
      (Gemma 3 270M's takes most of a minute). materialize() locks the build, so a second worker
      waits for the first one's folder."""
    import tempfile

    import jax  # noqa: F401  (reads its JAX_* settings now, before they are set for the children)

    if "SPARTA_TEST_SESSION_DIR" not in os.environ:
        os.environ["SPARTA_TEST_SESSION_DIR"] = tempfile.mkdtemp(prefix="sparta_jax_test_session_")
        config._sparta_made_session_dir = os.environ["SPARTA_TEST_SESSION_DIR"]
    cache = os.path.join(os.environ["SPARTA_TEST_SESSION_DIR"], "xla_cache")
    os.makedirs(cache, exist_ok=True)
    for name, value in (("jax_compilation_cache_dir", cache), ("jax_persistent_cache_min_compile_time_secs", 0),
                        ("jax_compilation_cache_max_size", 8 * 1024**3)):
        jax.config.update(name, value)
        os.environ[name.upper()] = str(value)


def pytest_unconfigure(config):
    """The session's folder goes with the process that made it (pytest_configure)."""
    import shutil

    made = getattr(config, "_sparta_made_session_dir", None)
    if made:
        shutil.rmtree(made, ignore_errors=True)
        os.environ.pop("SPARTA_TEST_SESSION_DIR", None)


@pytest.fixture(scope="session")
def smollm2_dir():
    """The embedded SmolLM2-135M-Instruct as a HF folder, built once per test session."""
    from sparta_jax.models.embedded import materialize_smollm2

    return materialize_smollm2(session_folder("models"))


@pytest.fixture(scope="session")
def gemma_dir():
    """The embedded Gemma 3 270M as a HF folder, built once per test session."""
    from sparta_jax.models.embedded_gemma import materialize_gemma3_270m

    return materialize_gemma3_270m(session_folder("models"))


@pytest.fixture(scope="session")
def compile_cache():
    """The persistent XLA compilation cache every launched process shares (pytest_configure)."""
    return session_folder("xla_cache")


@pytest.fixture(scope="session")
def tiny_base(smollm2_dir):
    """A tiny random Llama that speaks SmolLM2's tokenizer: real chat templates, fast runs. One
    folder for the session, so runs that tests in different workers share (built_once) name one base."""
    from tiny_models import save_tiny_chat_model

    return built_once("tiny_base", lambda folder: save_tiny_chat_model(folder, smollm2_dir))


# ----------------------------------------------------------------------------- test tiers
# pytest.ini registers two marks; a test with neither is in the fast tier,
# `pytest -m "not e2e and not reference"`. Two rules keep the tiers honest, each failing only the test
# that breaks it, with the fix in the message:
# - a test that needs an embedded real model (the smollm2_dir or gemma_dir fixture, directly or through
#   another fixture such as tiny_base) is marked `reference`;
# - a test that starts a Python process (subprocess, os.system, os.posix_spawn) in its setup (its fixtures)
#   or its body is marked `e2e`. Only Python interpreters count: libraries may start other programs of
#   their own (ctypes.util.find_library runs ldconfig, platform runs uname).
EMBEDDED_MODEL_FIXTURES = ("smollm2_dir", "gemma_dir")
_LAUNCH_EVENTS = frozenset({"subprocess.Popen", "os.system", "os.posix_spawn"})
_PYTHON = os.path.realpath(sys.executable)
_launched = None  # the Python processes the running setup or call started; None outside one


def _python_program(event, args):
    """The command line of a Python process this audit event starts, else None."""
    if event == "os.system":
        argv = shlex.split(os.fsdecode(args[0])) if args[0] else []
    else:  # subprocess.Popen: (executable, args, cwd, env); os.posix_spawn: (path, argv, env)
        argv = [os.fsdecode(a) for a in args[1]] if args[1] else []
        if len(argv) >= 3 and argv[1] == "-c" and os.path.basename(argv[0]) in ("sh", "bash", "dash"):
            argv = shlex.split(argv[2])  # shell=True: the command the shell runs
        elif args[0] is not None:
            argv = [os.fsdecode(args[0])] + argv[1:]
    if not argv:
        return None
    program = argv[0]
    if os.path.realpath(program) == _PYTHON or os.path.basename(program).startswith("python"):
        return " ".join(argv)
    return None


def _audit(event, args):
    if _launched is not None and event in _LAUNCH_EVENTS:
        try:
            command = _python_program(event, args)
        except Exception:  # an odd argument shape: not this check's business
            command = None
        if command is not None:
            _launched.append(command)


sys.addaudithook(_audit)


def _fail_unmarked_launches(item, phase):
    global _launched
    if item.get_closest_marker("e2e") is not None:
        return (yield)
    _launched = []
    try:
        result = yield
    finally:
        launched, _launched = _launched, None
    if launched:
        pytest.fail(f"{item.nodeid} started a Python process in its {phase} ({launched[0][:200]}) but is not marked "
                    "e2e: add @pytest.mark.e2e (see pytest.ini)", pytrace=False)
    return result


@pytest.hookimpl(wrapper=True)
def pytest_runtest_setup(item):
    needs = [f for f in EMBEDDED_MODEL_FIXTURES if f in getattr(item, "fixturenames", ())]
    if needs and item.get_closest_marker("reference") is None:  # before any fixture is built
        pytest.fail(f"{item.nodeid} needs the embedded model fixture {needs[0]} but is not marked reference: "
                    "add @pytest.mark.reference (see pytest.ini)", pytrace=False)
    return (yield from _fail_unmarked_launches(item, "setup"))


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item):
    return (yield from _fail_unmarked_launches(item, "call"))
