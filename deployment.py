"""Deploy the trained model, its score and its ingestion record as one release.

With no option: a new release of the files in output_model_path goes live (refused when
they do not belong together). --list shows the kept releases, --rollback makes an
earlier one live again, --promote makes a staged one live. drs.releasefolder holds the
layout of prod_deployment_path, drs.releases its crash-safe changes.
"""

from __future__ import annotations

import logging
from typing import Any

from drs import releasefolder, releases, state
from drs.cli import build_parser, configure_logging, describe_error, run_cli
from drs.config import Config, load_config
from drs.errors import PipelineError
from drs.files import step_lock

logger = logging.getLogger(__name__)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser(__doc__)
    actions = parser.add_mutually_exclusive_group()
    actions.add_argument(
        "--rollback",
        nargs="?",
        const=releases.DEFAULT_CHOICE,
        metavar="RELEASE",
        help="make RELEASE live again (default: the newest earlier release that has been live)",
    )
    actions.add_argument(
        "--list",
        action="store_true",
        help="list the kept releases; * marks the live one, s one staged for --promote",
    )
    actions.add_argument(
        "--promote",
        nargs="?",
        const=releases.DEFAULT_CHOICE,
        metavar="RELEASE",
        help="make a staged release live (default: the newest staged one)",
    )
    args = parser.parse_args(argv)

    def action() -> int:
        config = load_config(args.config)
        if args.list:
            rows = releasefolder.release_table(config.deployment_folder)
            live = releasefolder.live_release_id(config.deployment_folder)
            print(list_text(config, rows, live) if rows or live else "no release deployed yet")
            return 0
        with step_lock(config):
            return change_live_release(config, args.rollback, args.promote)

    return run_cli(action)


def list_text(config: Config, rows: list[dict[str, Any]], live: str | None) -> str:
    """The kept releases with how each went live, then when each went live (rollbacks too)."""
    try:
        went = state.go_lives(config)
    except (PipelineError, OSError) as error:
        logger.warning("how the releases went live is unknown: %s", describe_error(error))
        went = []
    table = releasefolder.format_release_table(
        rows, live, {g.release_id: g.how.value for g in went}
    )
    return f"{table}\n\n{state.describe_go_lives(went)}" if went else table


def change_live_release(config: Config, rollback_to: Any, promote: Any) -> int:
    """Roll back, promote, or deploy the trained set (neither option); prints what it did.

    rollback_to and promote are None when not asked for, DEFAULT_CHOICE for the default
    release, else a release id.
    """
    if rollback_to is not None:
        left, release = releases.run_rollback(config, _chosen(rollback_to))
        problem = releases.recorded(config, release, releases.Action.ROLLBACK)
        went = f"{releasefolder.describe(left)} to {releasefolder.describe(release)}"
        print(f"rolled back from {went}{problem}")
    elif promote is not None:
        left = releases.live_or_none(config.deployment_folder)
        release = releases.promote(
            config.deployment_folder, _chosen(promote), config.deployments_kept
        )
        problem = releases.recorded(config, release, releases.Action.PROMOTE)
        replaced = releasefolder.describe(left)
        print(f"promoted {releasefolder.describe(release)}, replacing {replaced}{problem}")
    else:
        live = releasefolder.live_release_id(config.deployment_folder)
        release = releases.run(config, record_it=False)
        if release.id == live:
            print(f"release {live} is live with this same model and score; no new release made")
            return 0
        problem = releases.recorded(config, release, releases.Action.DEPLOY)
        print(f"{release.id}{problem}")
    return releases.EXIT_NOT_RECORDED if problem else 0


def _chosen(value: Any) -> str | None:
    """The release an option names; None when given without one (the default choice)."""
    return None if value is releases.DEFAULT_CHOICE else value


if __name__ == "__main__":
    configure_logging()
    raise SystemExit(main())
