"""One random generator per source of randomness (DESIGN principle 4).

A run draws its coin flips, sketches, data order, gradient noise and estimator coins from separate
``torch.Generator`` streams, each seeded from ``(seed, source)``. Changing how one source is used
(say, switching the estimator from GD to SGD) therefore leaves every other source's draws unchanged,
which is what makes identities such as "Bernoulli-LoRA with p = 1 is RAC-LoRA (left)" testable
trajectory by trajectory.
"""

from __future__ import annotations

import hashlib

import torch

from ._validation import check_int

__all__ = ["SOURCES", "Streams"]

#: The named sources of randomness. Later patterns add their own (``walk``, ``clock``, ...).
SOURCES = ("coin", "sketch", "data", "noise", "estimator", "init", "compression")


def _stream_seed(seed: int, source: str) -> int:
    digest = hashlib.sha256(f"lorakit:{seed}:{source}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)


class Streams:
    """Lazily created, independently seeded generators, one per source name.

    >>> s = Streams(0)
    >>> a = torch.rand(2, generator=s["coin"])
    >>> b = torch.rand(2, generator=Streams(0)["coin"])
    >>> bool((a == b).all())
    True
    """

    def __init__(self, seed: int, device: torch.device | str = "cpu"):
        self.seed = check_int("seed", seed, low=0)
        # Generators live on the CPU: draws are then identical on every device (the drawn
        # tensors are moved), which keeps CPU and CUDA runs bit-for-bit comparable in their choices.
        self.device = torch.device(device)
        self._gens: dict[str, torch.Generator] = {}

    def __getitem__(self, source: str) -> torch.Generator:
        gen = self._gens.get(source)
        if gen is None:
            gen = torch.Generator(device="cpu").manual_seed(_stream_seed(self.seed, source))
            self._gens[source] = gen
        return gen

    def uniform(self, source: str) -> float:
        """One U[0, 1) draw from ``source``."""
        return float(torch.rand((), generator=self[source], dtype=torch.float64))
