"""A model's version history: propose a new version from ops or a rollback, then commit it.

Proposing is pure (nothing changes until `commit`), which lets the serving layer validate and build off the
hot path, make the version durable, and only then publish it. No locks here: the caller serialises edits.
`check_base` and `rollback_version` are the rules themselves; the server applies them to its own record of which
versions are in memory (serving/residency.py), and `LiveModel` is the in-memory history of tools and tests.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from .edits import Op, apply_edit
from .errors import GraphError, NotFoundError
from .version import ModelVersion, make_version


class ConflictError(GraphError):
    """The edit was based on a version that is no longer the latest."""


def check_base(model: str, latest: int, if_version: int | None) -> None:
    """An edit conditional on `if_version` (If-Match) applies only to that version: ConflictError otherwise."""
    if if_version is not None and if_version != latest:
        raise ConflictError(
            f"model {model!r} is at version {latest}, not {if_version}", expected=if_version, got=latest
        )


def rollback_version(current: ModelVersion, target: ModelVersion, version: int) -> ModelVersion:
    """Version `version`, equal to `target`: its spec and the very same modules (no copies), parent `current`."""
    return make_version(
        current.model,
        version,
        current.version,
        target.spec,
        target.modules,
        previous=target,
        ops=({"op": "rollback", "to": target.version},),
    )


class LiveModel:
    """All versions of one model; the latest is the one that serves."""

    def __init__(self, first: ModelVersion, loader: Callable[[int], ModelVersion] | None = None) -> None:
        """`first` is the latest version; `loader` brings back versions dropped from memory (from a store)."""
        self.name = first.model
        self._versions: dict[int, ModelVersion] = {first.version: first}
        self._latest = first.version
        self._loader = loader

    @property
    def current(self) -> ModelVersion:
        return self._versions[self._latest]

    def get(self, version: int | None = None) -> ModelVersion:
        if version is None:
            return self.current
        v = self._versions.get(version)
        if v is None and self._loader is not None and 1 <= version <= self._latest:
            return self._loader(version)
        if v is None:
            raise NotFoundError(
                f"model {self.name!r} has no version {version} (latest is {self._latest})", version=version
            )
        return v

    def cached(self, version: int) -> ModelVersion | None:
        """The version if it is held in memory (never loads)."""
        return self._versions.get(version)

    def versions(self) -> Iterator[ModelVersion]:
        """The versions held in memory, oldest first."""
        return (self._versions[k] for k in sorted(self._versions))

    def check_base(self, if_version: int | None) -> None:
        check_base(self.name, self._latest, if_version)

    def propose(
        self, ops: list[Op] | list[dict[str, Any]], *, if_version: int | None = None, allow_output_change: bool = False
    ) -> ModelVersion:
        """The next version that `ops` would make of the current one (not committed)."""
        self.check_base(if_version)
        return apply_edit(self.current, ops, version=self._latest + 1, allow_output_change=allow_output_change)

    def propose_rollback(self, to: int, *, if_version: int | None = None) -> ModelVersion:
        """A new version equal to version `to`: same spec and the very same modules (no copies)."""
        self.check_base(if_version)
        return rollback_version(self.current, self.get(to), self._latest + 1)

    def commit(self, version: ModelVersion) -> None:
        if version.version != self._latest + 1 or version.model != self.name:
            raise ConflictError(
                f"cannot commit version {version.version} of {version.model!r}: {self.name!r} is at {self._latest}"
            )
        self._versions[version.version] = version
        self._latest = version.version

    def advance(self, version: ModelVersion) -> None:
        """Publish a version committed elsewhere (by another replica): any number past the latest, skipping those
        between (a follower may jump straight to the newest)."""
        if version.version <= self._latest or version.model != self.name:
            raise ConflictError(
                f"cannot advance {self.name!r} from {self._latest} to {version.version} of {version.model!r}"
            )
        self._versions[version.version] = version
        self._latest = version.version

    def forget(self, version: int) -> None:
        """Drop a version from memory (never the current one)."""
        if version != self._latest:
            self._versions.pop(version, None)
