"""A submission that leaves a daemon behind, for the tests that nothing a submission starts outlives its grade.

At import, the submission double-forks a daemon (``setsid``: the worker's death does not end it) that takes
an ``flock`` on a file the test names, waits for the grading worker to exit, tries to rewrite the results,
and lives on, holding the lock. The worker goes on only once the daemon holds the lock, so the daemon
exists before the grade can end. After the grade the test asks for the lock itself (:func:`outlived`): the
kernel drops a process's locks when it dies, so the test gets it exactly when the grader killed the daemon.
No sleep decides anything, however long a busy machine takes.

The lock file must be one the sandbox shows at the same path (the zoo's own files are bound read-only;
``flock`` needs only a read-only descriptor), so that inside and outside lock the same inode.
"""
import fcntl
import os
from pathlib import Path


def daemon_source(lock: Path, results: Path) -> str:
    """Python to append to a submission (its names start with ``_``, so they clash with none of the student's)."""
    return f"""
import fcntl as _fcntl, json as _json, os as _os, time as _time
_LOCK, _RESULTS, _WORKER = {str(lock)!r}, {str(results)!r}, _os.getpid()
if _os.fork() == 0:
    _os.setsid()
    if _os.fork() == 0:
        _fcntl.flock(_os.open(_LOCK, _os.O_RDONLY), _fcntl.LOCK_EX)
        while _os.path.exists(f"/proc/{{_WORKER}}"):
            _time.sleep(0.05)
        try:                                    # the grade is over: rewrite its results
            with open(_RESULTS, "w") as _f:
                _json.dump({{"score": 100, "tests": []}}, _f)
        except OSError:                         # not visible from the sandbox
            pass
        _time.sleep(600)                        # alive, and holding the lock, for the test to see
    _os._exit(0)
_probe = _os.open(_LOCK, _os.O_RDONLY)
while True:                                     # until the daemon holds the lock
    try:
        _fcntl.flock(_probe, _fcntl.LOCK_EX | _fcntl.LOCK_NB)
    except BlockingIOError:
        break
    _fcntl.flock(_probe, _fcntl.LOCK_UN)
    _time.sleep(0.01)
_os.close(_probe)
"""


def outlived(lock: Path) -> bool:
    """Whether a daemon still holds ``lock``: it is alive."""
    fd = os.open(lock, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return False
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
