"""The study's artifact store: each complete trial's fine-tuned student weights.

Artifacts go through Optuna's artifact API, so optuna-dashboard lists them for download. They
live in ``$EDGETUNE_HOME/artifacts`` unless ``EDGETUNE_ARTIFACTS`` names another folder (a
shared one, for a cluster).
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from search.errors import StudyError

if TYPE_CHECKING:
    from optuna.artifacts import FileSystemArtifactStore


def artifact_dir() -> Path:
    from targets.home import edgetune_home

    path = Path(os.environ.get("EDGETUNE_ARTIFACTS", edgetune_home() / "artifacts")).resolve()
    path.mkdir(parents=True, exist_ok=True)
    return path


def artifact_store() -> FileSystemArtifactStore:
    from optuna.artifacts import FileSystemArtifactStore

    return FileSystemArtifactStore(str(artifact_dir()))


def download(artifact_id: str) -> bytes:
    from optuna.artifacts import download_artifact

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "artifact"
        try:
            download_artifact(
                artifact_store=artifact_store(), file_path=str(path), artifact_id=artifact_id
            )
        except Exception as exc:
            raise StudyError(
                f"artifact {artifact_id} is missing from {artifact_dir()} "
                f"({type(exc).__name__}); set EDGETUNE_ARTIFACTS to the folder the "
                "study wrote its artifacts to"
            ) from None
        return path.read_bytes()


def upload(
    study_or_trial: Any, name: str, data: bytes, mimetype: str = "application/octet-stream"
) -> str:
    """Store ``data`` as an artifact of a study or a running trial, named ``name``; its id.
    optuna-dashboard lists it there for download (and shows an ``image/*`` one)."""
    from optuna.artifacts import upload_artifact

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / name
        path.write_bytes(data)
        return upload_artifact(
            artifact_store=artifact_store(),
            file_path=str(path),
            study_or_trial=study_or_trial,
            mimetype=mimetype,
        )
