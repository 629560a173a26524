"""Client data partitions, re-exported from their home :mod:`lorakit.problems.partition` (the
problems split their data with them); this path stays for the notebooks."""

from ..problems.partition import (
    DIRICHLET_DRAWS,
    SCHEMES,
    check_partition,
    label_histogram,
    partition,
)

__all__ = ["DIRICHLET_DRAWS", "SCHEMES", "check_partition", "label_histogram", "partition"]
