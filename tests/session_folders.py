"""The test session's shared folder (tests/conftest.py makes it, every xdist worker and launched
process sees it through SPARTA_TEST_SESSION_DIR): what is built once per session goes there."""
from __future__ import annotations

import os


def session_folder(name: str) -> str:
    return os.path.join(os.environ["SPARTA_TEST_SESSION_DIR"], name)


def built_once(name: str, build) -> str:
    """`<session>/<name>`, made by `build(folder)` once per test session whichever worker asks first;
    the others wait on a lock and take the finished folder. Built in place (a run's outputs name
    their folder) and marked done last; a folder a failed build left is built again."""
    import fcntl
    import shutil

    folder = session_folder(name)
    with open(folder + ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        done = folder + ".done"
        if not os.path.exists(done):
            shutil.rmtree(folder, ignore_errors=True)
            os.makedirs(folder)
            build(folder)
            open(done, "w").close()
    return folder
