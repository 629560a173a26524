"""The FSLoRA family on Flower: the in-process round with its clients on SuperNodes.

The methods (spec ``fslora.md`` §3): FSLoRA (Algorithm 1: random k_i-subsets, eq. (5)'s average),
FedIT (Zhang et al. 2024; k_i = r), HeteroLoRA (Cho et al. 2024; leading k_i, zero-padded
average), FSLoRA with top-k uploads (App. C.2), FlexLoRA (Bai et al. 2024, arXiv 2402.11505; the
mean product B_iA_i re-factored by truncated SVD) and FedStackLoRA (FLoRA, Wang et al. 2024,
arXiv 2409.05976; stacked factors merged into the base).

Server: :class:`FlowerRun` is :class:`lorakit.federated.lora.FederatedRun` (the same cohort, index
sets, dropout draws, aggregation, server step, divergence checks, history and message table), with
its clients' local training (:meth:`~FlowerRun.trained`) sent to the nodes. Client:
:func:`client_round` is what a node computes for one cohort client, lorakit's own
:func:`lorakit.federated.lora.client_update` (FSLoRA Algorithm 1 lines 4–6) followed by the
upload compressor.

On the wire, per client and round, exactly what :meth:`FederatedRun.upload_bytes` and
:meth:`FederatedRun.download_bytes` count (:mod:`.wire`): down, the whole adapter B, A
(``download="full"``, Algorithm 1 line 3) or the client's slices B[:, I], A[I, :]
(``"slice"``), plus the k_i indices of each site's I where FSLoRA draws them (``I.0``, …; one set
with ``shared_index``); up, the compressed ΔB[:, I], ΔA[I, :] of each site (dense, or the
(value, position) pairs of a sparse compressor), nothing from a client that drops out. The
``work`` table beside them (round, client, k_i, the sketch's scale c_i, the dropout flag) is the
protocol's framing, as Flower's round number is.

FedStackLoRA's clients download the stacked factors of the previous round's reports
(Σ_j k_j(m + n) floats per site, ``SB.u.j.l``/``SA.u.j.l``; nothing in round 1) and merge them
into the base they keep (the node's ``Context.state``; a node holding two cohort clients merges
once), with the server's own product s·mean_j B_j A_j; the fresh adapter of a round is peft's
init from the run's ``init`` stream, which a node replays rather than receives (the table counts
no floats for it). A node that missed rounds also gets every stack it missed (more than the table
counts: lorakit's accounting assumes every client applies every broadcast).
"""

from __future__ import annotations

import numpy as np
import torch
from flwr.app import ArrayRecord

from ...federated.lora import FederatedRun, Upload, client_update
from ...local import init_adapter
from ...problems.protocol import site_scalings
from ...rng import Streams
from ...tree import leaves, tree_like, tree_map
from .link import OnNodes
from .wire import decode_message, encode_message, has, index_dtype, pack_into, put, unpack

__all__ = ["FlowerRun", "client_round"]


def _named(cfg, k: int) -> bool:
    """True when the server names I_i on the wire: FSLoRA draws it and it is not everything."""
    return cfg.selection == "random" and k < cfg.rank


class FlowerRun(OnNodes, FederatedRun):
    """One seed of a :class:`~lorakit.federated.lora.FederatedLoRA` whose clients train on
    Flower SuperNodes through ``link`` (a :class:`~.link.Link`; :class:`~.link.OnNodes`);
    everything else is the in-process run's."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.stacks: dict[int, list] = {}  # FedStackLoRA: round → [(k_j, B'_j, A'_j)]

    def kept(self) -> dict:
        W0, B, A = self.state()
        return {"W0": leaves(W0), "B": leaves(B), "A": leaves(A)}

    def upload(self, dB, dA, svec):
        pass  # the clients compressed their uploads themselves

    # -- the clients, on the nodes ---------------------------------------------------------------
    def trained(self, clients, svec, dropped=None):
        cfg, t, r = self.cfg, self.t, self.cfg.rank
        dropped = torch.zeros(clients.numel(), dtype=torch.bool) if dropped is None else dropped
        k = self.k[clients]
        scale = leaves(svec)[0].amax(dim=1).tolist()  # c_i: r/k_i (FSLoRA) or 1
        B, A = tree_map(lambda x: x.detach(), self.B), tree_map(lambda x: x.detach(), self.A)
        index = [tree_map(lambda v: v[c].nonzero().flatten(), svec) for c in range(k.numel())]  # noqa: B023
        stacks = self.stack_downloads(clients) if cfg.aggregation == "stack" else None
        work = []
        for c, l in enumerate(clients.tolist()):
            down = ArrayRecord()
            if stacks is not None:
                for u, part in stacks[c]:
                    for j, (_, Bj, Aj) in enumerate(part):
                        pack_into(down, f"SB.{u}.{j}", Bj)
                        pack_into(down, f"SA.{u}.{j}", Aj)
            elif cfg.download == "full":
                pack_into(pack_into(down, "B", B), "A", A)
            else:
                pack_into(down, "B", tree_map(lambda b, i: b[:, i], B, index[c]))
                pack_into(down, "A", tree_map(lambda a, i: a[i, :], A, index[c]))
            if _named(cfg, int(k[c])):  # I_i of each site (one set for all with shared_index)
                dtype = index_dtype(cfg.bytes_per_index, r - 1)
                sets = leaves(index[c])[:1] if self.shared_index else leaves(index[c])
                pack_into(down, "I", [i.cpu().numpy().astype(dtype) for i in sets])
            rounds = ",".join(str(u) for u, _ in stacks[c]) if stacks is not None else ""
            work.append((l, {
                "seed": self.seed, "round": t, "client": l, "k": int(k[c]),
                "scale": float(scale[c]), "drop": bool(dropped[c]), "stacks": rounds,
            }, down))  # fmt: skip
        replies = self.link.exchange(work)
        reports = []
        for c, (l, reply) in enumerate(zip(clients.tolist(), replies, strict=True)):
            if dropped[c]:
                dB = tree_map(lambda b: torch.zeros_like(b), B)
                dA = tree_map(lambda a: torch.zeros_like(a), A)
            else:
                dB_I, dA_I = self.decode(reply["up"], int(k[c]))
                dB, dA = Upload(t, l, int(k[c]), index[c], dB_I, dA_I).padded(r)
                if stacks is not None:  # B'_j = B_I + ΔB_I and A'_j = A_I + ΔA_I (B = 0 here)
                    A_I = tree_map(lambda a, i: a[i, :], A, index[c])
                    reports.append((int(k[c]), dB_I, A_I + dA_I))
            yield slice(c, c + 1), tree_map(lambda x: x[None], dB), tree_map(lambda x: x[None], dA)
        if stacks is not None:
            self.stacks[t] = reports

    def stack_downloads(self, clients) -> list[list]:
        """FedStackLoRA: per cohort client, the (round, stacked factors) of round t − 1 (what the
        table counts) and of any earlier round its node has not had (partial participation)."""
        out, t = [], self.t
        for l in clients.tolist():
            node = self.link.node_of(l)
            rounds = sorted(set(range(self.sent.get(node, 0) + 1, t)) | {t - 1})
            out.append([(u, self.stacks[u]) for u in rounds if u in self.stacks])
            self.sent[node] = t - 1
        return out

    def decode(self, up: ArrayRecord, k: int):
        """A client's (ΔB[:, I], ΔA[I, :]) per site from its upload (:func:`client_round`)."""
        dev, dtype = self.problem.device, self.problem.dtype
        shapes = self.problem.shapes
        if has(up, "dB"):
            like_B = tree_like(self.W0, [torch.empty(m, k) for m, _ in shapes])
            like_A = tree_like(self.W0, [torch.empty(k, n) for _, n in shapes])
            return unpack(up, "dB", like_B, dev), unpack(up, "dA", like_A, dev)
        dBs, dAs = [], []
        for j, (m, n) in enumerate(shapes):
            values = torch.from_numpy(up[f"v.{j}"].numpy()).to(dev, dtype)
            positions = up[f"i.{j}"].numpy() if f"i.{j}" in up else None
            message = decode_message(values, positions, k * (m + n))
            dBs.append(message[: m * k].view(m, k))
            dAs.append(message[m * k :].view(k, n))
        return tree_like(self.W0, dBs), tree_like(self.W0, dAs)


# -- the client side ------------------------------------------------------------------------------
def client_round(problem, cfg, work: dict, down: ArrayRecord, streams, state):
    """What a node computes for cohort client ``work["client"]`` in round ``work["round"]``:
    FSLoRA Algorithm 1 lines 4–7 with lorakit's :func:`~lorakit.federated.lora.client_update`
    on the downloaded factors, then the upload compressor (``streams["compression"]``). Returns
    (the upload, or None for a client that drops out after its local steps; a table for the
    reply). ``state`` keeps FedStackLoRA's base between rounds (:class:`~.client.NodeState`)."""
    r, k, l, t = cfg.rank, int(work["k"]), int(work["client"]), int(work["round"])
    like = problem.start()
    if _named(cfg, k):
        sets = [
            torch.from_numpy(down[f"I.{j}"].numpy().astype(np.int64)).to(problem.device)
            for j in range(len(leaves(like)))
            if f"I.{j}" in down
        ]
        index = tree_like(like, sets * len(leaves(like)) if len(sets) == 1 else sets)
    else:  # every component (k = r) or the leading k_i (HeteroLoRA, FlexLoRA, FedStackLoRA)
        index = tree_like(like, [torch.arange(k, device=problem.device)] * len(leaves(like)))
    if cfg.aggregation == "stack":
        rounds = [int(u) for u in str(work["stacks"]).split(",") if u]
        W0, A = stacked_base(problem, cfg, int(work["seed"]), t, rounds, down, state)
        B_I = tree_map(lambda w, i: w.new_zeros(w.shape[0], i.numel()), like, index)
        A_I = tree_map(lambda a, i: a[i, :], A, index)
    else:
        W0 = like
        if cfg.download == "full" or not has(down, "B"):
            full_B = tree_like(like, [torch.empty(m, r) for m, _ in problem.shapes])
            full_A = tree_like(like, [torch.empty(r, n) for _, n in problem.shapes])
            B = unpack(down, "B", full_B, problem.device)
            A = unpack(down, "A", full_A, problem.device)
            B_I = tree_map(lambda b, i: b[:, i], B, index)
            A_I = tree_map(lambda a, i: a[i, :], A, index)
        else:
            B_I = unpack(down, "B", like, problem.device)
            A_I = unpack(down, "A", like, problem.device)
    scalings = tuple(s * float(work["scale"]) for s in site_scalings(problem, r, cfg.alpha))
    with problem.seeded(streams):
        dB, dA = client_update(problem, W0, B_I, A_I, scalings, l, cfg.local(), streams)
    info = {"steps": cfg.local_steps}
    if work["drop"]:
        return None, info  # dropped out after the local steps: nothing is sent
    up = ArrayRecord()
    if not cfg.compresses:
        return pack_into(pack_into(up, "dB", dB), "dA", dA), info
    gen = streams["compression"]
    for j, (db, da) in enumerate(zip(leaves(dB), leaves(dA), strict=True)):
        message = torch.cat([db.flatten(), da.flatten()])
        compressor = cfg.upload_compressor(message.numel())
        encoded = encode_message(
            compressor(message, gen), compressor.payload(message.numel()), cfg.bytes_per_index
        )
        for name, x in encoded.items():
            put(up, f"{name}.{j}", x)
    return up, info


def stacked_base(problem, cfg, seed: int, t: int, rounds, down: ArrayRecord, state):
    """FedStackLoRA on a node: the base W0 of round t (the kept base with the downloaded stacks
    of ``rounds`` merged in) and the round's fresh A (the ``init`` stream's t-th draw, as the
    server's :meth:`~lorakit.federated.lora.FederatedRun.server_step` drew it)."""
    r = cfg.rank
    inits, gen = [], Streams(seed)["init"]
    for _ in range(t):
        inits.append(init_adapter(problem, r, gen)[1])
    key = f"stack.{seed}"
    done, W0 = state.get(key, problem.start())
    s = tree_like(W0, site_scalings(problem, r, cfg.alpha))
    for u in rounds:
        if u <= done:
            continue  # this node merged it already (it holds another client of the round)
        P = None
        j = 0
        A_u = inits[u - 1]
        while f"SB.{u}.{j}.0" in down:
            Bj = unpack(down, f"SB.{u}.{j}", W0, problem.device)
            Aj = unpack(down, f"SA.{u}.{j}", W0, problem.device)
            part = tree_map(_stack_product, Bj, Aj, A_u)
            P = part if P is None else tree_map(lambda a, b: a + b, P, part)
            j += 1
        if P is not None:  # the server's aggregate and FedStackLoRA's merge, site by site
            n = j
            W0 = tree_map(lambda w, p, s: w + s * (p / n), W0, P, s)  # noqa: B023
        done = u
    state.put(key, W0, done)
    return W0, inits[t - 1]


def _stack_product(Bj, Aj, A):
    """One report's product as the server's ``accumulate`` forms it: the report's k_j leading
    columns padded to r, the round's A with its k_j leading rows replaced, (1, m, r) @ (1, r, n)."""
    m, k = Bj.shape
    r = A.shape[0]
    B = Bj.new_zeros(1, m, r)
    B[0, :, :k] = Bj
    A_full = A.clone()[None]
    A_full[0, :k, :] = Aj
    mask = (torch.arange(r, device=B.device) < k).to(B.dtype)
    w = torch.ones(1, dtype=B.dtype, device=B.device)
    return (((B * mask[None, None, :]) @ A_full) * w[:, None, None]).sum(0)
