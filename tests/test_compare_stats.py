"""Seed statistics of `mssr compare` (issue 13, part 5): IQM, bootstrap intervals, probability of improvement.

Expected values are worked out by hand in the comments; the definitions are those of rliable
(Agarwal et al. 2021), stated in mssr_cli/reporting/stats.py.
"""

from __future__ import annotations

import csv

import numpy as np
import pytest
from scipy.stats import mannwhitneyu
from test_compare import quiet, steps, write_run

from mssr_cli.reporting import stats
from mssr_cli.reporting.compare import run_compare
from mssr_cli.reporting.table import CSV_COLUMNS

# ---- interquartile mean -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        ([0.2, 0.4, 0.6, 0.8], 0.5),  # 4 seeds: int(0.25 * 4) = 1 cut each end -> mean(0.4, 0.6) (= the mean here)
        ([0.0, 0.4, 0.6, 0.8], 0.5),  # the same cut; the mean would be 0.45
        ([0.8, 0.0, 0.6, 0.4], 0.5),  # order does not matter: sorted first
        ([0.0, 1.0, 2.0, 3.0, 100.0], 2.0),  # 5: 1 cut each end -> mean(1, 2, 3); the mean would be 21.2
        ([0.0, 0.1, 0.8], 0.3),  # 3: int(0.75) = 0 cut -> the mean (not the median 0.1)
        ([0.4, 0.9], 0.65),  # 2: the mean
        ([0.7], 0.7),
        ([0, 1, 2, 3, 4, 5, 6, 7], 3.5),  # 8: 2 cut each end -> mean(2, 3, 4, 5)
    ],
)
def test_iqm_by_hand(values, expected):
    assert stats.iqm(values) == pytest.approx(expected)


# ---- probability of improvement -----------------------------------------------------------------


def test_probability_of_improvement_by_hand():
    # Pairs (x, y): (0.6, 0.5) wins 1, (0.6, 0.6) ties 0.5, (0.7, 0.5) 1, (0.7, 0.6) 1 -> 3.5 / 4.
    assert stats.probability_of_improvement([0.6, 0.7], [0.5, 0.6]) == pytest.approx(0.875)
    # The other way round: 0 + 0.5 + 0 + 0 -> 0.5 / 4.
    assert stats.probability_of_improvement([0.5, 0.6], [0.6, 0.7]) == pytest.approx(0.125)
    # Unequal sizes: 1.0 against 0.0 (1), 1.0 (0.5), 2.0 (0) -> 1.5 / 3.
    assert stats.probability_of_improvement([1.0], [0.0, 1.0, 2.0]) == pytest.approx(0.5)
    # 4 seeds over 2: 0.0 and 0.4 lose both; 0.6 beats 0.5, ties 0.6; 0.8 wins both -> 3.5 / 8.
    assert stats.probability_of_improvement([0.0, 0.4, 0.6, 0.8], [0.5, 0.6]) == pytest.approx(0.4375)
    assert stats.probability_of_improvement([0.3, 0.3], [0.3, 0.3]) == pytest.approx(0.5)  # all ties
    assert stats.probability_of_improvement([0.9], [0.1]) == pytest.approx(1.0)


def test_probability_of_improvement_is_mann_whitney_u_and_complements():
    """Randomised: U of x over y / (n m), as rliable computes it; P(x over y) + P(y over x) = 1."""
    rng = np.random.default_rng(0)
    for _ in range(200):
        x = rng.integers(0, 5, size=rng.integers(1, 8)) / 4  # coarse values: many ties
        y = rng.integers(0, 5, size=rng.integers(1, 8)) / 4
        u = mannwhitneyu(x, y, alternative="greater").statistic
        assert stats.probability_of_improvement(x, y) == pytest.approx(u / (len(x) * len(y)))
        assert stats.probability_of_improvement(x, y) + stats.probability_of_improvement(y, x) == pytest.approx(1.0)


def test_probability_of_improvement_vectorised_matches_loop():
    rng = np.random.default_rng(1)
    x, y = rng.random((7, 3)), rng.random((7, 5))  # [R, n], [R, m]
    batched = stats.probability_of_improvement(x, y)  # [R]
    assert batched.shape == (7,)
    assert batched == pytest.approx([stats.probability_of_improvement(a, b) for a, b in zip(x, y)])
    # Along another axis: [n, R] and [m, R].
    assert stats.probability_of_improvement(x.T, y.T, axis=0) == pytest.approx(batched)


# ---- bootstrap intervals ------------------------------------------------------------------------


def test_mean_interval_by_hand():
    # 2 seeds: a resample is (a, a), (a, b), (b, a) or (b, b): the mean is a with probability 1/4 > 2.5%,
    # b with 1/4 -> the 2.5th and 97.5th percentiles are a and b.
    ci = stats.mean_interval([0.5, 0.7])
    assert (ci.low, ci.high) == pytest.approx((0.5, 0.7))
    # 3 seeds: all-lowest comes up with probability 1/27 = 3.7% > 2.5% -> still min-max.
    ci = stats.mean_interval([0.4, 0.5, 0.9])
    assert (ci.low, ci.high) == pytest.approx((0.4, 0.9))
    # Identical values: every resample has the same mean -> a degenerate interval, exactly the value.
    ci = stats.mean_interval([0.1, 0.1, 0.1])
    assert (ci.low, ci.high) == (0.1, 0.1)
    # One seed: no interval (it would resample to itself and claim certainty).
    assert stats.mean_interval([0.7]) is None


def test_mean_interval_contains_the_mean_and_narrows_with_seeds():
    rng = np.random.default_rng(2)
    for n in (2, 3, 5, 10):
        values = list(rng.random(n))
        ci = stats.mean_interval(values)
        assert min(values) <= ci.low <= np.mean(values) <= ci.high <= max(values)
    # 10 seeds 0..9: mean 4.5, population std 2.87 -> normal approximation 4.5 -+ 1.96 * 2.87 / sqrt(10)
    # = [2.72, 6.28]; the percentile bootstrap is close to it, and well inside the 0-9 range.
    ci = stats.mean_interval([float(v) for v in range(10)])
    assert ci.low == pytest.approx(2.72, abs=0.3) and ci.high == pytest.approx(6.28, abs=0.3)


def test_intervals_are_reproducible():
    values = [0.31, 0.52, 0.47, 0.66, 0.58]
    assert stats.mean_interval(values) == stats.mean_interval(list(values))
    assert stats.improvement_interval(values, [0.5, 0.4, 0.6]) == stats.improvement_interval(values, [0.5, 0.4, 0.6])


def test_improvement_interval_by_hand():
    # x = [0.6, 0.7] over y = [0.5, 0.6]: no x is below a y, so every resample scores 0.5 to 1.
    # Lowest, 0.5: x* = (0.6, 0.6) and y* = (0.6, 0.6), probability 1/4 * 1/4 = 6.25% > 2.5% -> low 0.5.
    # Highest, 1.0: x* has no 0.6 or y* has no 0.6, probability 1/4 + 1/4 - 1/16 = 44% -> high 1.0.
    ci = stats.improvement_interval([0.6, 0.7], [0.5, 0.6])
    assert (ci.low, ci.high) == pytest.approx((0.5, 1.0))
    assert stats.improvement_interval([0.6], [0.5, 0.6]) is None
    assert stats.improvement_interval([0.6, 0.7], [0.5]) is None


# ---- in `mssr compare` --------------------------------------------------------------------------


def build_seed_study(root):
    """Final val/accuracy per seed (each run logs 0.1 at step 0, then its final value at step 10):

    grpo (reference)  [0.5, 0.6]            2 seeds: warned
    mvsr              [0.6, 0.7]            CI [0.6, 0.7] (2 seeds); IQM 0.65; P = 0.875, CI [0.5, 1.0]; warned
    mssr              [0.0, 0.4, 0.6, 0.8]  IQM 0.5 (mean 0.45); P = 3.5 / 8 = 0.4375; not warned
    no-shaping        [0.4, 0.5, 0.9]       CI [0.4, 0.9] (3 seeds: min-max); IQM = mean = 0.6;
                                            P: 0.4 loses both, 0.5 ties 0.5, 0.9 wins both -> 2.5 / 6; not warned
    single            [0.7]                 no CI; IQM 0.7; P = 1.0 with no interval; warned
    """
    finals = {
        ("grpo", None): [0.5, 0.6],
        ("mvsr", None): [0.6, 0.7],
        ("mssr", None): [0.0, 0.4, 0.6, 0.8],
        ("mssr", "no-shaping"): [0.4, 0.5, 0.9],
        ("mvsr", "single"): [0.7],
    }
    for (algo, variant), values in finals.items():
        for seed, final in enumerate(values):
            write_run(root / f"{variant or algo}__s{seed}", algo=algo, variant=variant, seed=seed,
                      rollouts_per_step=4, val=steps(0.1, final))  # fmt: skip
    return root


@pytest.fixture(scope="module")
def seed_study(tmp_path_factory):
    return build_seed_study(tmp_path_factory.mktemp("seeds") / "study")


@pytest.fixture(scope="module")
def studied(seed_study):
    console = quiet()
    return run_compare([seed_study], console=console), console.file.getvalue()


def test_rows_carry_the_statistics(studied):
    result, _ = studied
    assert result.reference == "grpo"
    grpo, mvsr, mssr = result.row("grpo"), result.row("mvsr"), result.row("mssr")
    noshape, single = result.row("no-shaping"), result.row("single")

    assert (mvsr.final_ci95.low, mvsr.final_ci95.high) == pytest.approx((0.6, 0.7))
    assert mvsr.final_iqm == pytest.approx(0.65)
    assert mvsr.prob_improvement == pytest.approx(0.875)
    assert (mvsr.prob_improvement_ci95.low, mvsr.prob_improvement_ci95.high) == pytest.approx((0.5, 1.0))

    assert mssr.final_iqm == pytest.approx(0.5) and mssr.final.mean == pytest.approx(0.45)
    assert mssr.prob_improvement == pytest.approx(0.4375)
    assert mssr.final_ci95.low <= mssr.final.mean <= mssr.final_ci95.high

    assert (noshape.final_ci95.low, noshape.final_ci95.high) == pytest.approx((0.4, 0.9))
    assert noshape.final_iqm == pytest.approx(0.6)
    assert noshape.prob_improvement == pytest.approx(2.5 / 6)

    assert single.final_ci95 is None and single.final_iqm == pytest.approx(0.7)
    assert single.prob_improvement == pytest.approx(1.0) and single.prob_improvement_ci95 is None

    # The reference is not compared with itself.
    assert grpo.prob_improvement is None and grpo.prob_improvement_ci95 is None
    assert (grpo.final_ci95.low, grpo.final_ci95.high) == pytest.approx((0.5, 0.6))


def test_warning_below_three_seeds(studied):
    result, printed = studied
    few = [w for w in result.warnings if "fewer than 3" in w]
    warned = sorted(w.split("'")[1] for w in few)
    assert warned == ["grpo", "mvsr", "single"]  # 2, 2 and 1 seeds; mssr (4) and no-shaping (3) are not
    assert any("'single' has only 1 seed " in w and "no 95% CI" in w for w in few)
    assert any("'mvsr' has only 2 seeds " in w for w in few)
    markdown = result.markdown.read_text()
    for warning in few:
        assert f"- {warning}" in markdown
        assert f"warning: {warning}" in printed


def test_csv_has_the_statistics(studied):
    result, _ = studied
    with result.csv.open(newline="") as f:
        reader = csv.DictReader(f)
        header = reader.fieldnames
        records = {r["variant"]: r for r in reader}
    assert header == CSV_COLUMNS
    for column in ("ci95_low", "ci95_high", "iqm", "prob_improvement", "prob_improvement_low", "prob_improvement_high"):
        assert column in header

    def numbers(variant, *columns):
        return [float(records[variant][c]) for c in columns]

    assert numbers("mvsr", "ci95_low", "ci95_high", "iqm") == pytest.approx([0.6, 0.7, 0.65])
    assert numbers("mvsr", "prob_improvement", "prob_improvement_low", "prob_improvement_high") == pytest.approx(
        [0.875, 0.5, 1.0]
    )
    assert numbers("mssr", "iqm", "prob_improvement") == pytest.approx([0.5, 0.4375])
    assert numbers("no-shaping", "ci95_low", "ci95_high", "iqm") == pytest.approx([0.4, 0.9, 0.6])
    # One seed: empty interval cells, the point values still there.
    single = records["single"]
    assert (single["ci95_low"], single["ci95_high"], single["prob_improvement_low"]) == ("", "", "")
    assert numbers("single", "iqm", "prob_improvement") == pytest.approx([0.7, 1.0])
    # The reference: no probability of improvement over itself.
    assert records["grpo"]["prob_improvement"] == "" and records["grpo"]["prob_improvement_low"] == ""


def test_tables_show_the_statistics(studied):
    result, printed = studied
    markdown = result.markdown.read_text()
    assert "| final 95% CI | final IQM | P(improvement) over ref [95% CI] |" in markdown
    rows = {line.split(" | ")[0].lstrip("| "): line.split(" | ") for line in markdown.splitlines() if line.startswith("| ")}
    # Columns: variant, seeds, final, CI, IQM, P(improvement), ...
    assert rows["mvsr"][3:6] == ["[0.600, 0.700]", "0.650", "0.88 [0.50, 1.00]"]
    assert rows["mssr"][4] == "0.500" and rows["mssr"][5].startswith("0.44 [")  # 0.4375, then its interval
    assert rows["no-shaping"][3:5] == ["[0.400, 0.900]", "0.600"]
    assert rows["single"][3:6] == ["-", "0.700", "1.00"]
    assert rows["grpo (ref)"][5] == "-"
    assert "P(X > Y) + 0.5 P(X = Y)" in markdown and f"{stats.BOOTSTRAP_RESAMPLES} resamples" in markdown
    # The console table: short headers, same numbers.
    assert "95% CI" in printed and "IQM" in printed and "P(impr.)" in printed
    assert "0.650" in printed and "0.88" in printed and "[0.600," in printed


def test_compare_is_reproducible(seed_study, tmp_path):
    first = run_compare([seed_study], out=tmp_path / "a", console=quiet())
    second = run_compare([seed_study], out=tmp_path / "b", console=quiet())
    assert first.csv.read_text() == second.csv.read_text()


def test_band_interpolates_seeds_onto_one_grid_for_continuous_costs():
    """Tokens and seconds differ between seeds at every step: averaging only equal x would zigzag
    between seeds (each x holding one seed); each seed is read on the union grid, inside its range."""
    from mssr_cli.reporting.stats import band

    a = [(0.0, 0.0), (10.0, 1.0), (20.0, 2.0)]
    b = [(0.0, 0.0), (15.0, 3.0), (30.0, 6.0)]
    exact = band([a, b])
    assert exact.seeds == [2, 1, 1, 1, 1]  # only x = 0 is shared
    smooth = band([a, b], interpolate=True)
    assert smooth.x == [0.0, 10.0, 15.0, 20.0, 30.0]
    assert smooth.mean == pytest.approx([0.0, 1.5, 2.25, 3.0, 6.0])  # at 10: a 1, b 2; at 20: a 2, b 4
    assert (smooth.low[1], smooth.high[1]) == pytest.approx((1.0, 2.0))
    assert smooth.seeds == [2, 2, 2, 2, 1]  # a ends at 20: no extrapolation beyond its last point
