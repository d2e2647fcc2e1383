"""Defaults shared by the statistics' entry points (library, store I/O and the ``stats`` command)."""

from __future__ import annotations

DEFAULT_Q = 95.0
"""The seed's activation percentile: a neuron fires on the clips above its 95th percentile."""

DEFAULT_TOP_K = 10
"""Top activating clips kept per neuron."""

DEFAULT_MEMORY_BUDGET = 64 * 2**20
"""Working memory of one scan (chunk buffer, histograms, collected candidates), in bytes."""

CHUNK_BYTES_MAX = 16 * 2**20
"""Largest row chunk read at once: big enough to amortise a read call and a parallel launch."""

SELECTIVITY_LEVELS = (0.2, 0.3)
"""Share levels of the seed's reading ("50 neurons above 20%, few above 30%")."""
