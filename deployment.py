"""Deploy the trained model, its score and its ingestion record as one set (§4).

Layout of prod_deployment_path:

    releases/<id>/{trainedmodel.pkl, latestscore.txt, ingestedfiles.txt, manifest.json}
    current -> releases/<id>              the deployed set, switched by one rename
    trainedmodel.pkl -> current/trainedmodel.pkl   (likewise the other two files)

A release folder is complete before `current` points at it, and `current` changes
in one atomic rename, so a reader that resolves `current` once sees one whole set
even if deployment is killed at any instant. The manifest records each file's
SHA-256; the model is checked against it before it is unpickled.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, NamedTuple

import common

logger = logging.getLogger(__name__)

RELEASES = "releases"
CURRENT = "current"
MANIFEST = "manifest.json"
DEPLOYED_FILES = (common.MODEL_NAME, common.SCORE_NAME, common.INGESTED_RECORD_NAME)


class DeploymentError(common.PipelineError):
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
        return self.manifest["files"][common.MODEL_NAME]

    def path(self, name: str) -> Path:
        return self.folder / name

    def score(self) -> float:
        return common.read_score(self.path(common.SCORE_NAME))

    def ingested_files(self) -> list[str]:
        return common.read_ingested_record(self.path(common.INGESTED_RECORD_NAME))

    def load_model(self) -> Any:
        """The release's model, after checking its SHA-256 against the manifest."""
        return common.load_model(self.path(common.MODEL_NAME), self.model_sha256)


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
    try:
        manifest = json.loads((folder / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as error:
        raise DeploymentError(f"{folder}: unreadable deployment manifest ({error})") from None
    return Release(folder, manifest)


def list_releases(deployment_folder: Path) -> list[Release]:
    """Complete releases, oldest first (ids sort by time)."""
    folder = deployment_folder / RELEASES
    if not folder.is_dir():
        return []
    return [
        read_release(path)
        for path in sorted(folder.iterdir())
        if path.is_dir() and not path.name.startswith(".") and (path / MANIFEST).exists()
    ]


def deploy(
    sources: dict[str, Path],
    deployment_folder: Path,
    keep: int = 5,
    before_activate: Callable[[str], None] | None = None,
) -> Release:
    """Copy the three source files into a new release and make it current; returns it.

    sources maps each name of DEPLOYED_FILES to the file to deploy under that name.
    before_activate(release_id) runs when the release is complete, just before it goes
    live: a caller that must know what it deployed records the id there, so no kill
    can leave a live release it has no record of.
    """
    missing = [name for name in DEPLOYED_FILES if not sources.get(name, Path()).is_file()]
    if missing:
        where = ", ".join(str(sources.get(name, name)) for name in missing)
        raise DeploymentError(f"nothing to deploy: missing {where}")
    releases = deployment_folder / RELEASES
    releases.mkdir(parents=True, exist_ok=True)
    _remove_unfinished(deployment_folder)
    release_id = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")
    staging = releases / f".staging-{release_id}"
    staging.mkdir()
    hashes = {}
    for name in DEPLOYED_FILES:
        shutil.copyfile(sources[name], staging / name)
        hashes[name] = common.file_sha256(staging / name)
    manifest = {
        "id": release_id,
        "deployed_at": common.utc_now(),
        "files": hashes,
        "sources": {name: str(sources[name]) for name in DEPLOYED_FILES},
    }
    (staging / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    for name in (*DEPLOYED_FILES, MANIFEST):
        _fsync_file(staging / name)
    common.fsync_dir(staging)
    os.replace(staging, releases / release_id)
    common.fsync_dir(releases)
    if before_activate is not None:
        before_activate(release_id)
    release = activate(deployment_folder, release_id)
    prune(deployment_folder, keep)
    return release


def activate(deployment_folder: Path, release_id: str) -> Release:
    """Point `current` at a release in one atomic rename; keep the top-level links in place."""
    folder = deployment_folder / RELEASES / release_id
    release = read_release(folder)
    _replace_symlink(deployment_folder / CURRENT, f"{RELEASES}/{release_id}")
    for name in DEPLOYED_FILES:
        link = deployment_folder / name
        if not link.is_symlink() or os.readlink(link) != f"{CURRENT}/{name}":
            _replace_symlink(link, f"{CURRENT}/{name}")
    common.fsync_dir(deployment_folder)
    return release


def rollback(deployment_folder: Path) -> Release:
    """Make the release before the current one current again; returns it."""
    current = current_release(deployment_folder)
    if current is None:
        raise DeploymentError(f"{deployment_folder}: nothing deployed, nothing to roll back")
    earlier = [r for r in list_releases(deployment_folder) if r.id < current.id]
    if not earlier:
        raise DeploymentError(
            f"{deployment_folder}: no release before {current.id} to roll back to"
        )
    return activate(deployment_folder, earlier[-1].id)


def prune(deployment_folder: Path, keep: int) -> None:
    """Delete all but the newest `keep` releases, never the current one."""
    current = current_release(deployment_folder)
    releases = list_releases(deployment_folder)
    for release in releases[: max(len(releases) - keep, 0)]:
        if current is None or release.id != current.id:
            # Hidden by one rename first: a kill halfway through the deletion must not
            # leave a half-deleted release that a rollback could make current.
            doomed = release.folder.with_name(f".deleting-{release.id}")
            os.replace(release.folder, doomed)
            shutil.rmtree(doomed)


def _remove_unfinished(deployment_folder: Path) -> None:
    """Remove what a killed deployment left: staging or half-deleted folders, temporary links.

    None of it is ever visible to readers (hidden names, never pointed at by `current`).
    """
    releases = deployment_folder / RELEASES
    for pattern in (".staging-*", ".deleting-*"):
        for path in releases.glob(pattern):
            shutil.rmtree(path, ignore_errors=True)
    for path in deployment_folder.glob(".*.tmp"):
        if path.is_symlink():
            path.unlink(missing_ok=True)


def _replace_symlink(link: Path, target: str) -> None:
    tmp = link.with_name(f".{link.name}.{os.getpid()}.tmp")
    tmp.unlink(missing_ok=True)
    os.symlink(target, tmp)
    os.replace(tmp, link)


def _fsync_file(path: Path) -> None:
    with open(path, "rb") as handle:
        os.fsync(handle.fileno())


def record(config: common.Config, release: Release, action: str) -> None:
    with common.open_history(config) as history:
        history.insert(
            "deployments",
            {
                "recorded_at": common.utc_now(),
                "release_id": release.id,
                "action": action,
                "model_sha256": release.model_sha256,
                "f1": release.score(),
            },
        )


def run(config: common.Config, before_activate: Callable[[str], None] | None = None) -> Release:
    """Deploy output_model_path's model and score with output_folder_path's ingestion record.

    before_activate: as for deploy().
    """
    sources = {
        common.MODEL_NAME: config.model_path,
        common.SCORE_NAME: config.score_path,
        common.INGESTED_RECORD_NAME: config.ingested_record_path,
    }
    release = deploy(sources, config.deployment_folder, config.deployments_kept, before_activate)
    record(config, release, "deploy")
    logger.info("deployed release %s to %s", release.id, config.deployment_folder)
    return release


def run_rollback(config: common.Config) -> Release:
    release = rollback(config.deployment_folder)
    record(config, release, "rollback")
    logger.info("rolled back to release %s", release.id)
    return release


def main(argv: list[str] | None = None) -> int:
    parser = common.build_parser(__doc__)
    parser.add_argument(
        "--rollback", action="store_true", help="make the previous deployment current again"
    )
    args = parser.parse_args(argv)

    def action() -> None:
        config = common.load_config(args.config)
        release = run_rollback(config) if args.rollback else run(config)
        print(release.id)

    return common.run_cli(action)


if __name__ == "__main__":
    raise SystemExit(main())
