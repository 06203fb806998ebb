"""The exact paired sign test against values computed independently of its formula."""
from __future__ import annotations

import itertools

import pytest

from stmsearch.evaluation.stats import sign_test


def _brute_force(wins: int, losses: int) -> float:
    """Two-sided p by enumerating every win/loss sequence of the discordant images: the share
    of sequences whose imbalance is at least the observed one (each equally likely under H0)."""
    n = wins + losses
    observed = abs(wins - losses)
    extreme = sum(1 for seq in itertools.product((0, 1), repeat=n) if abs(2 * sum(seq) - n) >= observed)
    return extreme / 2 ** n


@pytest.mark.parametrize("wins, losses", [(w, l) for w in range(0, 9) for l in range(0, 9) if 0 < w + l <= 12])
def test_sign_test_matches_enumeration(wins, losses):
    assert sign_test(wins, losses) == pytest.approx(_brute_force(wins, losses), rel=1e-12)


def test_sign_test_known_values_and_symmetry():
    assert sign_test(0, 10) == pytest.approx(2 / 1024)  # all ten discordant images one way
    assert sign_test(9, 1) == pytest.approx(2 * 11 / 1024)
    assert sign_test(7, 3) == sign_test(3, 7)
    assert sign_test(0, 0) == 1.0  # no discordant image: no evidence either way
    assert sign_test(5, 5) == 1.0 and sign_test(40, 40) == 1.0


def test_sign_test_large_n_is_exact_and_monotone():
    # 1000 discordant images: far beyond float range of 2**n, still a probability
    assert 0.0 <= sign_test(400, 600) < 1e-9
    assert sign_test(480, 520) > sign_test(470, 530) > sign_test(460, 540)
    # 60 vs 40: R's binom.test(60, 100) gives p = 0.05689 (the normal approximation would say 0.0455)
    assert sign_test(60, 40) == pytest.approx(0.05688793364, rel=1e-6)


def test_sign_test_rejects_negative_counts():
    with pytest.raises(ValueError, match="sign_test"):
        sign_test(-1, 3)
