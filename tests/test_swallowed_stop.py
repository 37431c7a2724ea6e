"""A SIGINT whose exception Python swallows (it arrived in a callback: a weakref's, an import lock's, a
``__del__``) still stops the command before its next write (zoo.training.interrupts). Found under pytest -n 2:
`pyro-zoo eval` hit by SIGINT while importing printed "Exception ignored ... Stopped: SIGINT", ran on, rewrote
the run's results and exited 0."""
import subprocess
import sys
import textwrap


def test_a_swallowed_stop_is_raised_before_the_next_group_of_writes(tmp_path):
    script = textwrap.dedent("""
        import signal, sys
        from pathlib import Path
        from zoo.training.interrupts import Stopped, handle_stop_signals
        from zoo.training.checkpoint import atomic_write_text, signals_deferred

        handle_stop_signals()

        class Callback:
            def __del__(self):                  # Python cannot propagate from here: it calls sys.unraisablehook
                signal.raise_signal(signal.SIGINT)

        Callback()                              # the handler's Stopped is swallowed as the object goes
        print("ran on", flush=True)
        try:
            with signals_deferred():
                atomic_write_text(Path(sys.argv[1]), "written after the stop")
        except Stopped as e:
            print(f"stopped by {signal.Signals(e.signum).name}", flush=True)
            sys.exit(130)
    """)
    out = tmp_path / "results.json"
    done = subprocess.run([sys.executable, "-c", script, str(out)], capture_output=True, text=True)
    assert done.returncode == 130, (done.stdout, done.stderr)
    assert done.stdout.splitlines() == ["ran on", "stopped by SIGINT"]
    assert "Exception ignored" not in done.stderr, done.stderr
    assert not out.exists()


def test_other_unraisable_exceptions_are_still_printed(tmp_path):
    script = textwrap.dedent("""
        from zoo.training.interrupts import handle_stop_signals
        handle_stop_signals()

        class Broken:
            def __del__(self):
                raise ValueError("a bug in a destructor")

        Broken()
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert done.returncode == 0 and "ValueError: a bug in a destructor" in done.stderr, done.stderr
