"""Fed-RAC-LoRA (RAC-LoRA Algorithm 2) on Flower: the in-process round with its clients on nodes.

Server: :class:`FlowerFedRACRun` is :class:`lorakit.federated.fed_rac.FedRACRun` (cohort, the
round's shared sketch, the merge W ← W + β·s·B_S·mean Â, divergence checks, history, message
table) with the cohort's reshuffled epochs (:meth:`~FlowerFedRACRun.local_train`) on the nodes.
Client: :func:`client_round` runs lorakit's own ``FedRACRun.local_train`` for its one client,
then the compressor.

On the wire, per client and round, what ``FedRACRun``'s sizes count: up, the compressed trained
factor of each site (Â, r×n, for ``side="left"``; B̂, m×r, right); down, the round's sketch (the
frozen factor as floats, ``X.l``, or with ``sketch_as_seed`` its link index as one 8-byte integer
``Xseed``, which the node turns into the sketch with ``draw_sketches``) and the model:
``download="full"`` sends W^t (``W.l``); ``"adapter"`` sends the previous round's merged update
as its two factors (the previous sketch and the mean trained factor, ``Xprev.u.l``/``mean.u.l``),
which the node adds to the W it keeps (its ``Context.state``) with the server's own
``merged_update``. A node that missed rounds gets every update it missed (beyond the table's
count, whose note says it assumes every client applies every broadcast).
"""

from __future__ import annotations

import numpy as np
import torch
from flwr.app import Array, ArrayRecord

from ...federated.fed_rac import FedRACRun
from ...tree import leaves, tree_like
from .link import OnNodes
from .wire import decode_message, encode_message, has, pack_into, put, unpack

__all__ = ["FlowerFedRACRun", "client_round"]


def _factor_shape(cfg, m: int, n: int) -> tuple[int, int]:
    return (cfg.rank, n) if cfg.side == "left" else (m, cfg.rank)


def _sketch_shape(cfg, m: int, n: int) -> tuple[int, int]:
    return (m, cfg.rank) if cfg.side == "left" else (cfg.rank, n)


class FlowerFedRACRun(OnNodes, FedRACRun):
    """One seed of a :class:`~lorakit.federated.fed_rac.FedRACLoRA` whose clients train on
    Flower SuperNodes through ``link`` (:class:`~.link.OnNodes`)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.updates: dict[int, tuple] = {}  # round → (X, mean): the merged update's factors

    def kept(self) -> dict:
        return {"W": [w.clone() for w in leaves(self.W)]}

    def compress(self, hats):
        return hats  # the clients compressed their uploads themselves

    def merged_update(self, X, mean):
        self.updates[self.t] = (X, mean)  # what an "adapter" download sends next round
        return super().merged_update(X, mean)

    def local_train(self, W, clients, X, P):
        cfg, t = self.cfg, self.t
        work, nodes = [], {}
        for l in clients.tolist():
            down = ArrayRecord()
            self.pack_sketch(down, "X", X, t)
            if cfg.download == "full":
                pack_into(down, "W", W)
                missed = []
            else:
                node = self.link.node_of(l)
                missed = [u for u in range(self.sent.get(node, 0) + 1, t) if u in self.updates]
                for u in missed:
                    Xu, mean = self.updates[u]
                    self.pack_sketch(down, f"Xprev.{u}", Xu, u)
                    pack_into(down, f"mean.{u}", mean)
                nodes[node] = t - 1
            updates = ",".join(map(str, missed))
            work.append((l, {"seed": self.seed, "round": t, "client": l, "updates": updates}, down))
        self.sent.update(nodes)
        replies = self.link.exchange(work)
        steps = [int(reply["info"]["steps"]) for reply in replies]
        hats = [self.decode(reply["up"]) for reply in replies]
        stacked = tree_like(W, [torch.stack(h) for h in zip(*map(leaves, hats), strict=True)])
        return torch.tensor(steps), stacked

    def pack_sketch(self, down: ArrayRecord, name: str, X, t: int) -> None:
        """The sketch of round t: its floats, or its link index t − 1 as one 8-byte integer."""
        if self.cfg.sketch_as_seed:
            down[f"{name}seed"] = Array(np.array([t - 1], dtype=np.int64))
        else:
            pack_into(down, name, X)

    def decode(self, up: ArrayRecord):
        """One client's trained factor per site (its upload, decoded)."""
        p, cfg = self.problem, self.cfg
        shapes = [_factor_shape(cfg, m, n) for m, n in p.shapes]
        like = p.tree([torch.empty(s) for s in shapes])
        if has(up, "h"):
            return unpack(up, "h", like, p.device)
        mats = []
        for j, shape in enumerate(shapes):
            values = torch.from_numpy(up[f"v.{j}"].numpy()).to(p.device, p.dtype)
            positions = up[f"i.{j}"].numpy() if f"i.{j}" in up else None
            mats.append(decode_message(values, positions, shape[0] * shape[1]).view(shape))
        return p.tree(mats)


# -- the client side ------------------------------------------------------------------------------
def client_round(problem, cfg, work: dict, down: ArrayRecord, streams, state):
    """What a node computes for cohort client ``work["client"]`` in round ``work["round"]``:
    W^t (downloaded, or the kept W plus the missed merged updates), the round's sketch and its
    preconditioner, lorakit's ``FedRACRun.local_train`` for the one client (its reshuffled epoch
    from ``streams["data"]``), then the compressor (``streams["compression"]``). Returns (the
    upload, a table for the reply: the epoch's local steps)."""
    seed, t, l = int(work["seed"]), int(work["round"]), int(work["client"])
    run = FedRACRun(cfg, problem, seed)  # its streams are the run's: the sketches are shared
    like = problem.start()
    if has(down, "W"):
        W = unpack(down, "W", like, problem.device)
    else:
        key = f"fedrac.{seed}"
        done, W = state.get(key, like)
        for u in (int(u) for u in str(work["updates"]).split(",") if u):
            if u <= done:
                continue  # merged already (this node holds another client of that round)
            Xu = _sketch(run, down, f"Xprev.{u}", u, like)
            mean = unpack(down, f"mean.{u}", _factor_like(cfg, problem), problem.device)
            with torch.no_grad():
                W = W + run.merged_update(Xu, mean)
            done = u
        state.put(key, W, done)
    X = _sketch(run, down, "X", t, like)
    P = run.preconditioners(X)
    run.streams = streams  # the epoch's order from the client's own streams
    with problem.seeded(streams):
        steps, hats = run.local_train(W, torch.tensor([l]), X, P)
    up = ArrayRecord()
    gen = streams["compression"]
    for j, h in enumerate(leaves(hats)):
        out = cfg.compressor(h[0], gen)  # one message per site (the server's batch_dims=1)
        if cfg.compressor.is_identity:
            put(up, f"h.{j}", out)
            continue
        payload = cfg.compressor.payload(out.numel())
        for name, x in encode_message(out.flatten(), payload, cfg.bytes_per_index).items():
            put(up, f"{name}.{j}", x)
    return up, {"steps": int(steps[0])}


def _factor_like(cfg, problem):
    return problem.tree([torch.empty(_factor_shape(cfg, m, n)) for m, n in problem.shapes])


def _sketch(run, down: ArrayRecord, name: str, t: int, like):
    """Round t's sketch: from its floats, or drawn again from its link index."""
    p = run.problem
    if f"{name}seed" in down:
        link = int(down[f"{name}seed"].numpy()[0])
        return run.draw_sketches(link + 1)[0]
    shapes = [_sketch_shape(run.cfg, m, n) for m, n in p.shapes]
    return unpack(down, name, p.tree([torch.empty(s) for s in shapes]), p.device)
