"""HooksMaster: builds hook environments and decides what hook results mean.

It is pure: running scripts on nodes is a function it is given
(``hooks_execution_fn(node_names, phase, env) -> {node: NodeResult}``), as
is the LU's environment builder. It never talks to a node itself.

* PRE phase: any failed script, or an online node that could not be
  reached, raises ``HooksAbort([(node, script, output), ...], nodes)``; offline
  nodes are skipped.
* POST phase: failures become warnings through ``log_fn``
  ("On <node> script <path> failed, output: <text>", "(no output)" for none).
* config-update (``run_config_update``): after an operation that wrote the
  configuration, Ganeti's special hooks path ``config-update`` runs on the
  master alone, as a POST phase with the PRE environment, whether or not
  the operation has hooks of its own; failures are warnings.

A script's output is passed on stripped of leading and trailing white
space, as Ganeti's hooks runner does; skipped scripts (``HKR_SKIP``) are
in the results but, as in Ganeti, never reported.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from ganeti_lv import constants
from ganeti_lv.errors import ECODE_FAULT, HooksAbort, HooksFailure
from ganeti_lv.node.transport import HookScriptResult, NodeResult

HookResults = dict[str, NodeResult[list[HookScriptResult]]]
ExecFn = Callable[[list[str], str, dict[str, str]], HookResults]


def hook_value(value: Any) -> str:
    """A hook environment value: booleans "True"/"False", None "", lists space-joined."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "True" if value else "False"
    if isinstance(value, (list, tuple)):
        return " ".join(hook_value(v) for v in value)
    return str(value)


class HooksMaster:
    """Hooks of one operation: base env, PRE env, POST env, phase decisions."""

    def __init__(
        self,
        opcode: str,
        hooks_path: str | None,
        nodes: tuple[Iterable[str], Iterable[str]],
        hooks_execution_fn: ExecFn,
        build_env_fn: Callable[[], dict[str, Any]] | None,
        prepare_post_nodes_fn: Callable[[list[str]], list[str]] | None,
        log_fn: Callable[[str], None],
        htype: str | None = None,
        cluster_name: str | None = None,
        master_name: str | None = None,
        data_dir: str | None = None,
    ) -> None:
        self.opcode = opcode
        self.hooks_path = hooks_path
        self.pre_nodes = list(nodes[0])
        self.post_nodes = list(nodes[1])
        self.hooks_execution_fn = hooks_execution_fn
        self.build_env_fn = build_env_fn
        self.prepare_post_nodes_fn = prepare_post_nodes_fn
        self.log_fn = log_fn
        self.htype = htype
        self.cluster_name = cluster_name
        self.master_name = master_name
        self.data_dir = data_dir
        self.pre_env = self._lu_env(constants.HOOKS_PHASE_PRE)

    @classmethod
    def build_from_lu(
        cls,
        lu: Any,
        hooks_execution_fn: ExecFn,
        cluster_name: str | None,
        master_name: str | None,
        data_dir: str | None,
    ) -> HooksMaster:
        """A HooksMaster for ``lu``; calls BuildHooksNodes/BuildHooksEnv if it has hooks."""
        if lu.HPATH is None:
            nodes: tuple[list[str], list[str]] = ([], [])
            build_env = None
        else:
            pre, post = lu.BuildHooksNodes()
            nodes = (list(pre or []), list(post or []))
            build_env = lu.BuildHooksEnv
        return cls(
            lu.op.OP_ID,
            lu.HPATH,
            nodes,
            hooks_execution_fn,
            build_env,
            lu.PreparePostHookNodes,
            lu.LogWarning,
            htype=lu.HTYPE,
            cluster_name=cluster_name,
            master_name=master_name,
            data_dir=data_dir,
        )

    # ------------------------------------------------------------ env
    def _lu_env(self, phase: str) -> dict[str, str]:
        """The LU's keys for ``phase``, prefixed GANETI_ (pre) or GANETI_POST_ (post)."""
        if self.hooks_path is None or self.build_env_fn is None:
            return {}
        prefix = "GANETI_" if phase == constants.HOOKS_PHASE_PRE else "GANETI_POST_"
        base_keys = set(self.base_env(phase))
        env: dict[str, str] = {}
        for key, value in (self.build_env_fn() or {}).items():
            full = prefix + key
            if full in base_keys:
                raise HooksFailure(
                    f"Hook environment key {key!r} collides with a base key", ECODE_FAULT
                )
            env[full] = hook_value(value)
        return env

    def base_env(self, phase: str, hooks_path: str | None = None) -> dict[str, str]:
        """The keys every hook gets (of the operation's hooks path unless another is given)."""
        env = {
            "PATH": constants.HOOKS_PATH,
            "GANETI_HOOKS_VERSION": str(constants.HOOKS_VERSION),
            "GANETI_OP_CODE": self.opcode,
            "GANETI_DATA_DIR": self.data_dir or "",
            "GANETI_HOOKS_PHASE": phase,
            "GANETI_HOOKS_PATH": hooks_path or self.hooks_path or "",
        }
        if self.htype is not None:
            env["GANETI_OBJECT_TYPE"] = self.htype
        if self.cluster_name is not None:
            env["GANETI_CLUSTER"] = self.cluster_name
        if self.master_name is not None:
            env["GANETI_MASTER"] = self.master_name
        return env

    def build_env(self, phase: str) -> dict[str, str]:
        """Full environment for ``phase`` (post = pre keys + GANETI_POST_ keys)."""
        env = dict(self.pre_env)
        if phase == constants.HOOKS_PHASE_POST:
            env.update(self._lu_env(phase))
        env.update(self.base_env(phase))
        return env

    # ---------------------------------------------------------- phases
    def run_phase(self, phase: str, node_names: list[str] | None = None) -> HookResults:
        """Run ``phase`` on its nodes and judge the results (see module docstring)."""
        if self.hooks_path is None:
            return {}
        if node_names is None:
            if phase == constants.HOOKS_PHASE_PRE:
                node_names = self.pre_nodes
            else:
                node_names = self.post_nodes
                if self.prepare_post_nodes_fn is not None:
                    node_names = self.prepare_post_nodes_fn(node_names)
        node_names = list(dict.fromkeys(node_names))  # unique, order kept
        if not node_names:
            return {}
        env = self.build_env(phase)
        results = self.hooks_execution_fn(node_names, phase, env)
        if phase == constants.HOOKS_PHASE_PRE:
            failures = self.pre_failures(results)
            if failures:
                ran = [name for name, res in results.items() if not res.offline]
                raise HooksAbort(failures, ran)
        else:
            self.report_post(results)
        return results

    def run_config_update(self) -> HookResults:
        """Run the config-update scripts on the master (see module docstring)."""
        if self.master_name is None:
            return {}
        phase = constants.HOOKS_PHASE_POST
        env = dict(self.pre_env)
        env.update(self.base_env(phase, hooks_path=constants.HOOKS_NAME_CFGUPDATE))
        results = self.hooks_execution_fn([self.master_name], phase, env)
        self.report_post(results)
        return results

    @staticmethod
    def pre_failures(results: HookResults) -> list[tuple[str, str, str]]:
        """(node, script, output) for every failed script or unreachable online node."""
        failures: list[tuple[str, str, str]] = []
        for node, res in sorted(results.items()):
            if res.offline:
                continue
            if res.fail_msg is not None:
                failures.append((node, "", f"Communication failure: {res.fail_msg}"))
                continue
            for script in res.payload or []:
                if script.status == constants.HKR_FAIL:
                    failures.append((node, script.script, script.output.strip()))
        return failures

    def report_post(self, results: HookResults) -> None:
        """Warn about every failed post script or unreachable online node."""
        for node, res in sorted(results.items()):
            if res.offline:
                continue
            if res.fail_msg is not None:
                self.log_fn(f"Communication failure to node {node}: {res.fail_msg}")
                continue
            for script in res.payload or []:
                if script.status == constants.HKR_FAIL:
                    output = script.output.strip() or "(no output)"
                    self.log_fn(f"On {node} script {script.script} failed, output: {output}")
