"""LUTagsGet, LUTagsSet, LUTagsDel, LUTagsSearch: the tags of the cluster, nodes and
instances (OP_TAGS_*).

As Ganeti's: no hooks; a node's or an instance's tags are changed under its
lock, the cluster's under the configuration's own (every change is one read-modify-
write of the configuration, so none is lost). Adding a tag the object has
already changes nothing; removing one it does not have is refused
(ECODE_NOENT) before anything changes, as is going over Ganeti's 4096 tags
of an object (ECODE_INVAL). Both are checked again within the configuration
update: another job may have changed the cluster's tags meanwhile, which
fails this one (OpExecError, nothing changed), as Ganeti's changes of tags
fail in Exec. Reading the tags, and searching every object's, are queries: no
job, no lock.
Tags keep the order they were added in; listings sort them, as Ganeti's.
"""

from __future__ import annotations

import re
import time
from typing import Any

from ganeti_lv import constants, locking
from ganeti_lv.cmdlib.base import FeedbackFn, NoHooksLU, register_lu
from ganeti_lv.cmdlib.common import expand_instance, expand_node
from ganeti_lv.errors import ECODE_INVAL, ECODE_NOENT, OpExecError, OpPrereqError
from ganeti_lv.names import MAX_TAGS
from ganeti_lv.objects import Cluster, ConfigData, Instance, Node
from ganeti_lv.opcodes import OpTagsDel, OpTagsGet, OpTagsSearch, OpTagsSet


def _target(data: ConfigData, kind: str, name: str | None) -> Cluster | Node | Instance:
    """The tagged object in ``data`` (the configuration's own: changes stick);
    ECODE_NOENT when it was removed since its name was expanded (while the job
    waited for its lock, or a query ran)."""
    if kind == constants.TAG_CLUSTER:
        return data.cluster
    assert name is not None
    found = (data.nodes if kind == constants.TAG_NODE else data.instances).get(name)
    if found is None:
        raise OpPrereqError(f"{kind.capitalize()} '{name}' not known", ECODE_NOENT)
    return found


class _TagsLU(NoHooksLU):
    """The target's name expanded; a node's or an instance's lock for a change of its tags."""

    REQ_BGL = False

    def ExpandNames(self) -> None:
        """A node's or an instance's full name (ECODE_NOENT when unknown) and its lock."""
        self.needed_locks = {}
        if self.op.kind == constants.TAG_NODE:
            self.op.name = expand_node(self.cfg, self.op.name)
            level = locking.LEVEL_NODE
        elif self.op.kind == constants.TAG_INSTANCE:
            self.op.name = expand_instance(self.cfg, self.op.name)
            level = locking.LEVEL_INSTANCE
        else:
            return
        if not self.QUERY:
            self.needed_locks[level] = [self.op.name]

    def current(self) -> list[str]:
        """The target's tags as the configuration has them now."""
        return list(_target(self.cfg.snapshot(), self.op.kind, self.op.name).tags)


@register_lu(OpTagsGet)
class LUTagsGet(_TagsLU):
    """The target's tags, sorted."""

    QUERY = True

    def Exec(self, feedback_fn: FeedbackFn) -> list[str]:
        """The tags."""
        return sorted(self.current())


@register_lu(OpTagsSet)
class LUTagsSet(_TagsLU):
    """Add tags (those the target has already stay as they are)."""

    def _too_many(self, tags: list[str]) -> str:
        """Why the tags would be too many with the new ones ("" when they are not)."""
        total = len(set(tags) | set(self.op.tags))
        if total <= MAX_TAGS:
            return ""
        what = f"{self.op.kind} {self.op.name or ''}".rstrip()
        return f"Too many tags for {what}: {total} with the new ones (at most {MAX_TAGS})"

    def CheckPrereq(self) -> None:
        """No more than Ganeti's limit of tags per object once added."""
        problem = self._too_many(self.current())
        if problem:
            raise OpPrereqError(problem, ECODE_INVAL)

    def Exec(self, feedback_fn: FeedbackFn) -> Any:
        """Add the new tags, in the order given (checked again: the cluster's tags
        may have been changed by another job meanwhile)."""
        with self.cfg.update() as data:
            target = _target(data, self.op.kind, self.op.name)
            problem = self._too_many(target.tags)
            if problem:
                raise OpExecError(problem)
            target.tags += [tag for tag in dict.fromkeys(self.op.tags) if tag not in target.tags]
            target.mtime = time.time()
        return None


@register_lu(OpTagsDel)
class LUTagsDel(_TagsLU):
    """Remove tags, every one of which the target must have."""

    def _missing(self, tags: list[str]) -> str:
        """The tags to remove that ``tags`` lacks, in Ganeti's words ("" for none)."""
        missing = sorted(set(self.op.tags) - set(tags))
        return f"Tag(s) {', '.join(repr(t) for t in missing)} not found" if missing else ""

    def CheckPrereq(self) -> None:
        """ECODE_NOENT, naming them, for tags the target does not have."""
        problem = self._missing(self.current())
        if problem:
            raise OpPrereqError(problem, ECODE_NOENT)

    def Exec(self, feedback_fn: FeedbackFn) -> Any:
        """Remove them (checked again, as the cluster's tags may have changed meanwhile)."""
        gone = set(self.op.tags)
        with self.cfg.update() as data:
            target = _target(data, self.op.kind, self.op.name)
            problem = self._missing(target.tags)
            if problem:
                raise OpExecError(problem)
            target.tags = [tag for tag in target.tags if tag not in gone]
            target.mtime = time.time()
        return None


@register_lu(OpTagsSearch)
class LUTagsSearch(NoHooksLU):
    """The tags the pattern finds (``re.search``) on the cluster (``/cluster``), its
    instances (``/instances/NAME``) and nodes (``/nodes/NAME``): (path, tag) pairs,
    as Ganeti's, in that order."""

    REQ_BGL = False
    QUERY = True

    def ExpandNames(self) -> None:
        """No locks: one snapshot of the configuration."""
        self.needed_locks = {}

    def Exec(self, feedback_fn: FeedbackFn) -> list[list[str]]:
        """The pairs found."""
        data = self.cfg.snapshot()
        pattern = re.compile(self.op.pattern)
        targets: list[tuple[str, list[str]]] = [("/cluster", data.cluster.tags)]
        targets += [(f"/instances/{i.name}", i.tags) for i in data.instances.values()]
        targets += [(f"/nodes/{n.name}", n.tags) for n in data.nodes.values()]
        return [[path, tag] for path, tags in targets for tag in tags if pattern.search(tag)]
