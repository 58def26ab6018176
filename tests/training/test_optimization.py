import math

import pytest

from loopformer.training.optimization import warmup_cosine


def test_warmup_then_cosine_to_min_ratio():
    assert warmup_cosine(0, 10, 110, 0.1) == 0.0
    assert warmup_cosine(5, 10, 110, 0.1) == pytest.approx(0.5)
    assert warmup_cosine(10, 10, 110, 0.1) == pytest.approx(1.0)
    assert warmup_cosine(60, 10, 110, 0.1) == pytest.approx(0.1 + 0.9 * 0.5)
    assert warmup_cosine(110, 10, 110, 0.1) == pytest.approx(0.1)
    assert warmup_cosine(500, 10, 110, 0.1) == pytest.approx(0.1)


def test_constant_after_warmup_when_total_is_unknown_or_ratio_is_one():
    assert warmup_cosine(50, 10, math.inf, 0.1) == 1.0
    assert warmup_cosine(50, 10, 100, 1.0) == pytest.approx(1.0)
