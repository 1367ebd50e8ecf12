"""probflux._random: seeded blocks are reproducible and leave the caller's random state as it was."""
from __future__ import annotations

import torch

from probflux._random import draw_seed, seeded


def test_seeded_block_is_reproducible_and_restores_the_global_state():
    torch.manual_seed(123)
    expected_next = torch.rand(3)
    torch.manual_seed(123)
    with seeded(7):
        a = torch.rand(4)
    with seeded(7):
        b = torch.rand(4)
    assert torch.equal(a, b)
    assert torch.equal(torch.rand(3), expected_next)  # the caller's stream went on as if nothing was drawn
    torch.manual_seed(5)
    with seeded(None):  # unseeded: draws the caller's next numbers, then rewinds them
        c = torch.rand(2)
    assert torch.equal(torch.rand(2), c)


def test_draw_seed_is_a_function_of_the_generator():
    s1 = draw_seed(torch.Generator().manual_seed(0))
    g = torch.Generator().manual_seed(0)
    assert draw_seed(g) == s1 and draw_seed(g) != s1 and 0 <= s1 < 2**62
