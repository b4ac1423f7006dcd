"""Diagnose the pipeline: predictions, data summary, missing values, timings, packages.

The command line prints all five as JSON (predictions of the deployed model on
testdata.csv, on one line; a line a column and a package), or with --summary a short
readable summary, and records the run in the run history, for trends.
"""

from __future__ import annotations

from drs import diagnosis
from drs.cli import build_parser, configure_logging, run_cli
from drs.config import load_config


def main(argv: list[str] | None = None) -> int:
    parser = build_parser(__doc__)
    parser.add_argument(
        "--index-url",
        metavar="URL",
        help=(
            "PyPI-style JSON API asked for latest versions "
            f"(default ${diagnosis.PACKAGE_INDEX_ENV_VAR}, else {diagnosis.PACKAGE_INDEX_URL})"
        ),
    )
    parser.add_argument(
        "--index-timeout",
        type=float,
        default=diagnosis.INDEX_TIMEOUT_S,
        metavar="SECONDS",
        help=f"how long to wait for the package index (default {diagnosis.INDEX_TIMEOUT_S:g})",
    )
    parser.add_argument(
        "--summary",
        action="store_true",
        help="print a short readable summary instead of the JSON",
    )
    args = parser.parse_args(argv)

    def action() -> None:
        result = diagnosis.run(load_config(args.config), args.index_url, args.index_timeout)
        print(diagnosis.summary_text(result) if args.summary else diagnosis.compact_json(result))

    return run_cli(action)


if __name__ == "__main__":
    configure_logging()
    raise SystemExit(main())
