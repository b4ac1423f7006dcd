"""What a release is and how the deployment folder is read: manifests, the live link, the list.

Layout of prod_deployment_path:

    releases/<id>/{trainedmodel.pkl, latestscore.txt, ingestedfiles.txt,
                   trainedmodel.json, latestscore.json, manifest.json}
    current -> releases/<id>              the deployed set, switched by one rename
    trainedmodel.pkl -> current/trainedmodel.pkl   (likewise the other two files)

The manifest records each file's SHA-256; the model is checked against it before it
is unpickled. Changing the deployment (deploy, promote, roll back) is drs.releases'.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

from drs.config import (
    INGESTED_RECORD_NAME,
    MODEL_CARD_NAME,
    MODEL_NAME,
    SCORE_CARD_NAME,
    SCORE_NAME,
)
from drs.errors import PipelineError
from drs.files import file_sha256, read_ingested_record, read_json, read_score

logger = logging.getLogger(__name__)

RELEASES = "releases"
CURRENT = "current"
MANIFEST = "manifest.json"
DEPLOYED_FILES = (MODEL_NAME, SCORE_NAME, INGESTED_RECORD_NAME)
# What training and scoring recorded beside the model and the score; in the release too.
CARDS = (MODEL_CARD_NAME, SCORE_CARD_NAME)


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
        from drs import modelling  # here: the cron tick reads releases, never a model

        return modelling.load_model(self.path(MODEL_NAME), self.model_sha256)


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


def verify_release(release: Release, sha256: Callable[[Path], str] = file_sha256) -> None:
    """Every file of the release matches the hash its manifest recorded; DeploymentError if not.

    sha256: how a file is hashed (the cron tick's skips files unchanged since last time).
    """
    for name, digest in release.manifest["files"].items():
        try:
            actual = sha256(release.path(name))
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
