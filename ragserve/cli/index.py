"""``ragserve index SOURCE...``: bulk-index a corpus with Ray Data, without the service.

The job itself is ``graphs.indexing`` (it needs Ray, which the core never imports): this
command checks the options, runs ``python -m graphs.indexing`` with them in a child process of
the same interpreter, and streams its output. The exit status is the job's: 0 everything
indexed or unchanged, 1 some documents failed (listed with the reason), 2 nothing could be
indexed or a bad option/config; 130 interrupted (a rerun resumes where it stopped).

The options mirror ``python -m graphs.indexing --help`` one for one (a unit test keeps them in
step). With Qdrant local mode, stop the serving app first: one process may open the folder.
"""

from __future__ import annotations

import argparse
import importlib.util
import subprocess
import sys
from typing import Any

from ragserve.cli.options import EXIT_ERROR, EXIT_INTERRUPTED, Context
from ragserve.cli.output import eprint

__all__ = ["register", "run", "job_command", "JOB_MODULE"]

JOB_MODULE = "graphs.indexing"


def _positive(value: str) -> str:
    try:
        ok = int(value) >= 1
    except ValueError:
        ok = False
    if not ok:
        raise argparse.ArgumentTypeError(f"expected a whole number of at least 1, not {value!r}")
    return value


def _non_negative_number(value: str) -> str:
    try:
        ok = float(value) >= 0
    except ValueError:
        ok = False
    if not ok:
        raise argparse.ArgumentTypeError(f"expected a number of at least 0, not {value!r}")
    return value


def _concurrency(value: str) -> str:
    try:
        numbers = [int(p) for p in value.split(",")]
    except ValueError:
        numbers = []
    if (len(numbers) == 1 and numbers[0] >= 1) or (
            len(numbers) == 2 and 1 <= numbers[0] <= numbers[1]):
        return value
    raise argparse.ArgumentTypeError(f"expected N or MIN,MAX with 1 <= MIN <= MAX, not {value!r}")


# (flags, options) of every job option; values stay strings and are passed on as given.
OPTIONS: list[tuple[str, dict[str, Any]]] = [
    ("--config", {"help": "Serve config (configs/<file>.yaml) or args YAML; default: the "
                          "embedded defaults"}),
    ("--app", {"help": "application name in the Serve config (default: the first)"}),
    ("--address", {"help": "Ray address ('auto': the running cluster); default: a local Ray"}),
    ("--collection", {"help": "override retriever.config.collection"}),
    ("--qdrant-path", {"help": "override retriever.config.path (Qdrant local mode)"}),
    ("--qdrant-url", {"help": "override retriever.config.url (a Qdrant server)"}),
    ("--batch-size", {"type": _positive, "help": "chunks per embedding call (default 64)"}),
    ("--concurrency", {"type": _concurrency,
                       "help": "embedding actors: N, or MIN,MAX (default 1)"}),
    ("--num-gpus", {"type": _non_negative_number,
                    "help": "GPUs per embedding actor (default: 1 when the cluster has GPUs)"}),
    ("--num-cpus", {"type": _non_negative_number,
                    "help": "CPUs per CPU embedding actor (default 1)"}),
    ("--write-batch", {"type": _positive, "help": "documents per write (default 128)"}),
    ("--tenant", {"help": "tenant the chunks belong to (default 'default')"}),
    ("--root", {"help": "file document ids are relative to it"}),
]
FLAGS: list[tuple[str, str]] = [
    ("--no-resume", "re-embed and rewrite documents already indexed unchanged"),
    ("--json", "print the summary as JSON"),
    ("--quiet", "no progress lines"),
]


def register(commands: Any, parents: list[argparse.ArgumentParser]) -> None:
    # No connection options: the job talks to Ray and the retriever, not to the service.
    parser = commands.add_parser(
        "index", help="bulk-index files or JSONL with Ray Data (python -m graphs.indexing)",
        description=__doc__.split("\n\n")[1].replace("\n", " "))
    parser.add_argument("sources", nargs="+", metavar="SOURCE",
                        help="files, folders or .jsonl files (BEIR corpus or API documents)")
    for flag, options in OPTIONS:
        parser.add_argument(flag, default=None, **options)
    for flag, text in FLAGS:
        parser.add_argument(flag, action="store_true", help=text)
    parser.set_defaults(run=run)


def job_command(args: argparse.Namespace) -> list[str]:
    """The child process's command line: this interpreter, the job module, the options."""
    command = [sys.executable, "-m", JOB_MODULE, *args.sources]
    for flag, _ in OPTIONS:
        value = getattr(args, flag[2:].replace("-", "_"))
        if value is not None:
            command += [flag, value]
    for flag, _ in FLAGS:
        if getattr(args, flag[2:].replace("-", "_")):
            command.append(flag)
    return command


def run(args: argparse.Namespace, ctx: Context) -> int:
    if importlib.util.find_spec(JOB_MODULE.split(".")[0]) is None:
        eprint(f"error: {JOB_MODULE} is not importable here: run from the repository root "
               "or install the package (graphs is part of it)")
        return EXIT_ERROR
    # Output is not captured: the job's progress and summary reach the terminal as written.
    child = subprocess.Popen(job_command(args))
    try:
        return child.wait()
    except KeyboardInterrupt:
        # The child got the same SIGINT (one process group): let it stop and say so.
        try:
            child.wait(timeout=30)
        except (subprocess.TimeoutExpired, KeyboardInterrupt):
            child.kill()
            child.wait()
        return EXIT_INTERRUPTED
