"""Deploy the trained model, its score and its ingestion record as one set; promote, roll back.

A release folder (see drs.releasefolder for the layout) is complete before `current`
points at it, and `current` changes in one atomic rename, so a reader that resolves
`current` once sees one whole set even if deployment is killed at any instant. A set
whose score was computed on another model, or whose ingestion record changed since
the model was trained, is refused: trainedmodel.json and latestscore.json say what
each was made from.

A staged release (deploy(stage=True)) waits beside the live one until promote()
makes it live; its manifest says "staged" until then, so a rollback never goes to
a release that was never live.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import Any

from drs.cli import describe_error
from drs.clock import utc_now
from drs.config import (
    INGESTED_RECORD_NAME,
    MODEL_CARD_NAME,
    MODEL_NAME,
    SCORE_CARD_NAME,
    SCORE_NAME,
    Config,
)
from drs.errors import DataError, PipelineError
from drs.files import (
    atomic_write_json,
    file_boundary,
    file_sha256,
    fsync_dir,
    naming,
    read_json,
    read_score,
    remove_stale_temporaries,
    replace,
)
from drs.history import open_history
from drs.releasefolder import (
    CARDS,
    CURRENT,
    DEPLOYED_FILES,
    MANIFEST,
    RELEASES,
    DeploymentError,
    Release,
    current_release,
    list_releases,
    live_release_id,
    read_release,
    verify_release,
)

logger = logging.getLogger(__name__)

# deployment.py's exit status when the deployment or rollback happened but the history
# could not record it.
EXIT_NOT_RECORDED = 2


class Action(StrEnum):
    """What the history's deployments table records of each change to the deployment."""

    DEPLOY = "deploy"
    STAGE = "stage"
    PROMOTE = "promote"
    ROLLBACK = "rollback"


class By(StrEnum):
    """Who made a change to the deployment (the deployments table's made_by column)."""

    HAND = "deployment.py"
    RUN = "fullprocess.py"


# These put a newly trained model live; these made the release of a newly trained model;
# these put a release live, whichever.
WENT_LIVE = (Action.DEPLOY.value, Action.PROMOTE.value)
NEW_MODEL = (Action.DEPLOY.value, Action.STAGE.value)
GO_LIVE = (*WENT_LIVE, Action.ROLLBACK.value)
# What --promote and --rollback hold when given without a release: the default choice
# (an empty id given on the command line is refused, never taken for it).
DEFAULT_CHOICE: Any = object()


def deploy(
    sources: dict[str, Path],
    deployment_folder: Path,
    keep: int = 5,
    before_activate: Callable[[str], None] | None = None,
    check: Callable[[Path], None] | None = None,
    stage: bool = False,
) -> Release:
    """Copy the source files into a new release and make it current; returns it.

    stage: make the release but leave `current` where it is (promote() makes it live).

    sources maps each name of DEPLOYED_FILES (and optionally of CARDS) to the file to
    deploy under that name. check(staging folder) may refuse the copied set, before
    anything is visible. before_activate(release_id) runs when the release is
    complete, just before it goes live: a caller that must know what it deployed
    records the id there, so no kill can leave a live release it has no record of.
    """
    import shutil  # here, not at the top: the cron tick with no new data never copies

    missing = [name for name in DEPLOYED_FILES if not sources.get(name, Path()).is_file()]
    if missing:
        where = ", ".join(str(sources.get(name, name)) for name in missing)
        raise DeploymentError(f"nothing to deploy: missing {where}")
    releases = deployment_folder / RELEASES
    with naming(releases):
        releases.mkdir(parents=True, exist_ok=True)
    _remove_unfinished(deployment_folder)
    release_id = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")
    staging = releases / f".staging-{release_id}"
    staging.mkdir()
    hashes = _copy_sources(sources, staging, releases / release_id)
    if check is not None:
        try:
            check(staging)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
    _write_staged_manifest(staging, release_id, sources, hashes, stage)
    replace(staging, releases / release_id)
    fsync_dir(releases)
    if stage:
        prune(deployment_folder, keep)  # staged releases are bounded too
        return read_release(releases / release_id)
    if before_activate is not None:
        before_activate(release_id)
    release = activate(deployment_folder, release_id)
    prune(deployment_folder, keep)
    return release


def _copy_sources(sources: dict[str, Path], staging: Path, release: Path) -> dict[str, str]:
    """Copy the deployed files (and the cards there are) into staging; name -> SHA-256.

    release: the folder staging becomes, named in errors (the staging folder is hidden).
    """
    import shutil

    hashes = {}
    names = [*DEPLOYED_FILES, *(name for name in CARDS if sources.get(name, Path()).is_file())]
    for name in names:
        with naming(release / name):
            shutil.copyfile(sources[name], staging / name)
        hashes[name] = file_sha256(staging / name)
    return hashes


def _write_staged_manifest(
    staging: Path,
    release_id: str,
    sources: dict[str, Path],
    hashes: dict[str, str],
    stage: bool,
) -> None:
    """Write the release's manifest, then flush every file and the folder to disk."""
    now = utc_now()
    # deployed_at is when a release went live: a staged one gets it from promote().
    when = {"staged": True, "staged_at": now} if stage else {"deployed_at": now}
    manifest = {
        "id": release_id,
        **when,
        "files": hashes,
        "sources": {name: str(sources[name]) for name in hashes},
    }
    with naming(staging.parent / release_id / MANIFEST):
        (staging / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
        for name in (*hashes, MANIFEST):
            _fsync_file(staging / name)
        fsync_dir(staging)


def promotable(deployment_folder: Path) -> list[Release]:
    """Staged releases newer than the live one, oldest first: what promote() may make live.

    A staged release older than the live one was passed over when a newer one went live.
    """
    live = live_release_id(deployment_folder) or ""
    return [r for r in list_releases(deployment_folder) if r.staged and r.id > live]


def promote(deployment_folder: Path, release_id: str | None = None, keep: int = 5) -> Release:
    """Make a staged release live: the given one, else the newest staged after the live one.

    Its manifest then says when it went live (deployed_at) and when it was staged
    (staged_at), and no longer that it is staged, so a later rollback knows it has
    been live. Then releases are pruned as after a deployment (keep: deployments_kept).
    """
    if release_id is not None and not release_id.strip():
        raise DeploymentError(
            f"{deployment_folder}: an empty release id; name a staged release "
            "(deployment.py --list marks them s), or give none for the newest"
        )
    staged = promotable(deployment_folder)
    if release_id is None:
        if not staged:
            raise DeploymentError(f"{deployment_folder}: no staged release newer than the live one")
        release_id = staged[-1].id
    elif release_id not in {release.id for release in staged}:
        raise DeploymentError(
            f"{deployment_folder}: {release_id!r} is not a staged release newer than the live one "
            f"(staged: {', '.join(r.id for r in staged) or 'none'})"
        )
    release = read_release(deployment_folder / RELEASES / release_id)
    verify_release(release)
    # The go-live time is written before the switch, still flagged staged: a kill in
    # between leaves a release that is still promotable, never one that seems to have
    # been live. The flag goes after the switch (activate() drops it when the release
    # is left, should a kill come first).
    staged_at = release.manifest.get("staged_at", release.manifest.get("deployed_at"))
    going_live = {**release.manifest, "deployed_at": utc_now(), "staged_at": staged_at}
    _write_manifest(release.folder, going_live)
    release = activate(deployment_folder, release_id)
    # The release is live: what follows must not make anyone believe it is not.
    try:
        release = _mark_live(release)
        prune(deployment_folder, keep)
    except (PipelineError, OSError) as error:
        logger.warning(
            "release %s is live; tidying up after it failed: %s",
            release_id,
            describe_error(error),
        )
    return release


def _mark_live(release: Release) -> Release:
    """The release without its staged flag, written to its manifest: it has been live."""
    if not release.staged:
        return release
    manifest = {key: value for key, value in release.manifest.items() if key != "staged"}
    _write_manifest(release.folder, manifest)
    return Release(release.folder, manifest)


def _write_manifest(folder: Path, manifest: dict[str, Any]) -> None:
    """Replace a release's manifest in one rename (readers see the old one or the new)."""
    atomic_write_json(folder / MANIFEST, manifest)


def consistent_set(staging: Path, sources: dict[str, Path]) -> None:
    """Refuse a set whose files were not made from each other; names the user's files.

    The score must have been computed on this model, and the ingestion record must be
    the one the model was trained with (training may use fewer files than it names).
    """
    model_sha256 = file_sha256(staging / MODEL_NAME)
    card, score_card = (_card(staging, name, sources[name]) for name in CARDS)
    trained_at = card.get("trained_at", "an unknown time")
    if card.get("model_sha256") != model_sha256:
        raise DeploymentError(
            f"{sources[MODEL_NAME]}: not the model {MODEL_CARD_NAME} describes "
            f"(trained at {trained_at}); run training.py and scoring.py again"
        )
    score = read_score(staging / SCORE_NAME)
    if score_card.get("model_sha256") != model_sha256 or score_card.get("f1") != score:
        raise DeploymentError(
            f"{sources[SCORE_NAME]}: not computed on this model (trained at "
            f"{trained_at}); run scoring.py, then deploy"
        )
    record_sha256 = file_sha256(staging / INGESTED_RECORD_NAME)
    if card.get("ingested_record_sha256") != record_sha256:
        raise DeploymentError(
            f"{sources[INGESTED_RECORD_NAME]}: changed since the model was trained "
            f"(at {trained_at}); run training.py and scoring.py, then deploy"
        )


def _card(staging: Path, name: str, source: Path) -> dict[str, Any]:
    if not (staging / name).is_file():
        raise DeploymentError(
            f"{source}: not found; it records what the model and score were made from "
            "(run training.py and scoring.py)"
        )
    try:
        card = read_json(staging / name)
    except DataError:
        card = None
    if not isinstance(card, dict):
        raise DeploymentError(f"{source}: damaged; run training.py and scoring.py again")
    return card


def activate(deployment_folder: Path, release_id: str) -> Release:
    """Point `current` at a release in one atomic rename; keep the top-level links in place."""
    folder = deployment_folder / RELEASES / release_id
    release = read_release(folder)
    _settle_leaving(deployment_folder, release_id)
    _replace_symlink(deployment_folder / CURRENT, f"{RELEASES}/{release_id}")
    for name in DEPLOYED_FILES:
        link = deployment_folder / name
        if not link.is_symlink() or os.readlink(link) != f"{CURRENT}/{name}":
            _replace_symlink(link, f"{CURRENT}/{name}")
    fsync_dir(deployment_folder)
    return release


def _settle_leaving(deployment_folder: Path, release_id: str) -> None:
    """Drop the staged flag of the live release before `current` leaves it: it was live.

    Only a promotion killed between its switch and its manifest update leaves the flag
    on a live release; without this, a rollback would take it for never live.
    """
    leaving = live_release_id(deployment_folder)
    if leaving is None or leaving == release_id:
        return
    try:
        release = read_release(deployment_folder / RELEASES / leaving)
    except DeploymentError:
        return  # missing or damaged: never a rollback target anyway
    _mark_live(release)


def rollback(deployment_folder: Path, to: str | None = None) -> Release:
    """Make release `to` current, by default the newest intact one before the current one.

    Only a release that has been live is a rollback target: a staged release that was
    never promoted is skipped, and naming one is refused (promote() makes it live).
    A `current` that points at a missing or damaged release is repaired the same way:
    the newest intact release older than the one it names becomes current.
    """
    current_id = live_release_id(deployment_folder)
    if current_id is None:
        raise DeploymentError(f"{deployment_folder}: nothing deployed, nothing to roll back")
    if to is not None and not to.strip():
        raise DeploymentError(
            f"{deployment_folder}: an empty release id; name a kept release "
            "(deployment.py --list), or give none for the one before the live one"
        )
    releases = {release.id: release for release in list_releases(deployment_folder)}
    if to is not None:
        if to not in releases:
            kept = ", ".join(releases) or "none"
            raise DeploymentError(f"{deployment_folder}: no release {to!r} (kept: {kept})")
        if to == current_id:
            raise DeploymentError(f"release {to} is already the live one")
        if releases[to].staged:
            how = (
                f"deployment.py --promote {to} makes it live"
                if to > current_id
                else "a newer release has gone live since"
            )
            raise DeploymentError(
                f"{deployment_folder}: release {to} was staged and never live, "
                f"so it is no rollback target; {how}"
            )
        verify_release(releases[to])
        return activate(deployment_folder, to)
    for release in sorted(releases.values(), key=lambda r: r.id, reverse=True):
        if release.id >= current_id or release.staged:
            continue
        try:
            verify_release(release)
        except DeploymentError as error:
            logger.warning("not rolling back to release %s: %s", release.id, error)
            continue
        return activate(deployment_folder, release.id)
    raise DeploymentError(f"{deployment_folder}: no release before {current_id} to roll back to")


def prune(deployment_folder: Path, keep: int) -> None:
    """Delete all but the newest `keep` releases that have been live, never the current one.

    Staged releases never count against that history, which is what rollbacks need:
    of those newer than the live one the newest `keep` stay; one older than the live
    one was passed over when a newer release went live, and goes. A damaged release
    counts as one that has been live.
    """
    import shutil

    current_id = live_release_id(deployment_folder)
    releases = deployment_folder / RELEASES
    folders = sorted(
        path
        for path in releases.iterdir()
        if path.is_dir() and not path.name.startswith(".") and (path / MANIFEST).exists()
    )
    staged = [f for f in folders if f.name != current_id and _is_staged(f)]
    history = [f for f in folders if f not in staged]
    waiting = [f for f in staged if current_id is None or f.name > current_id]
    doomed = {
        *history[: max(len(history) - keep, 0)],
        *(f for f in staged if f not in waiting),
        *waiting[: max(len(waiting) - keep, 0)],
    }
    for folder in sorted(doomed):
        if folder.name != current_id:
            # Hidden by one rename first: a kill halfway through the deletion must not
            # leave a half-deleted release that a rollback could make current.
            doomed_folder = folder.with_name(f".deleting-{folder.name}")
            replace(folder, doomed_folder)
            file_boundary()
            shutil.rmtree(doomed_folder)


def _is_staged(folder: Path) -> bool:
    """Whether a release folder holds a staged, never live release (a damaged one: no)."""
    try:
        return read_release(folder).staged
    except DeploymentError:
        return False


def _remove_unfinished(deployment_folder: Path) -> None:
    """Remove what a killed deployment left: staging or half-deleted folders, temporary links.

    None of it is ever visible to readers (hidden names, never pointed at by `current`).
    """
    import shutil

    releases = deployment_folder / RELEASES
    for pattern in (".staging-*", ".deleting-*"):
        for path in releases.glob(pattern):
            file_boundary()
            shutil.rmtree(path, ignore_errors=True)
    remove_stale_temporaries(deployment_folder)


def _replace_symlink(link: Path, target: str) -> None:
    tmp = link.with_name(f".{link.name}.{os.getpid()}.link.tmp")
    tmp.unlink(missing_ok=True)
    os.symlink(target, tmp)
    replace(tmp, link)


def _fsync_file(path: Path) -> None:
    with open(path, "rb") as handle:
        os.fsync(handle.fileno())


def record(config: Config, release: Release, action: Action, by: By) -> None:
    """Add a change to the deployment to the history: what, which release, by whom."""
    with open_history(config) as history:
        history.insert(
            "deployments",
            {
                "recorded_at": utc_now(),
                "release_id": release.id,
                "action": action.value,
                "model_sha256": release.model_sha256,
                "f1": release.score(),
                "made_by": by.value,
            },
        )


def sources_of(config: Config) -> dict[str, Path]:
    """The files a deployment copies from output_model_path and output_folder_path."""
    return {
        MODEL_NAME: config.model_path,
        SCORE_NAME: config.score_path,
        INGESTED_RECORD_NAME: config.ingested_record_path,
        MODEL_CARD_NAME: config.model_card_path,
        SCORE_CARD_NAME: config.score_card_path,
    }


def run(
    config: Config,
    before_activate: Callable[[str], None] | None = None,
    record_it: bool = True,
    stage: bool = False,
) -> Release:
    """Deploy output_model_path's model and score with output_folder_path's ingestion record.

    The set is checked first (consistent_set). before_activate and stage: as for
    deploy(). record_it False leaves recording the deployment in the history to the
    caller.
    """
    sources = sources_of(config)
    live = live_or_none(config.deployment_folder)
    if live is not None and same_as(live, sources):
        logger.info(
            "release %s is live with this same model and score; no new release made", live.id
        )
        return live
    release = deploy(
        sources,
        config.deployment_folder,
        config.deployments_kept,
        before_activate,
        check=lambda staging: consistent_set(staging, sources),
        stage=stage,
    )
    if record_it:
        record(config, release, Action.STAGE if stage else Action.DEPLOY, By.RUN)
    if stage:
        logger.info("staged release %s; deployment.py --promote makes it live", release.id)
        return release
    if live is None:
        logger.info("first deployment: release %s (test F1 %.4f)", release.id, release.score())
    elif live.model_sha256 == release.model_sha256:
        logger.info(
            "deployed release %s; its model is identical to the one of release %s it replaces",
            release.id,
            live.id,
        )
    else:
        logger.info(
            "deployed release %s (test F1 %.4f), replacing release %s (test F1 %.4f)",
            release.id,
            release.score(),
            live.id,
            live.score(),
        )
    return release


def same_as(live: Release, sources: dict[str, Path]) -> bool:
    """Whether the files to deploy hold the live release's model and score, byte for byte.

    Deploying them again would make a release that differs in nothing that is served,
    and take a slot a rollback needs.
    """
    try:
        return (
            file_sha256(sources[MODEL_NAME]) == live.model_sha256
            and read_score(sources[SCORE_NAME]) == live.score()
        )
    except (PipelineError, OSError):
        return False


def live_or_none(deployment_folder: Path) -> Release | None:
    """The live release, or None when there is none or it cannot be read."""
    try:
        return current_release(deployment_folder)
    except DeploymentError:
        return None


def run_rollback(config: Config, to: str | None = None) -> tuple[Release | None, Release]:
    """Roll back (to release `to`, else the previous one); (the release left, the one now live).

    Not recorded in the history: the caller does that (recorded()), once it is live.
    """
    left = live_or_none(config.deployment_folder)
    return left, rollback(config.deployment_folder, to)


def recorded(config: Config, release: Release, action: Action) -> str:
    """Record a deployment or rollback that has happened; '' or why it could not be recorded.

    The release is live either way: a history that cannot be written must not make the
    user believe otherwise (and do it again).
    """
    try:
        record(config, release, action, By.HAND)
    except (PipelineError, OSError) as error:
        logger.warning("%s is done but not recorded in the run history: %s", action, error)
        return f" (not recorded in the run history: {describe_error(error)})"
    return ""
