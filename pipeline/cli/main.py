"""``rnaseq-batch``: one command for running the pipeline and for everything around a run.

    rnaseq-batch run [--config-dir DIR] [--output-dir DIR] [--workers N] [--scheduler-host H] ...
    rnaseq-batch status OUTPUT_DIR          where a run stands, whether it is alive, time left
    rnaseq-batch retry OUTPUT_DIR           reset the failed runs, then `run` again tries only them
    rnaseq-batch refresh CONFIG_DIR OUTPUT_DIR   ask ENA again and plan new runs
    rnaseq-batch report OUTPUT_DIR          one HTML page: QC, expression, timeline, disk, failures
    rnaseq-batch luigid OUTPUT_DIR          a central scheduler with the pipeline's settings

``run`` is ``luigi --module pipeline MultiSpecies`` with the project's settings in force wherever
it starts, a terminal that shows the pipeline's progress rather than Luigi's debug log (``-v`` or
``--log-level`` brings that back), and one line for Ctrl-C or SIGTERM.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import time
from pathlib import Path
from typing import Optional

#: Exit code of a run stopped by Ctrl-C or SIGTERM (128 + SIGINT, as shells report it).
INTERRUPTED = 130
#: [retcode] already_running and not_run, as the packaged settings set them
ALREADY_RUNNING, NOT_RUN = 10, 25
PROG = "rnaseq-batch"


def _run_parser(sub) -> None:
    p = sub.add_parser(
        "run",
        help="run every species of a config folder (MultiSpecies)",
        description="Run every species of --config-dir into --output-dir. Exit codes: "
        "0 every species finished; 10 another run holds the output folder; 25 some task was not run; 30 a task failed (failed runs "
        "are listed); 35 the configuration, metadata or output folder has problems; "
        "40 an unexpected error; 130 interrupted.",
    )
    p.add_argument("--config-dir", help="folder of species YAMLs (default: [MultiSpecies] config_dir, config/species)")
    p.add_argument("--output-dir", help="output folder (default: [MultiSpecies] output_dir, output/amalgkit)")
    p.add_argument("--workers", type=int, help="Luigi workers (default: [core] workers, 4)")
    p.add_argument("--scheduler-host", help="use the central scheduler (luigid) on this host instead of a local one")
    p.add_argument("--scheduler-port", type=int, help="port of that scheduler (default 8082)")
    p.add_argument(
        "--wait-for-lock",
        action="store_true",
        help="if another run holds the output folder, wait for it to end instead of exiting 10",
    )
    p.add_argument("-v", "--verbose", action="count", default=0, help="Luigi's own log too (-vv: debug)")
    p.add_argument("--log-level", choices=["DEBUG", "INFO", "WARNING", "ERROR"], help="Luigi's log level")


def luigi_argv(a: argparse.Namespace) -> list[str]:
    """The ``luigi`` command line that ``rnaseq-batch run`` stands for (pure)."""
    argv = ["--module", "pipeline", "MultiSpecies"]
    if a.config_dir:
        argv += ["--config-dir", str(Path(a.config_dir).resolve())]
    if a.output_dir:
        argv += ["--output-dir", str(Path(a.output_dir).resolve())]
    if a.workers:
        argv += ["--workers", str(a.workers)]
    if a.scheduler_host:
        argv += ["--scheduler-host", a.scheduler_host]
        if a.scheduler_port:
            argv += ["--scheduler-port", str(a.scheduler_port)]
    else:
        argv += ["--local-scheduler"]
    level = a.log_level or {0: "WARNING", 1: "INFO"}.get(a.verbose, "DEBUG")
    return argv + ["--log-level", level]


def _raise_interrupt(signum, frame):
    raise KeyboardInterrupt(signal.Signals(signum).name)


def run(a: argparse.Namespace) -> int:
    from .. import tasks  # installs the packaged settings before Luigi reads its configuration

    argv = luigi_argv(a)
    tasks.CLAIM.update(wait=a.wait_for_lock, shared=bool(a.scheduler_host))
    signal.signal(signal.SIGTERM, _raise_interrupt)
    code: Optional[int] = None
    try:
        code = _passes(argv, a)
    except KeyboardInterrupt as e:
        why = str(e) or "SIGINT"
        print(f"interrupted ({why}); run the same command again to resume", file=sys.stderr, flush=True)
        tasks.note_in_run_logs(f"interrupted ({why}); run the same command again to resume")
        code = INTERRUPTED
    finally:
        tasks.end_heartbeats(code)
    if tasks.REFUSED:
        return ALREADY_RUNNING
    if code in (ALREADY_RUNNING, NOT_RUN) and _all_finished(a):
        return 0  # whoever did the work, every species is finished
    return code


def _one_pass(argv: list[str]) -> int:
    import luigi.retcodes
    import luigi.task_register

    luigi.task_register.Register.clear_instance_cache()  # new task objects: each looks at the plan anew
    try:
        luigi.retcodes.run_with_retcodes(argv)
        return 0
    except SystemExit as e:
        return e.code if isinstance(e.code, int) else 1


def _passes(argv: list[str], a: argparse.Namespace) -> int:
    """Luigi's run, once on a local scheduler. Under a central one, again whenever this worker
    ran out of tasks while other workers still run some of the study: a look at the plan then
    shows the batches that became visible since (a window, a species just planned) and those a
    dead worker lost once the scheduler has dropped it. Ends when the study is finished, when a
    task of this worker failed, or when no task of the study runs anywhere any more (three times in
    a row, ``rejoin_seconds`` apart)."""
    from .. import scheduler, settings, tasks

    idle, first = 0, True
    while True:
        # Luigi's one-copy-per-machine lock is taken by the first pass; it would refuse the next ones
        code = _one_pass(argv if first else [*argv, "--no-lock"])
        first = False
        if not a.scheduler_host or tasks.REFUSED or code not in (0, ALREADY_RUNNING, NOT_RUN) or _all_finished(a):
            return code
        out = _output_dir(a)
        url = f"http://{a.scheduler_host}:{a.scheduler_port or 8082}/"
        idle = 0 if scheduler.study_running_elsewhere(out, url) else idle + 1
        logging.getLogger(__name__).info("pass ended with exit code %s; idle looks: %d", code, idle)
        if idle >= 3:
            return code
        time.sleep(settings.PipelineSettings().rejoin_seconds)


def _output_dir(a: argparse.Namespace) -> str:
    from .. import tasks

    return a.output_dir or str(tasks.MultiSpecies().output_dir)


def _all_finished(a: argparse.Namespace) -> bool:
    """Whether every species of the run's config folder has its final marker."""
    from .. import tasks

    kw = {k: str(Path(v).resolve()) for k, v in (("config_dir", a.config_dir), ("output_dir", a.output_dir)) if v}
    try:
        return bool(tasks.MultiSpecies(**kw).complete())
    except Exception:
        return False


def luigid(a: argparse.Namespace) -> int:
    """A luigid whose state and logs live under OUTPUT_DIR/luigid/ and which uses the pipeline's
    ``[resources]`` and ``[scheduler]`` settings, wherever it is started."""
    import luigi.cmdline

    from .. import settings  # noqa: F401  (the packaged settings)

    home = Path(a.output_dir).resolve() / "luigid"
    home.mkdir(parents=True, exist_ok=True)
    print(f"luigid on http://{a.address}:{a.port} (state and logs in {home})", file=sys.stderr, flush=True)
    luigi.cmdline.luigid(
        [
            "--address",
            a.address,
            "--port",
            str(a.port),
            "--logdir",
            str(home),
            "--state-path",
            str(home / "state.pickle"),
        ]
    )
    return 0


def main(argv: Optional[list[str]] = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    ap = argparse.ArgumentParser(prog=PROG, description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _run_parser(sub)
    passthrough = {
        "status": "where a run stands: progress, liveness, time left, failures so far",
        "retry": "reset the failed runs so that the next `run` tries them again, and only them",
        "refresh": "ask ENA again and plan runs published since",
        "report": "write OUTPUT_DIR/report.html: QC, expression, timeline, disk and failures on one page",
    }
    for name, text in passthrough.items():
        sub.add_parser(name, help=text, add_help=False)
    d = sub.add_parser("luigid", help="start a central scheduler (web view) with the pipeline's settings")
    d.add_argument("output_dir", help="its state and logs go to OUTPUT_DIR/luigid/")
    d.add_argument("--address", default="127.0.0.1")
    d.add_argument("--port", type=int, default=8082)
    if argv and argv[0] in passthrough:
        return _passthrough(argv[0], argv[1:])
    a = ap.parse_args(argv)
    if a.command == "run":
        return run(a)
    return luigid(a)


def _passthrough(name: str, rest: list[str]) -> int:
    from . import refresh, report, reset, status

    commands = {"status": status.main, "retry": reset.main, "refresh": refresh.main, "report": report.main}
    return commands[name](rest)


def console_main() -> None:
    """The ``rnaseq-batch`` console script."""
    logging.captureWarnings(True)
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
