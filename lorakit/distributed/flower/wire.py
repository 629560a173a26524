"""What goes on the wire: lorakit trees and compressed messages as Flower ``ArrayRecord`` arrays.

A tree of per-site matrices (README "Architecture": a bare tensor for a one-site problem, a
:class:`~lorakit.tree.PerSite` tuple for a model) travels as the arrays ``name.0``, ``name.1``, …
of an :class:`~flwr.app.ArrayRecord`, in the problem's dtype, so a float64 run crosses processes
bit for bit. Index sets travel as integers of ``bytes_per_index`` bytes (uint8/int16/int32/int64),
so the payload is what lorakit's message table counts: floats × ``bytes_per_float`` plus indices
× ``bytes_per_index`` when ``bytes_per_float`` is the dtype's size (:func:`payload_bytes` measures
it; the ``.npy`` headers Flower adds are framing, like the rest of the protobuf message).

A compressed upload (:mod:`lorakit.compressors`) goes as its payload: a k-sparse one (top-k,
rand-k; payload (k, k)) as k values and k positions, the identity as the dense message. The other
compressors (``natural``, ``qsgd``) count bits a float array does not carry: they go dense, and
the per-round log shows the wire next to the table.
"""

from __future__ import annotations

import numpy as np
import torch
from flwr.app import Array, ArrayRecord

from ...tree import leaves, tree_like

__all__ = [
    "INDEX_DTYPES",
    "decode_message",
    "encode_message",
    "has",
    "index_dtype",
    "pack",
    "pack_into",
    "payload_bytes",
    "put",
    "unpack",
]

#: The integer type of an index of ``bytes_per_index`` bytes.
INDEX_DTYPES = {1: np.uint8, 2: np.int16, 4: np.int32, 8: np.int64}


def index_dtype(bytes_per_index: int, largest: int):
    """The numpy integer type of ``bytes_per_index`` bytes, refused when an index up to ``largest``
    does not fit (the message table would then count bytes no real encoding has)."""
    if bytes_per_index not in INDEX_DTYPES:
        raise ValueError(
            f"bytes_per_index must be one of {sorted(INDEX_DTYPES)} to put indices on the wire, "
            f"got {bytes_per_index}"
        )
    dtype = INDEX_DTYPES[bytes_per_index]
    if largest > np.iinfo(dtype).max:
        raise ValueError(
            f"bytes_per_index = {bytes_per_index} cannot hold the index {largest}: use "
            f"{min(b for b, d in INDEX_DTYPES.items() if np.iinfo(d).max >= largest)} or more"
        )
    return dtype


def _array(x) -> Array:
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().numpy()
    return Array(np.ascontiguousarray(x))


def put(record: ArrayRecord, key: str, x) -> ArrayRecord:
    """Store one array (a tensor or numpy array) under ``key``; returns the record."""
    record[key] = _array(x)
    return record


def pack_into(record: ArrayRecord, name: str, tree) -> ArrayRecord:
    """Add the tree's per-site matrices to ``record`` as ``name.0``, ``name.1``, …; returns it."""
    for j, x in enumerate(leaves(tree)):
        record[f"{name}.{j}"] = _array(x)
    return record


def pack(**trees) -> ArrayRecord:
    """An ArrayRecord of named trees: ``pack(B=B, A=A)`` holds ``B.0``, ``A.0``, …"""
    record = ArrayRecord()
    for name, tree in trees.items():
        pack_into(record, name, tree)
    return record


def unpack(record: ArrayRecord, name: str, like, device=None):
    """The tree ``name`` of ``record`` shaped as ``like`` (a tree with the same number of sites:
    a bare tensor or a :class:`~lorakit.tree.PerSite`), as torch tensors on ``device``."""
    n = len(leaves(like))
    missing = [f"{name}.{j}" for j in range(n) if f"{name}.{j}" not in record]
    if missing:
        raise ValueError(f"the message lacks the arrays {missing}")
    mats = [torch.from_numpy(record[f"{name}.{j}"].numpy()).to(device) for j in range(n)]
    return tree_like(like, mats)


def has(record: ArrayRecord, name: str) -> bool:
    """True when ``record`` holds the tree ``name``."""
    return f"{name}.0" in record


def payload_bytes(record: ArrayRecord) -> int:
    """The bytes of the arrays' entries (entries × item size), without Flower's framing."""
    return sum(int(np.prod(a.shape, dtype=np.int64)) * np.dtype(a.dtype).itemsize
               for a in record.values())  # fmt: skip


def encode_message(out: torch.Tensor, payload, bytes_per_index: int) -> dict:
    """One compressed message (the compressor's dense output ``out``, d entries) as the arrays of
    its ``payload`` (:class:`~lorakit.compressors.Payload`): k values and their k positions when
    the payload is (k, k) with k < d, else the d entries. Returns ``{"v": values[, "i": ...]}``."""
    d = out.numel()
    floats, indices = payload
    if floats == indices and floats < d:  # k-sparse: exactly k (value, position) pairs
        kept = out.nonzero().flatten()
        if kept.numel() < floats:  # kept entries that are exactly 0: pad with other zero positions
            zero = (out == 0).nonzero().flatten()
            spare = zero[~torch.isin(zero, kept)][: floats - kept.numel()]
            kept = torch.cat([kept, spare]).sort().values
        if kept.numel() != floats:
            raise ValueError(f"the compressed message keeps {kept.numel()} entries, not {floats}")
        dtype = index_dtype(bytes_per_index, d - 1)
        return {"v": out[kept], "i": kept.cpu().numpy().astype(dtype)}
    return {"v": out}


def decode_message(values: torch.Tensor, positions, d: int) -> torch.Tensor:
    """The dense message of d entries from :func:`encode_message`'s arrays."""
    if positions is None:
        return values.reshape(d)
    out = values.new_zeros(d)
    out[torch.as_tensor(np.asarray(positions, dtype=np.int64), device=values.device)] = values
    return out
