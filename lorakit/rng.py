"""One random generator per source of randomness (README "Architecture", principle 4).

A run draws its coin flips, sketches, data order, gradient noise and estimator coins from separate
``torch.Generator`` streams, each seeded from ``(seed, source)``. What this guarantees, exactly:

* **Same seed, same numbers.** Every draw of a run comes from these streams (or from generators
  seeded by them), never from torch's or numpy's global state, so the same seed and arguments
  give bit-identical results in every call and every Python process (on the same device, torch
  version and dtype).
* **Sources do not disturb each other.** A change that alters how much one source draws (SGD
  instead of GD draws from ``data``; a different estimator coin) leaves every other source's
  draws unchanged, which is what makes identities such as "Bernoulli-LoRA with p = 1 is RAC-LoRA
  (left)" testable trajectory by trajectory.
* **Chain sketches are per link.** The ``sketch`` source of a chain is not one sequential stream:
  link k draws its frozen factor(s) from :meth:`Streams.substream` ``("sketch", k)``, a generator
  seeded from ``(seed, "sketch", k)``. Link k's sketch therefore depends only on the seed, k, the
  side it trains, the sketch family and the shapes, not on what earlier links drew: two
  Bernoulli-LoRA runs with different p whose coins send link k to the same side draw the same
  sketch there (at model scale, the same sketch for every site of link k). Fed-RAC-LoRA draws
  round t's sketch from link t − 1's stream, so its full-cohort identity with the chain holds
  draw by draw.

What does *not* hold: within one sequential stream, a change that alters that source's own number
of draws shifts its later draws (a different batch size reshuffles the later minibatches; a
different cohort size C draws different FSLoRA index sets). The coin stream draws one uniform u_t
per link whatever p is (side = left iff u_t < p), so changing p changes sides, never the u_t.
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

    def substream(self, source: str, key: int) -> torch.Generator:
        """A fresh generator seeded from ``(seed, source, key)``: one event's own stream.

        Used where the size of one event's draw depends on another choice (a chain link's sketch
        shape depends on its side), so that event k's draw never shifts with earlier events.
        Each call returns a new generator in its initial state; distinct keys (and the plain
        stream of ``source``) give independent seeds.
        """
        key = check_int("key", key, low=0)
        return torch.Generator(device="cpu").manual_seed(_stream_seed(self.seed, f"{source}#{key}"))

    def uniform(self, source: str) -> float:
        """One U[0, 1) draw from ``source``."""
        return float(torch.rand((), generator=self[source], dtype=torch.float64))
