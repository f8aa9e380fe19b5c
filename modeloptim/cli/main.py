"""Entry point of the ``modeloptim`` command.

Subcommands live in :mod:`modeloptim.cli.commands`, one module each. A module defines
``register(subparsers) -> None`` which adds its parser and sets ``func`` (a callable taking the
parsed namespace and returning an exit code). Modules are discovered, so adding a subcommand
never edits this file. Their heavy imports (transformers, onnx) happen inside ``func``.
"""

from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys
from collections.abc import Sequence

from modeloptim import __version__
from modeloptim.cli import commands


class CliError(Exception):
    """Bad user input: printed as one line, exit code 2."""


def build_parser() -> argparse.ArgumentParser:
    """Build the top-level parser with every discovered subcommand."""
    parser = argparse.ArgumentParser(
        prog="modeloptim",
        description="Quantize, prune, trace and export PyTorch and ONNX models.",
        epilog="Example: modeloptim quantize            # default model, FP8, report",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"modeloptim {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for info in sorted(pkgutil.iter_modules(commands.__path__), key=lambda m: m.name):
        module = importlib.import_module(f"{commands.__name__}.{info.name}")
        register = getattr(module, "register", None)
        if register is not None:
            register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the process exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "func", None) is None:
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except CliError as err:
        print(f"modeloptim {args.command}: error: {err}", file=sys.stderr)
        return 2
    except (ValueError, TypeError, FileNotFoundError, NotImplementedError) as err:
        # Validation errors from the Python API carry the argument name: one line, no trace.
        print(f"modeloptim {args.command}: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
