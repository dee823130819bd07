"""Agreement and repeatability of paired measurements (method vs reference, test vs retest).

Conventions: ``a`` and ``b`` are paired measurements of the same subjects (any shape, flattened, equal
shapes), ``a`` the method / first scan and ``b`` the reference / second scan, so differences are
``d_i = a_i - b_i``. Standard deviations are sample SDs (``ddof=1``). NaN or inf raise ``ValueError``: drop
incomplete pairs before calling.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

Z_95 = 1.96  # the customary two-sided 95% normal quantile in Bland & Altman's formulas (not 1.959964...)


def _paired(a, b, min_n: int = 2) -> tuple[np.ndarray, np.ndarray]:
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    if a.shape != b.shape:
        raise ValueError(f"a and b must have the same shape, got {a.shape} and {b.shape}")
    a, b = a.ravel(), b.ravel()
    if a.size < min_n:
        raise ValueError(f"need at least {min_n} pairs, got {a.size}")
    bad = ~(np.isfinite(a) & np.isfinite(b))
    if bad.any():
        raise ValueError(f"a or b contains NaN or inf at pairs {np.flatnonzero(bad).tolist()[:10]}")
    return a, b


class BlandAltman(NamedTuple):
    """Bland-Altman statistics; units of the inputs, or percent when ``percent=True``."""

    bias: float            # mean(d)
    sd: float              # SD(d), ddof=1
    lower_loa: float       # bias - 1.96 SD
    upper_loa: float       # bias + 1.96 SD
    slope: float           # least-squares slope of d on the pair means (proportional bias)
    intercept: float
    slope_p: float         # two-sided p of slope = 0 (t test, n - 2 df)
    n: int
    differences: np.ndarray  # (n,) d_i, for plotting
    means: np.ndarray        # (n,) m_i = (a_i + b_i) / 2


def bland_altman(a, b, percent: bool = False) -> BlandAltman:
    """Bland-Altman limits of agreement and proportional-bias regression.

        d_i = a_i - b_i,   m_i = (a_i + b_i) / 2,   bias = mean(d),   LoA = bias -+ 1.96 SD(d),

    and the ordinary least-squares fit ``d_i = intercept + slope * m_i`` (a slope different from 0 is
    proportional bias). With ``percent=True`` the differences are ``d_i = 100 (a_i - b_i) / m_i`` (the
    percent-difference version used for volumes); every other quantity follows from those ``d_i``.

    Args:
      a, b: paired measurements, equal shapes, at least 3 pairs.
      percent: use percent differences relative to the pair mean.
    Returns:
      :class:`BlandAltman`.
    Raises:
      ValueError: shape mismatch, fewer than 3 pairs, NaN/inf, or a zero pair mean with ``percent=True``.

    Reference: Bland & Altman, Lancet 1986; Bland & Altman, Stat Methods Med Res 1999.
    """
    a, b = _paired(a, b, min_n=3)
    m = 0.5 * (a + b)
    if percent:
        if np.any(m == 0):
            raise ValueError("a pair mean is zero: percent differences are undefined")
        d = 100.0 * (a - b) / m
    else:
        d = a - b
    bias = float(d.mean())
    sd = float(d.std(ddof=1))
    if np.ptp(m) > 0:
        from scipy import stats  # lazy: scipy.stats costs ~0.3 s of every analysis process's start-up

        fit = stats.linregress(m, d)
        slope, intercept, slope_p = float(fit.slope), float(fit.intercept), float(fit.pvalue)
    else:  # all pair means equal: the regression is undefined
        slope = intercept = slope_p = float("nan")
    return BlandAltman(bias, sd, bias - Z_95 * sd, bias + Z_95 * sd, slope, intercept, slope_p, int(d.size),
                       d, m)


def pearson_r(a, b) -> float:
    """Pearson correlation coefficient ``r = s_ab / (s_a s_b)``.

        r = sum (a_i - mean a)(b_i - mean b) / sqrt( sum (a_i - mean a)^2 * sum (b_i - mean b)^2 )

    Args:
      a, b: paired measurements (at least 2 pairs, neither constant).
    Returns:
      r in ``[-1, 1]``.
    """
    a, b = _paired(a, b)
    da, db = a - a.mean(), b - b.mean()
    denom = np.sqrt(np.sum(da * da) * np.sum(db * db))
    if denom == 0:
        raise ValueError("a or b is constant: the correlation is undefined")
    return float(np.clip(np.sum(da * db) / denom, -1.0, 1.0))


def lin_ccc(a, b) -> float:
    """Lin's concordance correlation coefficient.

        rho_c = 2 s_ab / (s_a^2 + s_b^2 + (mean a - mean b)^2),

    with the moments ``s_ab``, ``s_a^2``, ``s_b^2`` taken with divisor ``n`` as in Lin (1989). It equals
    Pearson's r times the bias-correction factor ``C_b = 2 / (v + 1/v + u^2)``, ``v = s_a / s_b``,
    ``u = (mean a - mean b) / sqrt(s_a s_b)``, so it penalises both scatter and systematic offset.

    Args:
      a, b: paired measurements (at least 2 pairs, not both constant and equal).
    Returns:
      rho_c in ``[-1, 1]``.

    Reference: Lin, Biometrics 1989 (45):255-268.
    """
    a, b = _paired(a, b)
    ma, mb = a.mean(), b.mean()
    sab = np.mean((a - ma) * (b - mb))
    denom = np.mean((a - ma) ** 2) + np.mean((b - mb) ** 2) + (ma - mb) ** 2
    if denom == 0:
        raise ValueError("a and b are identical constants: the concordance is undefined")
    return float(2.0 * sab / denom)


class Repeatability(NamedTuple):
    """Test-retest repeatability; units of the inputs."""

    rc: float          # 1.96 * SD(d)
    sd_diff: float     # SD(d), ddof=1
    bias: float        # mean(d)
    sigma_w: float     # within-subject SD, sqrt(sum d_i^2 / (2 n))
    rc_sigma_w: float  # 1.96 * sqrt(2) * sigma_w (= 2.77 sigma_w)
    n: int


def repeatability_coefficient(a, b) -> Repeatability:
    """Repeatability coefficient of two repeated measurements per subject.

    With ``d_i = a_i - b_i``:

    * ``rc = 1.96 SD(d)`` (sample SD, so the mean difference is removed): 95% of test-retest differences are
      expected within ``bias -+ rc``.
    * ``sigma_w = sqrt( sum_i d_i^2 / (2 n) )``: the within-subject SD, i.e. the square root of the one-way
      ANOVA within-subject mean square for two replicates (each subject's variance is ``d_i^2 / 2``).
    * ``rc_sigma_w = 1.96 sqrt(2) sigma_w`` (``1.96 sqrt(2) = 2.7719``, the "2.77 sigma_w" form).

    The two forms agree when there is no systematic difference between sessions (``mean(d) = 0``) up to the
    ``n`` vs ``n - 1`` divisor; ``rc_sigma_w`` includes any bias, ``rc`` does not.

    Args:
      a, b: first and second measurements, equal shapes, at least 2 subjects.
    Returns:
      :class:`Repeatability`.

    Reference: Bland & Altman, Lancet 1986 (repeatability); Bland & Altman, BMJ 1996 313:744 (sigma_w);
    QIBA / Raunig et al., Stat Methods Med Res 2015.
    """
    a, b = _paired(a, b)
    d = a - b
    sd = float(d.std(ddof=1))
    sigma_w = float(np.sqrt(np.sum(d * d) / (2 * d.size)))
    return Repeatability(Z_95 * sd, sd, float(d.mean()), sigma_w, Z_95 * np.sqrt(2.0) * sigma_w, int(d.size))


def coefficient_of_variation(a, b) -> float:
    """Within-subject coefficient of variation of two repeated measurements, in percent.

        CoV = 100 * sigma_w / mean(a ∪ b),   sigma_w = sqrt( sum_i (a_i - b_i)^2 / (2 n) ),

    i.e. the within-subject SD of :func:`repeatability_coefficient` over the grand mean of all ``2n``
    measurements. Meaningful for ratio-scale quantities (volumes, mass); for strain, whose mean is near zero
    or negative, prefer the repeatability coefficient.

    Args:
      a, b: first and second measurements, equal shapes, at least 2 subjects.
    Returns:
      CoV in percent (negative if the grand mean is negative).

    Reference: Bland & Altman, BMJ 1996 313:744; Raunig et al., Stat Methods Med Res 2015.
    """
    a, b = _paired(a, b)
    grand = 0.5 * (a.mean() + b.mean())
    if grand == 0:
        raise ValueError("the grand mean is zero: the coefficient of variation is undefined")
    d = a - b
    return float(100.0 * np.sqrt(np.sum(d * d) / (2 * d.size)) / grand)


def absolute_relative_change(a, b, reference: str = "second") -> np.ndarray:
    """Absolute relative change (aRC) of each pair, in percent.

    ``reference="second"`` (DeepStrain's form, ``b`` the reference): ``aRC_i = 100 |a_i - b_i| / |b_i|``.
    ``reference="mean"`` (symmetric): ``aRC_i = 100 |a_i - b_i| / |(a_i + b_i) / 2|``.

    For a positive reference these are the textbook ``|A - B| / B``; the absolute value in the denominator
    keeps the result a non-negative magnitude for negative quantities (circumferential strain). DeepStrain's
    ``_get_17segments_RC`` reports ``mean((b - a) / b) * 100`` (signed; the absolute version is commented
    out there); average the values returned here with ``np.mean`` for the cohort aRC. The ratio explodes for
    references near zero (small strains): read it together with absolute differences.

    Args:
      a, b: paired measurements, equal shapes.
      reference: ``"second"`` or ``"mean"``.
    Returns:
      ``a.shape`` array of aRC values in percent.
    Raises:
      ValueError: shape mismatch, NaN/inf, an unknown ``reference``, or a zero reference value.

    Reference: Morales et al., Front Cardiovasc Med 2021 (DeepStrain repeatability).
    """
    shape = np.shape(a)
    a, b = _paired(a, b, min_n=1)
    if reference == "second":
        ref = b
    elif reference == "mean":
        ref = 0.5 * (a + b)
    else:
        raise ValueError(f"reference must be 'second' or 'mean', got {reference!r}")
    zero = ref == 0
    if zero.any():
        raise ValueError(f"reference value is zero at pairs {np.flatnonzero(zero).tolist()[:10]}: "
                         "relative change is undefined")
    return (100.0 * np.abs(a - b) / np.abs(ref)).reshape(shape)
