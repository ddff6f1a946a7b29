"""Synthetic customers in the Telco contract's shape, with a known churn mechanism.

The generator draws a plausible population (contract terms, tenure that depends on the term,
services that depend on the internet product, charges built from the services) and then draws
churn from a logistic model of those features, the same drivers seen in the real Telco data:
month-to-month contracts, short tenure, fibre, electronic cheques and high charges raise churn;
security and support add-ons, long contracts and dependants lower it. Gender has no effect.

Because the mechanism is explicit, `churn_probability` gives every customer's true probability,
so tests know the best AUC any model can reach on a sample (the "known skill").

`shift` moves some input distributions (covariate shift) for drift tests: a preset name
(`SHIFT_PRESETS`), several joined by commas, a dict of `Population` fields, or a "field=value"
string. One field moves the mechanism itself (concept drift): `fiber_churn_effect`, the log-odds
fibre adds to churn, which the `fiber_competitor` preset raises; a model trained before it
underrates fibre customers' churn, so a retrain on the new customers is really better.

Everything is vectorised numpy from one seeded generator: a million rows take a few seconds
and the same seed gives the same bytes.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd

from churnops.contract import TELCO, Contract
from churnops.errors import ChurnOpsError

ADDONS = (
    "OnlineSecurity",
    "OnlineBackup",
    "DeviceProtection",
    "TechSupport",
    "StreamingTV",
    "StreamingMovies",
)


@dataclasses.dataclass(frozen=True)
class Population:
    """Input distributions. Probabilities follow the order of the contract's allowed values."""

    senior_share: float = 0.16
    partner_share: float = 0.48
    phone_share: float = 0.90
    contract_probs: tuple[float, ...] = (0.55, 0.21, 0.24)  # Month-to-month, One year, Two year
    internet_probs: tuple[float, ...] = (0.35, 0.44, 0.21)  # DSL, Fiber optic, No
    payment_probs: tuple[float, ...] = (0.34, 0.23, 0.22, 0.21)  # Electronic, Mailed, Bank, Card
    paperless_share: float = 0.59
    addon_shares: tuple[float, ...] = (0.37, 0.44, 0.44, 0.37, 0.49, 0.49)  # among internet users
    monthly_charge_factor: float = 1.0  # a price rise multiplies every monthly charge
    tenure_scale: float = 1.0  # < 1: a younger customer base
    fiber_churn_effect: float = 0.8  # log-odds fibre adds to churn (the mechanism, not an input)


SHIFT_PRESETS: dict[str, dict[str, Any]] = {
    # Prices up 30%: MonthlyCharges and TotalCharges drift, nothing else does.
    "price_rise": {"monthly_charge_factor": 1.3},
    # A sales push on monthly contracts: Contract drifts, and through it tenure.
    "contract_mix": {"contract_probs": (0.85, 0.10, 0.05)},
    # Fibre roll-out: InternetService drifts (and charges, which follow the product).
    "fiber_growth": {"internet_probs": (0.15, 0.80, 0.05)},
    # An influx of new customers: tenure and TotalCharges drift.
    "new_customers": {"tenure_scale": 0.3},
    # Payment migration to electronic cheques.
    "payment_mix": {"payment_probs": (0.70, 0.10, 0.10, 0.10)},
    # A competitor's fibre offer: fibre customers churn far more (concept drift, no input moves).
    "fiber_competitor": {"fiber_churn_effect": 2.0},
}


def resolve_shift(shift: str | Mapping[str, Any] | None) -> Population:
    """Turn a preset name list ("price_rise,contract_mix"), "field=value" pairs or a dict into a
    `Population`; unknown names or fields raise a one-line `ChurnOpsError`."""
    if shift is None or shift == "":
        return Population()
    overrides: dict[str, Any] = {}
    if isinstance(shift, str):
        for part in (p.strip() for p in shift.split(",") if p.strip()):
            if "=" in part:
                name, _, value = part.partition("=")
                overrides[name.strip()] = _parse_value(name.strip(), value)
            elif part in SHIFT_PRESETS:
                overrides.update(SHIFT_PRESETS[part])
            else:
                known = ", ".join(sorted(SHIFT_PRESETS))
                raise ChurnOpsError(f"unknown shift '{part}' (presets: {known}; or field=value)")
    else:
        overrides = dict(shift)
    fields = {f.name: f for f in dataclasses.fields(Population)}
    for name, value in overrides.items():
        if name not in fields:
            raise ChurnOpsError(f"unknown shift field '{name}' (fields: {', '.join(fields)})")
        if isinstance(value, list | tuple):
            overrides[name] = tuple(float(v) for v in value)
    population = dataclasses.replace(Population(), **overrides)
    _check_population(population)
    return population


def _parse_value(name: str, text: str) -> Any:
    try:
        if "/" in text:
            return tuple(float(v) for v in text.split("/"))
        return float(text)
    except ValueError:
        raise ChurnOpsError(
            f"shift {name}: '{text}' is not a number (use a/b/c for lists)"
        ) from None


def _check_population(p: Population) -> None:
    for name, probs, size in (
        ("contract_probs", p.contract_probs, 3),
        ("internet_probs", p.internet_probs, 3),
        ("payment_probs", p.payment_probs, 4),
        ("addon_shares", p.addon_shares, 6),
    ):
        if len(probs) != size or any(not 0 <= v <= 1 for v in probs):
            raise ChurnOpsError(f"shift {name}: needs {size} values between 0 and 1")
    for name in ("senior_share", "partner_share", "phone_share", "paperless_share"):
        if not 0 <= getattr(p, name) <= 1:
            raise ChurnOpsError(f"shift {name}: must be between 0 and 1")
    if p.monthly_charge_factor <= 0 or p.tenure_scale <= 0:
        raise ChurnOpsError("shift monthly_charge_factor and tenure_scale must be positive")


def _draw(rng: np.random.Generator, probs: tuple[float, ...], n: int) -> npt.NDArray[np.intp]:
    """Codes 0..len(probs)-1 drawn with the given (unnormalised) probabilities."""
    p = np.asarray(probs, dtype=float)
    cumulative = np.cumsum(p / p.sum())
    return np.searchsorted(cumulative, rng.random(n), side="right").clip(0, len(p) - 1)


def _category(codes: npt.NDArray[np.integer[Any]], values: tuple[str, ...]) -> pd.Categorical:
    # Categoricals from codes cost nothing, where a million-element object array costs seconds.
    return pd.Categorical.from_codes(
        # pandas takes any array-like of ints here; pandas-stubs 2.2.3 declares Sequence[int].
        codes.astype(np.int8),  # type: ignore[arg-type]
        categories=pd.Index(values),
    )


def _yes(mask: npt.NDArray[np.bool_]) -> pd.Categorical:
    return _category(np.where(mask, 0, 1), ("Yes", "No"))


def generate(
    rows: int,
    seed: int,
    shift: str | Mapping[str, Any] | None = None,
    contract: Contract = TELCO,
) -> pd.DataFrame:
    """`rows` customers with a churn label, columns in the contract's order.

    TotalCharges is NaN (a blank cell in the CSV, as in the real file) for customers in their
    first month (tenure 0)."""
    if contract.name != TELCO.name:
        raise ChurnOpsError(
            f"synthetic data exists for the telco contract only, not {contract.name}"
        )
    if rows < 1:
        raise ChurnOpsError("rows must be at least 1")
    population = resolve_shift(shift)
    rng = np.random.default_rng(seed)
    n = rows
    allowed = {c.name: tuple(c.allowed or ()) for c in contract.columns}

    frame: dict[str, Any] = {}
    serial = pd.Series(np.arange(1, n + 1)).astype(str).str.zfill(7)
    letters = (rng.integers(0, 26, size=(n, 5), dtype=np.uint8) + ord("A")).view("S5").ravel()
    frame[contract.id_column] = (serial + "-" + pd.Series(letters).str.decode("ascii")).to_numpy()

    frame["gender"] = _category(_draw(rng, (0.5, 0.5), n), allowed["gender"])
    senior = rng.random(n) < population.senior_share
    frame["SeniorCitizen"] = senior.astype(np.int64)
    partner = rng.random(n) < population.partner_share
    dependents = rng.random(n) < np.where(partner, 0.5, 0.1)
    frame["Partner"] = _yes(partner)
    frame["Dependents"] = _yes(dependents)

    term = _draw(rng, population.contract_probs, n)  # 0 monthly, 1 one year, 2 two years
    # Tenure depends on the contract term: monthly customers are mostly recent.
    a = np.array([0.7, 1.5, 2.5])[term]
    b = np.array([2.0, 1.2, 0.8])[term]
    share = rng.beta(a, b) * population.tenure_scale
    tenure = np.minimum(1 + np.floor(share * 72), 72).astype(np.int64)
    # A few customers signed up this month and have not been billed yet (tenure 0).
    tenure[rng.random(n) < 0.003] = 0
    frame["tenure"] = tenure

    internet = _draw(rng, population.internet_probs, n)  # 0 DSL, 1 fibre, 2 none
    has_internet = internet != 2
    fiber = internet == 1
    # Everyone without internet has a phone line (a customer with neither does not exist).
    phone = (rng.random(n) < population.phone_share) | ~has_internet
    multiple = phone & (rng.random(n) < 0.47)
    frame["PhoneService"] = _yes(phone)
    frame["MultipleLines"] = _category(
        np.where(phone, np.where(multiple, 0, 1), 2), allowed["MultipleLines"]
    )
    frame["InternetService"] = _category(internet, allowed["InternetService"])
    addons = {}
    for name, addon_share in zip(ADDONS, population.addon_shares, strict=True):
        # Longer-standing customers hold more add-ons.
        p = np.clip(addon_share * (0.7 + 0.6 * tenure / 72), 0, 1)
        addons[name] = has_internet & (rng.random(n) < p)
        frame[name] = _category(
            np.where(has_internet, np.where(addons[name], 0, 1), 2), allowed[name]
        )
    frame["Contract"] = _category(term, allowed["Contract"])
    paperless = rng.random(n) < population.paperless_share
    frame["PaperlessBilling"] = _yes(paperless)
    frame["PaymentMethod"] = _category(
        _draw(rng, population.payment_probs, n), allowed["PaymentMethod"]
    )

    monthly = (
        np.where(phone, 20.0, 0.0)
        + np.where(multiple, 5.0, 0.0)
        + np.where(fiber, 50.0, np.where(has_internet, 25.0, 0.0))
        + sum(
            np.where(addons[name], price, 0.0)
            for name, price in zip(ADDONS, (5, 5, 5, 5, 10, 10), strict=True)
        )
        + rng.normal(0.0, 2.0, n)
    )
    monthly = np.clip(monthly, 18.25, None) * population.monthly_charge_factor
    monthly = np.round(monthly * 20) / 20  # billed in 5-cent steps
    frame["MonthlyCharges"] = monthly
    total = tenure * monthly * rng.normal(1.0, 0.04, n).clip(0.85, 1.15)
    frame["TotalCharges"] = np.where(tenure == 0, np.nan, np.round(total, 2))

    features = pd.DataFrame(frame)
    probability = churn_probability(features, population)
    churn = rng.random(n) < probability
    features[contract.target_column] = _yes(churn)
    return features[contract.column_names]


def churn_probability(
    customers: pd.DataFrame, population: Population | None = None
) -> npt.NDArray[np.float64]:
    """The generator's true churn probability for each customer (the mechanism, not a model)
    under `population`'s mechanism (default: the base one). Charges enter relative to the
    products held, so a price rise changes churn only a little."""
    c = customers
    fiber_effect = (population or Population()).fiber_churn_effect
    tenure = c["tenure"].to_numpy(dtype=float)
    monthly = c["MonthlyCharges"].to_numpy(dtype=float)
    logit = (
        0.15
        + np.select([c["Contract"] == "One year", c["Contract"] == "Two year"], [-1.3, -2.6], 0.0)
        - 0.75 * np.log1p(tenure / 6.0)
        + np.select(
            [c["InternetService"] == "Fiber optic", c["InternetService"] == "No"],
            [fiber_effect, -0.9],
            0.0,
        )
        - 0.5 * (c["OnlineSecurity"] == "Yes")
        - 0.5 * (c["TechSupport"] == "Yes")
        - 0.2 * (c["OnlineBackup"] == "Yes")
        - 0.1 * (c["DeviceProtection"] == "Yes")
        + 0.15 * (c["StreamingTV"] == "Yes")
        + 0.15 * (c["StreamingMovies"] == "Yes")
        + 0.5 * (c["PaymentMethod"] == "Electronic check")
        + 0.35 * (c["PaperlessBilling"] == "Yes")
        + 0.3 * c["SeniorCitizen"].to_numpy(dtype=float)
        - 0.1 * (c["Partner"] == "Yes")
        - 0.25 * (c["Dependents"] == "Yes")
        + 0.012 * (monthly - 65.0)
    )
    probability: npt.NDArray[np.float64] = 1.0 / (1.0 + np.exp(-np.asarray(logit, dtype=float)))
    return probability


def write_csv(customers: pd.DataFrame, path: str | Path) -> None:
    """Write customers as the real files look: TotalCharges is a single space when blank, no
    quotes (no contract value contains a comma; pyarrow raises rather than write a broken row).
    pyarrow's CSV writer is several times faster than pandas' for a million rows."""
    import pyarrow as pa
    import pyarrow.csv as pa_csv

    columns = {}
    for name in customers.columns:
        series = customers[name]
        if isinstance(series.dtype, pd.CategoricalDtype):
            columns[name] = pa.DictionaryArray.from_arrays(
                series.cat.codes.to_numpy(), pa.array(list(series.cat.categories), pa.string())
            ).cast(pa.string())
        elif series.dtype.kind == "f":
            text = series.round(2).astype(str).str.removesuffix(".0").where(series.notna(), " ")
            columns[name] = pa.array(text.to_numpy(dtype=object), type=pa.string())
        elif series.dtype.kind in "iu":
            columns[name] = pa.array(series.to_numpy(), type=pa.int64())
        else:
            columns[name] = pa.array(series.astype(str).to_numpy(dtype=object), type=pa.string())
    table = pa.table(columns)
    options = pa_csv.WriteOptions(include_header=False, quoting_style="none")
    with open(path, "wb") as handle:
        handle.write((",".join(customers.columns) + "\n").encode())
        pa_csv.write_csv(table, handle, write_options=options)
