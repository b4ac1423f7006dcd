"""The command-line edge every script shares: --config, logging, one line per failure."""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import re
import sys
from collections.abc import Callable
from pathlib import Path

from drs.config import CONFIG_ENV_VAR
from drs.errors import PipelineError

logger = logging.getLogger(__name__)

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def build_parser(description: str | None) -> argparse.ArgumentParser:
    """An argument parser with the --config option every script shares."""
    parser = argparse.ArgumentParser(
        description=(description or "").strip().splitlines()[0] if description else None,
        formatter_class=_HelpFormatter,
    )
    parser.add_argument(
        "--config",
        metavar="PATH",
        help=f"config file (default: ${CONFIG_ENV_VAR}, then config.json beside the scripts)",
    )
    return parser


class _HelpFormatter(argparse.HelpFormatter):
    """argparse's own, told the terminal's width: argparse would import shutil to learn it.

    Every add_argument makes a formatter, so each cron tick would pay for that import.
    """

    def __init__(self, prog: str) -> None:
        super().__init__(prog, width=_terminal_columns() - 2)


def _terminal_columns() -> int:
    """$COLUMNS, else the width of the terminal on stdout, else 80 (as shutil would say)."""
    with contextlib.suppress(KeyError, ValueError):
        if (columns := int(os.environ["COLUMNS"])) > 0:
            return columns
    try:
        return os.get_terminal_size(sys.__stdout__.fileno()).columns  # type: ignore[union-attr]
    except (AttributeError, ValueError, OSError):
        return 80


def configure_logging(level: int = logging.INFO, handler: logging.Handler | None = None) -> None:
    """Log to handler (default: stderr), one line a record; stdout is left for results."""
    chosen = formatted(handler or logging.StreamHandler(sys.stderr))
    logging.basicConfig(level=level, handlers=[chosen], force=True)
    logging.captureWarnings(True)  # a library's warning reaches the log (cron's included)


def formatted(handler: logging.Handler) -> logging.Handler:
    """handler writing one line a record, a script's own lines under its name."""
    handler.setFormatter(logging.Formatter(LOG_FORMAT))
    handler.addFilter(_name_the_script)
    return handler


def _name_the_script(record: logging.LogRecord) -> bool:
    """Log a script's own lines under its name ('fullprocess'), not as '__main__'."""
    if record.name == "__main__":
        record.name = Path(sys.argv[0]).stem or record.name
    return True


def run_cli(action: Callable[[], int | None]) -> int:
    """Run a script's work and turn expected failures into one log line and exit status 1.

    Anything else is a bug: logged with its traceback (to the log file, under cron),
    exit status 1 too. The lines are logged under the script's name. Logging itself is
    set up by the script's `if __name__ == "__main__"` block (configure_logging), so a
    caller in the same process (a test) keeps its own.
    """
    logger = logging.getLogger("__main__")
    try:
        status = action()
    except (PipelineError, OSError) as error:
        logger.error("%s", describe_error(error))
        return 1
    except KeyboardInterrupt:
        logger.error("interrupted")
        return 130
    except Exception:
        logger.exception("unexpected error; please report it with this traceback")
        return 1
    return 0 if status is None else status


def describe_os_error(error: OSError) -> str:
    """An OSError as one line that names the file."""
    where = f"{error.filename}: " if error.filename else ""
    return f"{where}{error.strerror or error}"


def describe_error(error: Exception) -> str:
    """An expected failure (PipelineError or OSError) as the one line a user is shown."""
    return describe_os_error(error) if isinstance(error, OSError) else str(error)


_ERRNO_TEXT = r"\[Errno -?\d+\] ([^'\")\]]+)"  # compiled on first use (re's cache)


def errno_text(error: BaseException) -> str | None:
    """The useful end of a network error, e.g. 'Connection refused'.

    requests wraps the operating system's message deep inside its own.
    """
    found = re.search(_ERRNO_TEXT, str(error))
    return found.group(1).strip() if found else None


class RotatingLog(logging.FileHandler):
    """A log file rotated when the next record would take it past max_bytes.

    name.1 is the newest old file, up to name.<backups>. What logging.handlers'
    RotatingFileHandler does, without that module's imports (sockets, pickle, queues),
    which would be a large share of the cron tick with no new data.
    """

    def __init__(self, path: Path, max_bytes: int, backups: int) -> None:
        super().__init__(path, encoding="utf-8")
        self.max_bytes = max_bytes
        self.backups = backups

    def emit(self, record: logging.LogRecord) -> None:
        try:
            written = self.stream.tell() if self.stream is not None else 0
            size = len(self.format(record).encode("utf-8")) + 1
            if written > 0 and written + size > self.max_bytes:
                self._rotate()
        except OSError:
            self.handleError(record)
        super().emit(record)

    def _rotate(self) -> None:
        import os

        if self.stream is not None:
            self.stream.close()
        for number in range(self.backups - 1, 0, -1):
            older = f"{self.baseFilename}.{number}"
            if os.path.exists(older):
                os.replace(older, f"{self.baseFilename}.{number + 1}")
        if self.backups > 0:
            os.replace(self.baseFilename, f"{self.baseFilename}.1")
        else:
            os.truncate(self.baseFilename, 0)
        self.stream = self._open()
