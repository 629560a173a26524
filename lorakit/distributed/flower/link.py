"""The server's line to its SuperNodes: which node holds which client, and one exchange per round.

lorakit's clients are the M parts of the problem's data (:class:`~.spec.RunSpec` ``clients``); a
SuperNode holds the clients l with l mod P = its ``partition-id`` (P = ``num-partitions``, the
node config every simulated SuperNode has and a real one gets with ``--node-config
"partition-id=0 num-partitions=2"``). :func:`node_map` asks every node for its partition (a
``query`` message) and waits, up to the timeout, until all P partitions have answered. A round is
one :meth:`Link.exchange`: one ``train`` message per cohort client, pushed together (the nodes
work in parallel), replies put back in cohort order (the server aggregates in that order, as the
in-process round does), the payload bytes of both directions recorded. :class:`OnNodes` is what a
seed run whose clients are on the nodes adds to the engine's run.
"""

from __future__ import annotations

import time
from logging import INFO

from flwr.app import ArrayRecord, ConfigRecord, Message, RecordDict
from flwr.common.logger import log

from .wire import payload_bytes

__all__ = ["Link", "OnNodes", "node_map"]

PARTITION_ID, NUM_PARTITIONS = "partition-id", "num-partitions"


def _replies(grid, messages: list, timeout: float) -> list:
    """The replies to ``messages`` in their order; an error reply or a missing one raises."""
    if not messages:
        return []
    replies = list(grid.send_and_receive(messages, timeout=timeout))
    sent = [m.metadata.message_id for m in messages]
    by_id = {r.metadata.reply_to_message_id: r for r in replies}
    missing = [i for i, mid in enumerate(sent) if mid not in by_id]
    if missing:
        nodes = sorted({messages[i].metadata.dst_node_id for i in missing})
        raise TimeoutError(
            f"{len(missing)} of {len(messages)} messages got no reply within timeout = "
            f"{timeout:g} s (nodes {nodes}); raise the run config's timeout or check the nodes"
        )
    out = [by_id[mid] for mid in sent]
    for message, reply in zip(messages, out, strict=True):
        if reply.has_error():
            raise RuntimeError(
                f"node {message.metadata.dst_node_id} failed: {reply.error.reason} "
                f"(code {reply.error.code})"
            )
    return out


def node_map(grid, timeout: float, poll: float = 0.2) -> dict[int, int]:
    """partition-id → node id of every connected SuperNode, once all P partitions answered."""
    known: dict[int, int] = {}  # node id → partition id
    parts = None
    deadline = time.monotonic() + timeout
    while True:
        new = [n for n in grid.get_node_ids() if n not in known]
        queries = [Message(RecordDict(), dst_node_id=n, message_type="query") for n in sorted(new)]
        for message, reply in zip(queries, _replies(grid, queries, timeout), strict=True):
            node = reply.content["node"]
            if PARTITION_ID not in node or NUM_PARTITIONS not in node:
                raise ValueError(
                    f"SuperNode {message.metadata.dst_node_id} has no partition: start it with "
                    '--node-config "partition-id=<p> num-partitions=<P>"'
                )
            pid, count = int(node[PARTITION_ID]), int(node[NUM_PARTITIONS])
            if parts is not None and count != parts:
                raise ValueError(f"SuperNodes disagree on num-partitions: {parts} and {count}")
            parts = count
            if pid in known.values() or not 0 <= pid < count:
                raise ValueError(f"partition-id {pid} is taken twice or outside [0, {count})")
            known[message.metadata.dst_node_id] = pid
        if parts is not None and len(known) == parts:
            return {pid: node for node, pid in known.items()}
        if time.monotonic() > deadline:
            have = sorted(known.values())
            raise TimeoutError(
                f"waited {timeout:g} s for the SuperNodes: partitions {have} of "
                f"{parts if parts is not None else '?'} connected"
            )
        time.sleep(poll)


class Link:
    """The server's exchanges with the nodes for one run (module docstring).

    ``spec`` is the flat table sent with every message (:meth:`~.spec.RunSpec.record`), so a node
    builds the run's problem and configuration from it; ``nodes`` is :func:`node_map`'s result.
    After each :meth:`exchange`, ``last_down``/``last_up`` hold each message's payload bytes.
    """

    def __init__(self, grid, spec: dict, nodes: dict[int, int], timeout: float):
        self.grid, self.spec, self.nodes, self.timeout = grid, dict(spec), dict(nodes), timeout
        self.last_down: list[int] = []
        self.last_up: list[int] = []

    def node_of(self, client: int) -> int:
        """The node holding lorakit client ``client`` (client mod P = its partition-id)."""
        return self.nodes[client % len(self.nodes)]

    def exchange(self, work: list[tuple[int, dict, ArrayRecord]]) -> list[RecordDict]:
        """Send each (client, work table, download) and return the replies' contents in order."""
        messages = [
            Message(
                RecordDict(
                    {"spec": ConfigRecord(self.spec), "work": ConfigRecord(w), "down": down}
                ),
                dst_node_id=self.node_of(client),
                message_type="train",
            )
            for client, w, down in work
        ]
        replies = _replies(self.grid, messages, self.timeout)
        self.last_down = [payload_bytes(down) for _, _, down in work]
        contents = [r.content for r in replies]
        self.last_up = [
            payload_bytes(c.array_records["up"]) if "up" in c.array_records else 0 for c in contents
        ]
        return contents

    def log_round(self, method: str, t: int, up: float, down: float, total: float) -> None:
        """FlowerTune's per-round communication line: this round's table bytes, the payload
        that crossed the wire, and the running total."""
        mb = 2.0**20
        log(
            INFO,
            "lorakit %s round %d: communication %.4f MB up + %.4f MB down (message table), "
            "%.4f MB up + %.4f MB down on the wire; used %.4f MB in all",
            method, t, up / mb, down / mb, sum(self.last_up) / mb, sum(self.last_down) / mb,
            total,
        )  # fmt: skip


class OnNodes:
    """Mixed in before an engine's seed run (:class:`~.fslora.FlowerRun`,
    :class:`~.fed_rac.FlowerFedRACRun`) whose clients train on SuperNodes through ``link``: each
    round adds ``wire_up``/``wire_down`` (the payload bytes that crossed) to its message rows and
    logs the communication (:meth:`Link.log_round`); with ``keep_rounds`` the global state after
    every round (the run's ``kept()``) is kept in ``rounds``."""

    def __init__(self, *args, link: Link, keep_rounds: bool = False, **kwargs):
        super().__init__(*args, **kwargs)
        self.link, self.keep_rounds, self.t, self.rounds = link, keep_rounds, 0, []
        self.sent: dict[int, int] = {}  # node → the last round whose broadcast it got

    def round(self, t: int, rows=()):
        self.t = t  # the round the engine's hooks (local training, uploads) are in
        first = len(self.messages)
        out = super().round(t, rows)
        wire = zip(self.messages[first:], self.link.last_up, self.link.last_down, strict=True)
        for row, up, down in wire:
            row.update(wire_up=up, wire_down=down)
        self.link.log_round(self.cfg.method, t, out[2], out[3], self.mb_up + self.mb_down)
        if self.keep_rounds:
            self.rounds.append({"round": t, **self.kept()})
        return out
