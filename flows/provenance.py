"""Which version of each campaign file and template a run used.

For every campaign a run touched: its YAML file and the template folders it names (with the
shared ``_layouts/`` and ``_partials/``), each with a content hash (SHA-256 of the files'
relative paths and bytes, first 12 hex digits), plus the git commit of the repository holding
them when there is one, whether those files differ from that commit, and — when the
repository has a GitHub-like ``origin`` — links to the files at that commit.
"""

from __future__ import annotations

import hashlib
import re
import shutil
import subprocess
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ciclovita.campaigns.catalog import Catalog, LoadedCampaign

SHARED_TEMPLATE_DIRS = ("_layouts", "_partials")


def content_hash(paths: Iterable[Path], root: Path) -> str:
    """SHA-256 over files (relative path and bytes), in a stable order; 12 hex digits."""
    digest = hashlib.sha256()
    files: list[Path] = []
    for path in paths:
        if path.is_dir():
            files.extend(p for p in path.rglob("*") if p.is_file())
        elif path.is_file():
            files.append(path)
    for file in sorted(set(files)):
        digest.update(str(file.relative_to(root) if file.is_relative_to(root) else file).encode())
        digest.update(b"\0")
        digest.update(file.read_bytes())
        digest.update(b"\0")
    return digest.hexdigest()[:12]


def _git(directory: Path, *args: str) -> str | None:
    git = shutil.which("git")
    if git is None or not directory.is_dir():
        return None
    try:
        result = subprocess.run(  # noqa: S603 - fixed git arguments, no shell
            [git, "-C", str(directory), *args],
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return result.stdout.strip() if result.returncode == 0 else None


@dataclass(frozen=True)
class Repository:
    root: Path
    commit: str
    web_url: str | None

    def link(self, path: Path) -> str | None:
        if self.web_url is None or not path.is_relative_to(self.root):
            return None
        kind = "tree" if path.is_dir() else "blob"
        return f"{self.web_url}/{kind}/{self.commit}/{path.relative_to(self.root).as_posix()}"

    def shown(self, path: Path) -> str:
        """``path`` relative to the repository when inside it."""
        return (
            path.relative_to(self.root).as_posix() if path.is_relative_to(self.root) else str(path)
        )

    def changed(self, paths: Iterable[Path]) -> bool:
        """Whether any of ``paths`` differs from the commit (edited or untracked)."""
        inside = [str(p) for p in paths if p.is_relative_to(self.root)]
        if not inside:
            return False
        status = _git(self.root, "status", "--porcelain", "--", *inside)
        return bool(status)


def _web_url(remote: str | None) -> str | None:
    """``https://host/owner/repo`` for an https or ``git@host:owner/repo`` remote."""
    if not remote:
        return None
    match = re.fullmatch(r"(?:https://(?:[^@/]+@)?|git@)([^/:]+)[/:](.+?)(?:\.git)?/?", remote)
    if match is None:
        return None
    return f"https://{match.group(1)}/{match.group(2)}"


def repository_of(directory: Path) -> Repository | None:
    """The git repository holding ``directory`` and its HEAD commit, if any."""
    top = _git(directory, "rev-parse", "--show-toplevel")
    commit = _git(directory, "rev-parse", "HEAD")
    if not top or not commit:
        return None
    remote = _git(directory, "config", "--get", "remote.origin.url")
    return Repository(Path(top).resolve(), commit, _web_url(remote))


def campaign_templates(campaign: LoadedCampaign) -> list[str]:
    """The template folders a campaign can render (its own and its A/B variants')."""
    names = [campaign.spec.content.template]
    names += [v.template for v in campaign.spec.variants if v.template]
    return sorted(set(names))


def versions(catalog: Catalog, templates_dir: Path, campaigns: Iterable[str]) -> dict[str, Any]:
    """Provenance of the named campaigns: commit, and per campaign file and template hash."""
    wanted = set(campaigns)
    campaigns_dir = catalog.directory.resolve()
    templates_dir = templates_dir.resolve()
    repository = repository_of(campaigns_dir)
    shared = [templates_dir / name for name in SHARED_TEMPLATE_DIRS]
    entries: list[dict[str, Any]] = []
    touched: list[Path] = list(shared)
    for campaign in catalog.campaigns:
        if campaign.name not in wanted:
            continue
        source = campaign.source.resolve()
        folders = [templates_dir / name for name in campaign_templates(campaign)]
        touched += [source, *folders]
        entries.append(
            {
                "campaign": campaign.name,
                "file": repository.shown(source) if repository else str(source),
                "file_hash": content_hash([source], campaigns_dir),
                "file_link": repository.link(source) if repository else None,
                "templates": [
                    {
                        "template": folder.name,
                        "path": repository.shown(folder) if repository else str(folder),
                        "hash": content_hash([folder, *shared], templates_dir),
                        "link": repository.link(folder) if repository else None,
                    }
                    for folder in folders
                ],
            }
        )
    return {
        "commit": repository.commit if repository else None,
        "repository": str(repository.root) if repository else None,
        "uncommitted_changes": repository.changed(touched) if repository else None,
        "shared_templates_hash": content_hash(shared, templates_dir),
        "campaigns": entries,
    }
