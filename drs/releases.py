"""Deploy the trained model, its score and its ingestion record as one set.

Layout of prod_deployment_path:

    releases/<id>/{trainedmodel.pkl, latestscore.txt, ingestedfiles.txt,
                   trainedmodel.json, latestscore.json, manifest.json}
    current -> releases/<id>              the deployed set, switched by one rename
    trainedmodel.pkl -> current/trainedmodel.pkl   (likewise the other two files)

A release folder is complete before `current` points at it, and `current` changes
in one atomic rename, so a reader that resolves `current` once sees one whole set
even if deployment is killed at any instant. The manifest records each file's
SHA-256; the model is checked against it before it is unpickled. A set whose score
was computed on another model, or whose ingestion record changed since the model
was trained, is refused: trainedmodel.json and latestscore.json say what each was
made from.

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
from typing import Any, NamedTuple

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
    read_ingested_record,
    read_json,
    read_score,
    remove_stale_temporaries,
    replace,
)
from drs.history import open_history
from drs.modelling import load_model

logger = logging.getLogger(__name__)

RELEASES = "releases"
CURRENT = "current"
MANIFEST = "manifest.json"
DEPLOYED_FILES = (MODEL_NAME, SCORE_NAME, INGESTED_RECORD_NAME)
# What training and scoring recorded beside the model and the score; in the release too.
CARDS = (MODEL_CARD_NAME, SCORE_CARD_NAME)
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


class DeploymentError(PipelineError):
    pass


class Release(NamedTuple):
    """One deployed set: its folder and its manifest."""

    folder: Path
    manifest: dict[str, Any]

    @property
    def id(self) -> str:
        return self.folder.name

    @property
    def model_sha256(self) -> str:
        return self.manifest["files"][MODEL_NAME]

    @property
    def staged(self) -> bool:
        """Staged and never live: promote() drops the flag once the release is live."""
        return bool(self.manifest.get("staged"))

    def path(self, name: str) -> Path:
        return self.folder / name

    def score(self) -> float:
        return read_score(self.path(SCORE_NAME))

    def ingested_files(self) -> list[str]:
        return read_ingested_record(self.path(INGESTED_RECORD_NAME))

    def model_card(self) -> dict[str, Any]:
        """What the model was trained on (trainedmodel.json); {} for a release without one."""
        return self._card(MODEL_CARD_NAME)

    def score_card(self) -> dict[str, Any]:
        """What the score was computed on (latestscore.json); {} for a release without one."""
        return self._card(SCORE_CARD_NAME)

    def _card(self, name: str) -> dict[str, Any]:
        if name not in self.manifest["files"]:
            return {}
        card = read_json(self.path(name))
        return card if isinstance(card, dict) else {}

    def trained_on(self) -> list[str]:
        """The input files the model was trained on (the ingestion record when not recorded)."""
        return self.model_card().get("trained_on") or self.ingested_files()

    def load_model(self) -> Any:
        """The release's model, after checking its SHA-256 against the manifest."""
        return load_model(self.path(MODEL_NAME), self.model_sha256)


def current_release(deployment_folder: Path) -> Release | None:
    """The release `current` points at, or None when nothing is deployed yet."""
    link = deployment_folder / CURRENT
    try:
        target = os.readlink(link)
    except FileNotFoundError:
        return None
    except OSError as error:
        raise DeploymentError(f"{link}: not a deployment link ({error.strerror})") from None
    return read_release((deployment_folder / target).resolve())


def read_release(folder: Path) -> Release:
    """A release folder and its manifest; DeploymentError when the manifest is unusable."""
    try:
        manifest = json.loads((folder / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        reason = error.strerror if isinstance(error, OSError) else str(error)
        raise DeploymentError(f"{folder}: unreadable deployment manifest ({reason})") from None
    files = manifest.get("files") if isinstance(manifest, dict) else None
    if not isinstance(files, dict):
        raise DeploymentError(f"{folder / MANIFEST}: damaged (no 'files' table of hashes)")
    for name in DEPLOYED_FILES:
        digest = files.get(name)
        if not (isinstance(digest, str) and len(digest) == 64):
            raise DeploymentError(f"{folder / MANIFEST}: damaged (no SHA-256 for {name})")
    return Release(folder, manifest)


def verify_release(release: Release) -> None:
    """Every file of the release matches the hash its manifest recorded; DeploymentError if not."""
    for name, digest in release.manifest["files"].items():
        try:
            actual = file_sha256(release.path(name))
        except OSError as error:
            raise DeploymentError(f"{release.path(name)}: {error.strerror}") from None
        if actual != digest:
            raise DeploymentError(f"{release.path(name)}: does not match its manifest")


def list_releases(deployment_folder: Path) -> list[Release]:
    """Complete releases with a usable manifest, oldest first (ids sort by time).

    A release with a damaged manifest is left out, with a warning.
    """
    folder = deployment_folder / RELEASES
    if not folder.is_dir():
        return []
    releases = []
    for path in sorted(folder.iterdir()):
        if path.is_dir() and not path.name.startswith(".") and (path / MANIFEST).exists():
            try:
                releases.append(read_release(path))
            except DeploymentError as error:
                logger.warning("%s", error)
    return releases


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
    hashes = {}
    names = [*DEPLOYED_FILES, *(name for name in CARDS if sources.get(name, Path()).is_file())]
    for name in names:
        with naming(releases / release_id / name):
            shutil.copyfile(sources[name], staging / name)
        hashes[name] = file_sha256(staging / name)
    if check is not None:
        try:
            check(staging)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
    now = utc_now()
    # deployed_at is when a release went live: a staged one gets it from promote().
    when = {"staged": True, "staged_at": now} if stage else {"deployed_at": now}
    manifest = {
        "id": release_id,
        **when,
        "files": hashes,
        "sources": {name: str(sources[name]) for name in names},
    }
    with naming(releases / release_id / MANIFEST):
        (staging / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
        for name in (*names, MANIFEST):
            _fsync_file(staging / name)
        fsync_dir(staging)
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


def live_release_id(deployment_folder: Path) -> str | None:
    """The release id `current` names, whether or not that release is still whole."""
    try:
        return Path(os.readlink(deployment_folder / CURRENT)).name
    except FileNotFoundError:
        return None
    except OSError as error:
        raise DeploymentError(
            f"{deployment_folder / CURRENT}: not a deployment link ({error.strerror}); "
            "move it aside, then run deployment.py --rollback RELEASE"
        ) from None


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


def describe(release: Release | None) -> str:
    """'release <id> (test F1 0.7135)', or what is known of a damaged one."""
    if release is None:
        return "a missing or damaged release"
    try:
        return f"release {release.id} (test F1 {release.score():.4f})"
    except (PipelineError, OSError):
        return f"release {release.id} (no readable score)"


def release_table(deployment_folder: Path) -> list[dict[str, Any]]:
    """Every kept release, newest first: id, deployed at, test F1, expected F1, trained on, live.

    deployed_at is when the release went live (None for one never live), staged_at
    when it was staged; staged marks one that promote() can make live. A field a
    damaged release does not hold readably is None; the list goes on.
    """
    live = live_release_id(deployment_folder)
    rows = []
    for release in reversed(list_releases(deployment_folder)):
        card = _readable(release.model_card) or {}
        expected = card.get("expected")
        trained_on = _readable(release.trained_on)
        never_live = release.staged and release.id != live
        deployed_at = None if never_live else release.manifest.get("deployed_at")
        # A release staged before promotions rewrote manifests has only deployed_at.
        staged_at = release.manifest.get("staged_at", release.manifest.get("deployed_at"))
        rows.append(
            {
                "release": release.id,
                "live": release.id == live,
                "staged": never_live and release.id > (live or ""),
                "deployed_at": deployed_at if isinstance(deployed_at, str) else None,
                "staged_at": staged_at if isinstance(staged_at, str) and never_live else None,
                "test_f1": _number(_readable(release.score)),
                "expected_f1": _number(expected.get("f1") if isinstance(expected, dict) else None),
                "trained_on": trained_on
                if isinstance(trained_on, list) and all(isinstance(n, str) for n in trained_on)
                else None,
            }
        )
    return rows


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def _readable(read: Callable[[], Any]) -> Any:
    try:
        return read()
    except (PipelineError, OSError):
        return None


def format_release_table(
    rows: list[dict[str, Any]], live: str | None = None, how: dict[str, str] | None = None
) -> str:
    """The release list as people read it: * the live one, s one staged; unreadable fields '?'.

    A staged release shows when it was staged: it has not gone live. how: how each
    release last went live (release id -> words), from the run history.
    """

    def number(value: float | None) -> str:
        return "-" if value is None else f"{value:.4f}"

    how = how or {}
    lines = [
        f"  {'release':<24} {'deployed at (UTC)':<19}  {'test F1':>7}  {'expected':>8}  "
        f"{'how it went live':<27}  trained on"
    ]
    for row in rows:
        when = (row["deployed_at"] or row.get("staged_at") or "?")[:19].replace("T", " ")
        trained_on = "?" if row["trained_on"] is None else ", ".join(row["trained_on"]) or "-"
        mark = "*" if row["live"] else "s" if row["staged"] else " "
        went = "staged, not live yet" if row["staged"] else how.get(row["release"], "not recorded")
        lines.append(
            f"{mark} {row['release']:<24} {when:<19}  "
            f"{number(row['test_f1']):>7}  {number(row['expected_f1']):>8}  {went:<27}  "
            f"{trained_on}"
        )
    if live is not None and not any(row["live"] for row in rows):
        lines.append(
            f"! current points at release {live}, which is missing or damaged: "
            "deployment.py --rollback repairs it"
        )
    return "\n".join(lines)


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
