"""Intraclass correlation coefficients with F-based confidence intervals (McGraw & Wong 1996).

Data are an ``(n, k)`` table: ``n`` subjects (rows, "targets") each measured by ``k`` raters, methods or
sessions (columns). With grand mean ``g``, row means ``r_i`` and column means ``c_j``, the ANOVA mean squares
are

    MSR = k sum_i (r_i - g)^2 / (n - 1)                          rows (between subjects)
    MSC = n sum_j (c_j - g)^2 / (k - 1)                          columns (between raters)
    MSE = sum_ij (x_ij - r_i - c_j + g)^2 / ((n - 1)(k - 1))     residual of the two-way model
    MSW = sum_ij (x_ij - r_i)^2 / (n (k - 1))                    within subjects (one-way model)

Names (McGraw & Wong 1996 / Shrout & Fleiss 1979 / pingouin):

* ``"1"``   = ICC(1)   = ICC(1,1) / ``ICC1``: one-way random; raters differ per subject.
* ``"A,1"`` = ICC(A,1) = ICC(2,1) / ``ICC2``: absolute agreement, single measure; two-way random **or**
  mixed (same formula). Use for method vs truth and test-retest: systematic offsets lower it.
* ``"C,1"`` = ICC(C,1) = ICC(3,1) / ``ICC3``: consistency, single measure; ignores systematic offsets.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

KINDS = ("1", "A,1", "C,1")


class ICCResult(NamedTuple):
    """An ICC estimate, its confidence interval, the F test of ICC = 0 and the ANOVA mean squares."""

    kind: str
    value: float
    ci_low: float
    ci_high: float
    confidence: float
    f_stat: float      # F for H0: ICC = 0 (MSR/MSW for "1", MSR/MSE otherwise)
    df1: float
    df2: float
    p_value: float     # one-sided, P(F > f_stat)
    ci_df1: float      # degrees of freedom of the F quantiles used for the interval
    ci_df2: float      # (Satterthwaite-style v for "A,1")
    n: int
    k: int
    msr: float
    msc: float
    mse: float
    msw: float


def _mean_squares(x: np.ndarray) -> tuple[np.float64, np.float64, np.float64, np.float64]:
    n, k = x.shape
    g = x.mean()
    r = x.mean(axis=1)
    c = x.mean(axis=0)
    msr = k * np.sum((r - g) ** 2) / (n - 1)
    msc = n * np.sum((c - g) ** 2) / (k - 1)
    # Residuals summed directly (not SST - SSR - SSC) so MSE cannot come out negative by cancellation.
    mse = np.sum((x - r[:, None] - c[None, :] + g) ** 2) / ((n - 1) * (k - 1))
    msw = np.sum((x - r[:, None]) ** 2) / (n * (k - 1))
    # numpy scalars, not floats: a zero MSE (perfect agreement) must give inf/NaN under errstate, not raise.
    return np.float64(msr), np.float64(msc), np.float64(mse), np.float64(msw)


def icc(data, kind: str = "A,1", confidence: float = 0.95) -> ICCResult:
    """Single-measure intraclass correlation ICC(1), ICC(A,1) or ICC(C,1) with its confidence interval.

    Estimates (mean squares as in the module docstring):

        ICC(1)   = (MSR - MSW) / (MSR + (k - 1) MSW)
        ICC(C,1) = (MSR - MSE) / (MSR + (k - 1) MSE)
        ICC(A,1) = (MSR - MSE) / (MSR + (k - 1) MSE + k (MSC - MSE) / n)

    Confidence intervals (McGraw & Wong 1996, Table 7), ``alpha = 1 - confidence`` and ``F_q(d1, d2)`` the
    ``q`` quantile of the F distribution:

    * ICC(1): ``F0 = MSR / MSW`` on ``(n - 1, n (k - 1))`` df; ICC(C,1): ``F0 = MSR / MSE`` on
      ``(n - 1, (n - 1)(k - 1))`` df. With ``FL = F0 / F_{1-alpha/2}(df1, df2)`` and
      ``FU = F0 * F_{1-alpha/2}(df2, df1)``: ``[(FL - 1) / (FL + k - 1), (FU - 1) / (FU + k - 1)]``
      (exact under the normal model).
    * ICC(A,1), approximate: with ``p`` the ICC(A,1) estimate,
      ``a = k p / (n (1 - p))``, ``b = 1 + k p (n - 1) / (n (1 - p))`` and the Satterthwaite-style df

          v = (a MSC + b MSE)^2 / ( (a MSC)^2 / (k - 1) + (b MSE)^2 / ((n - 1)(k - 1)) ),

      ``F* = F_{1-alpha/2}(n - 1, v)``, ``F_* = F_{1-alpha/2}(v, n - 1)``:

          lower = n (MSR - F* MSE) / ( F* (k MSC + (k n - k - n) MSE) + n MSR )
          upper = n (F_* MSR - MSE) / ( k MSC + (k n - k - n) MSE + n F_* MSR )

    The F test of ICC = 0 uses ``F0`` above (``MSR / MSE`` for both two-way forms). Interval bounds are NaN
    when a residual mean square is 0 (perfect agreement).

    Args:
      data: ``(n, k)`` table, ``n >= 2`` subjects by ``k >= 2`` raters/methods/sessions; complete (no NaN).
      kind: ``"A,1"`` (default), ``"C,1"`` or ``"1"``.
      confidence: two-sided confidence level of the interval, in ``(0, 1)``.
    Returns:
      :class:`ICCResult`.
    Raises:
      ValueError: wrong shape, NaN/inf rows (named), unknown ``kind`` or bad ``confidence``.

    References: McGraw & Wong, Psychol Methods 1996 1(1):30-46 (and the 1996 correction); Shrout & Fleiss,
    Psychol Bull 1979 86(2):420-428; Koo & Li, J Chiropr Med 2016 (< 0.5 poor, 0.5-0.75 moderate,
    0.75-0.9 good, > 0.9 excellent).
    """
    x = np.asarray(data, dtype=np.float64)
    if x.ndim != 2 or x.shape[0] < 2 or x.shape[1] < 2:
        raise ValueError(f"data must be (n subjects, k raters) with n, k >= 2, got shape {x.shape}")
    bad_rows = np.flatnonzero(~np.all(np.isfinite(x), axis=1))
    if bad_rows.size:
        raise ValueError(f"data has NaN or inf in rows {bad_rows.tolist()[:10]}: ICC needs a complete table "
                         "(drop incomplete subjects)")
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    n, k = x.shape
    from scipy import stats  # here, not at the top: importing the analysis would pull it in (~0.4 s)

    msr, msc, mse, msw = _mean_squares(x)
    q = 1.0 - (1.0 - confidence) / 2.0
    with np.errstate(divide="ignore", invalid="ignore"):
        if kind == "1":
            value = (msr - msw) / (msr + (k - 1) * msw)
            f0, df1, df2 = msr / msw, n - 1, n * (k - 1)
        else:
            f0, df1, df2 = msr / mse, n - 1, (n - 1) * (k - 1)
            if kind == "C,1":
                value = (msr - mse) / (msr + (k - 1) * mse)
            else:
                value = (msr - mse) / (msr + (k - 1) * mse + k * (msc - mse) / n)
        if kind in ("1", "C,1"):
            ci_df1, ci_df2 = df1, df2
            fl = f0 / stats.f.ppf(q, df1, df2)
            fu = f0 * stats.f.ppf(q, df2, df1)
            low = (fl - 1.0) / (fl + k - 1.0)
            high = (fu - 1.0) / (fu + k - 1.0)
        else:
            a = k * value / (n * (1.0 - value))
            b = 1.0 + k * value * (n - 1) / (n * (1.0 - value))
            v = (a * msc + b * mse) ** 2 / ((a * msc) ** 2 / (k - 1) + (b * mse) ** 2 / ((n - 1) * (k - 1)))
            ci_df1, ci_df2 = n - 1, v
            f_star = stats.f.ppf(q, n - 1, v)
            f_lower_star = stats.f.ppf(q, v, n - 1)
            c = k * msc + (k * n - k - n) * mse
            low = n * (msr - f_star * mse) / (f_star * c + n * msr)
            high = n * (f_lower_star * msr - mse) / (c + n * f_lower_star * msr)
        p_value = stats.f.sf(f0, df1, df2)
    return ICCResult(kind, float(value), float(low), float(high), float(confidence), float(f0), float(df1),
                     float(df2), float(p_value), float(ci_df1), float(ci_df2), n, k, msr, msc, mse, msw)
