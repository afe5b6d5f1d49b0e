"""LUClusterRenewCrypto: the cluster CA and the TLS certificates it gives the nodes.

Ganeti's ``gnt-cluster renew-crypto`` for ganeti_lv's credentials: every
node has a server and a client certificate of the cluster CA (for its
libvirtd and for the connections it opens to its peers), the master a client
certificate (``<data dir>/pki/libvirt``). ``new_cluster_certificate`` makes
a new CA first; otherwise the CA there is issues new certificates. Each
node gets its files over SSH and its libvirtd reloads them without a
restart, so guests are not touched. ``LUNodeAdd`` uses ``distribute`` for
the node it adds.

A node that cannot take its files does not stop the others: every node
that can, and the master, move on together (a half-renewed cluster would
have nodes that trust different CAs), and the job then fails naming the
nodes left, to be renewed once they are back, as offline ones are. A new
CA is kept (and the master's certificate renewed) only once a node took
it: when none could, nothing changed.
"""

from __future__ import annotations

from collections.abc import Callable

from ganeti_lv import pki
from ganeti_lv.cmdlib.base import NoHooksLU, register_lu
from ganeti_lv.cmdlib.common import expand_node
from ganeti_lv.errors import ECODE_INVAL, OpExecError, OpPrereqError
from ganeti_lv.hypervisor.base import NodeOps
from ganeti_lv.node.transport import node_call
from ganeti_lv.objects import Node
from ganeti_lv.opcodes import OpClusterRenewCrypto

FeedbackFn = Callable[[str], None]


def distribute(
    rpc: NodeOps,
    authority: pki.Authority,
    cluster_name: str,
    node: Node,
    feedback_fn: FeedbackFn,
) -> None:
    """Issue ``node`` its certificates and install them there (OpExecError on failure)."""
    creds = pki.issue_node_credentials(
        authority, cluster_name, node.name, [node.address, node.migration_address]
    )
    reloaded = node_call(rpc.install_tls_credentials, node, creds).Raise(
        f"Cannot install the TLS certificates on node {node.name}"
    )
    if reloaded:
        feedback_fn(f"* node {node.name}: new certificates installed, libvirtd uses them")
    else:
        feedback_fn(
            f"* node {node.name}: new certificates installed; its libvirtd serves no TLS"
            " now and uses them when it next starts"
        )


@register_lu(OpClusterRenewCrypto)
class LUClusterRenewCrypto(NoHooksLU):
    """Renew the cluster CA and/or the node and master certificates."""

    REQ_BGL = True  # exclusive: no migration opens connections meanwhile

    def CheckArguments(self) -> None:
        """Something to renew."""
        if not (self.op.new_cluster_certificate or self.op.new_node_certificates):
            raise OpPrereqError(
                "Nothing to renew: give new_cluster_certificate or new_node_certificates",
                ECODE_INVAL,
            )
        if self.op.new_cluster_certificate and self.op.node_names:
            raise OpPrereqError(
                "A new cluster certificate goes to every node (the others would trust"
                " the old CA only): do not name nodes",
                ECODE_INVAL,
            )

    def ExpandNames(self) -> None:
        """The exclusive BGL is enough; the nodes are named as given."""
        self.needed_locks = {}
        self.op.node_names = [expand_node(self.cfg, n) for n in self.op.node_names]

    def CheckPrereq(self) -> None:
        """The nodes to give certificates; a CA to sign them unless a new one comes."""
        data = self.cfg.snapshot()
        self.cluster_name = data.cluster.name
        names = self.op.node_names or sorted(data.nodes)
        self.nodes = [data.nodes[n] for n in names]
        self.authority = None
        if not self.op.new_cluster_certificate:
            self.authority = pki.load_ca(self.ctx.data_dir)

    def Exec(self, feedback_fn: FeedbackFn) -> None:
        """New CA (if asked), then each online node, then the master's client certificate."""
        data_dir = self.ctx.data_dir
        authority = self.authority
        if authority is None:
            feedback_fn("* creating a new cluster certificate authority")
            authority = pki.new_authority(self.cluster_name)
        left = []
        took = 0
        for node in self.nodes:
            if node.offline:
                feedback_fn(
                    f" - WARNING: node {node.name} is offline: give it new certificates"
                    " once it is back (renew-crypto --new-node-certificates)"
                )
                continue
            try:
                distribute(self.rpc, authority, self.cluster_name, node, feedback_fn)
            except OpExecError as err:
                feedback_fn(f" - WARNING: {err}")
                left.append(node.name)
            else:
                took += 1
        if self.authority is None:
            if left and not took:
                raise OpExecError(
                    f"No node took the new cluster certificate ({', '.join(left)} failed, see"
                    " the warnings); the cluster keeps its CA and certificates"
                )
            pki.save_cluster_ca(data_dir, authority)
        pki.write_master_client(data_dir, authority, self.cluster_name)
        feedback_fn("* the master's client certificate renewed")
        if left:
            raise OpExecError(
                f"Node(s) {', '.join(left)} kept their old certificates (see the warnings);"
                " every other node and the master use the new ones. Once they are"
                " reachable: gnt-lv cluster renew-crypto --new-node-certificates"
            )
