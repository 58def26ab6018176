"""The ``loopformer`` executable. The tool subcommands (data, sweep, import-checkpoint) start without importing
Lightning; the help of the Lightning subcommands (building it imports Lightning and torch and inspects the Trainer's
signature: about 6 s on 2 cores) is kept in a cache, valid while the installed versions and loopformer's own files
are those it was built from."""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import shutil
import sys
from pathlib import Path
from typing import Optional

from loopformer.cli.flag_scan import is_plain_help
from loopformer.cli.tools import TOOLS, run_tool  # argparse only: tools import their modules when run

TOOL_COMMANDS = tuple(TOOLS)
PACKAGE_DIR = Path(__file__).resolve().parents[1]
VERSIONED = ("lightning", "jsonargparse", "torch", "wandb")  # whose versions can change the help


LIGHTNING_COMMANDS = ("fit", "validate", "test", "predict")


def main(argv: Optional[list[str]] = None) -> None:
    given = list(sys.argv[1:] if argv is None else argv)
    if given[:1] == ["--version"]:
        print(versions())
        sys.exit(0)
    problem = command_problem(given)
    if problem:
        print(f"loopformer: error: {problem}", file=sys.stderr)
        sys.exit(2)
    if given and given[0] in TOOL_COMMANDS:
        from loopformer.runs.parent import die_with_parent_if_asked

        die_with_parent_if_asked()
        sys.exit(run_tool(given[0], given[1:]))
    if is_plain_help(given):
        sys.stdout.write(cached_help(given))
        sys.exit(0)
    from loopformer.cli.command import main as run

    run(argv)


def versions() -> str:
    """``loopformer 0.1.0 (python 3.11.9, torch 2.13.0, lightning 2.6.6)``, read without importing them."""
    from loopformer.cli.doctor import installed_version

    def of(name: str) -> str:
        return installed_version(name) or "not installed"

    python = ".".join(map(str, sys.version_info[:3]))
    return f"loopformer {of('loopformer')} (python {python}, torch {of('torch')}, lightning {of('lightning')})"


def command_problem(args: list[str]) -> str:
    """What is wrong with the command word: none given, or one that is no command (with the nearest); "" when it is
    a command, or when the arguments start with an option (LightningCLI reads those)."""
    commands = (*LIGHTNING_COMMANDS, *TOOL_COMMANDS)
    every = (
        f"{_either(LIGHTNING_COMMANDS)} (training and evaluation: `loopformer fit --help`), or "
        f"{_either(sorted(TOOL_COMMANDS))} (each with its own --help)"
    )
    if not args:
        return f"expected a command: {every}."
    if args[0].startswith("-") or args[0] in commands:
        return ""
    import difflib

    near = difflib.get_close_matches(args[0], commands, n=1, cutoff=0.6)
    guess = f" (did you mean {near[0]}?)" if near else ""
    return f"{args[0]!r} is not a command{guess}; expected {every}."


def _either(words: tuple[str, ...] | list[str]) -> str:
    return f"{', '.join(words[:-1])} or {words[-1]}"


def cache_dir() -> Path:
    if os.environ.get("LOOPFORMER_CACHE_DIR"):
        return Path(os.environ["LOOPFORMER_CACHE_DIR"])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "loopformer"


def source_fingerprint(package_dir: Path = PACKAGE_DIR) -> str:
    """Changes whenever a file of the package changes (path, size and modification time of every .py file)."""
    digest = hashlib.sha256()
    for path in sorted(package_dir.rglob("*.py")):
        stat = path.stat()
        digest.update(f"{path.relative_to(package_dir)}:{stat.st_size}:{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()


def help_key(args: list[str]) -> str:
    from loopformer.cli.doctor import installed_version

    parts = [" ".join(args), str(shutil.get_terminal_size().columns), sys.version, source_fingerprint()]
    parts += [f"{name}={installed_version(name) or 'none'}" for name in VERSIONED]
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:32]


def cached_help(args: list[str]) -> str:
    """The help text: from the cache, or built by the command itself (and cached, atomically; a cache that cannot
    be written is skipped)."""
    path = cache_dir() / f"help-{help_key(args)}.txt"
    try:
        return path.read_text()
    except OSError:
        pass
    from loopformer.cli.command import main as run

    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        try:
            run(args)
        except SystemExit as e:
            if e.code not in (0, None):
                sys.stdout.write(out.getvalue())
                raise
    text = out.getvalue()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_name(f".{path.name}.{os.getpid()}.partial")
        partial.write_text(text)
        os.replace(partial, path)
    except OSError:
        pass
    return text
