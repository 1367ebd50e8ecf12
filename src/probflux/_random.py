"""Seeded randomness that leaves the caller's random state alone.

Samplers that draw from torch's global generator (``density.sample``, ``torch.distributions``) are made
reproducible by running them in a forked global state seeded by a number; the number is either given or
drawn from an explicit ``torch.Generator`` (:func:`draw_seed`), so a run's randomness is a function of its
generators alone.
"""
from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Optional

import torch

__all__ = ["seeded", "draw_seed"]


def draw_seed(generator: Optional[torch.Generator] = None) -> int:
    """A seed in ``[0, 2^62)`` drawn from ``generator`` (torch's global generator when None)."""
    return int(torch.randint(2**62, (1,), generator=generator))


@contextmanager
def seeded(seed: Optional[int], device: Optional[torch.device] = None) -> Iterator[None]:
    """Run the block with torch's global generator seeded by ``seed`` (left as it is when None); on exit the
    caller's state of the CPU generator, and of ``device``'s when that is a CUDA device, is restored."""
    devices = [device] if device is not None and torch.device(device).type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        if seed is not None:
            torch.manual_seed(int(seed))
        yield
