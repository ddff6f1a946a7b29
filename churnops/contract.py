"""The data contract: the one source of truth for a dataset's shape.

Everything that needs to know a column (CSV header checks, row validation and cleaning, the
database DDL, the model's feature lists, the API's request schema and the OpenAPI document) asks
the contract. Nothing else in the code base lists columns by hand.

Validation is vectorised over a DataFrame of raw strings (a CSV read with ``dtype=str``) because
the same function runs inside the Glue job on millions of rows and inside the CLI.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import TYPE_CHECKING, Any

from churnops.errors import ChurnOpsError, ContractMismatchError

# numpy and pandas are imported where rows are validated: the serving image carries no pandas,
# and `cdk synth` (stacks/serving.py builds the API's request model from a contract) neither.
if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt
    import pandas as pd

REJECT_REASON = "reject_reason"


class Kind(StrEnum):
    STRING = "string"  # free text, such as an id
    CATEGORY = "category"  # one of a fixed set of labels (Yes/No flags included)
    INTEGER = "integer"
    FLOAT = "float"


@dataclass(frozen=True)
class Column:
    name: str
    kind: Kind
    description: str = ""
    nullable: bool = False
    allowed: tuple[str, ...] | None = None  # CATEGORY: the canonical spellings
    minimum: float | None = None
    maximum: float | None = None
    max_length: int = 64  # STRING: longest accepted value
    # Cleaning rule for a blank cell in a numeric column: the value it stands for, accepted only
    # when `blank_when` holds (column name -> required value). Telco's TotalCharges is a single
    # space for customers in their first month (tenure 0): they have not been billed yet.
    blank_value: float | None = None
    blank_when: tuple[str, float] | None = None

    def __post_init__(self) -> None:
        if self.kind is Kind.CATEGORY and not self.allowed:
            raise ValueError(f"category column {self.name} needs allowed values")

    @property
    def is_numeric(self) -> bool:
        return self.kind in (Kind.INTEGER, Kind.FLOAT)


@dataclass(frozen=True)
class ValidationResult:
    clean: pd.DataFrame  # typed, canonical values, contract column order
    rejected: pd.DataFrame  # the raw rows as read, plus REJECT_REASON
    accepted: npt.NDArray[np.bool_] | None = None  # per input row: whether it is in `clean`

    @property
    def rows_read(self) -> int:
        return len(self.clean) + len(self.rejected)


@dataclass(frozen=True)
class HeaderProblems:
    missing: tuple[str, ...] = ()
    unexpected: tuple[str, ...] = ()
    duplicated: tuple[str, ...] = ()

    def __bool__(self) -> bool:
        return bool(self.missing or self.unexpected or self.duplicated)

    def describe(self) -> str:
        parts = []
        if self.missing:
            parts.append("missing column(s): " + ", ".join(self.missing))
        if self.unexpected:
            parts.append("unexpected column(s): " + ", ".join(self.unexpected))
        if self.duplicated:
            parts.append("duplicate column name(s): " + ", ".join(self.duplicated))
        return "; ".join(parts)


@dataclass(frozen=True)
class Contract:
    name: str
    description: str
    columns: tuple[Column, ...]
    id_column: str
    target_column: str
    positive_label: str
    table: str  # database table the ingested rows live in
    extra_non_features: tuple[str, ...] = field(default=())
    # Slices the retrain gate checks a challenger on: (column, band edges). No edges means one
    # slice per category; edges cut a numeric column into bands (e.g. tenure in months).
    slices: tuple[tuple[str, tuple[float, ...]], ...] = field(default=())

    def __post_init__(self) -> None:
        names = [c.name for c in self.columns]
        if len(set(names)) != len(names):
            raise ValueError(f"contract {self.name} repeats a column name")
        for required in (self.id_column, self.target_column):
            if required not in names:
                raise ValueError(f"contract {self.name} lacks column {required}")
        for name, _edges in self.slices:
            if name not in names:
                raise ValueError(f"contract {self.name}: slice column {name} is not a column")
        target = self.column(self.target_column)
        if target.allowed is None or self.positive_label not in target.allowed:
            raise ValueError(f"contract {self.name}: positive label not among target values")

    # ---- column views -------------------------------------------------------------------------
    def column(self, name: str) -> Column:
        for col in self.columns:
            if col.name == name:
                return col
        raise KeyError(name)

    @property
    def column_names(self) -> list[str]:
        return [c.name for c in self.columns]

    @property
    def feature_columns(self) -> list[Column]:
        skip = {self.id_column, self.target_column, *self.extra_non_features}
        return [c for c in self.columns if c.name not in skip]

    @property
    def feature_names(self) -> list[str]:
        return [c.name for c in self.feature_columns]

    @property
    def numeric_features(self) -> list[str]:
        return [c.name for c in self.feature_columns if c.is_numeric]

    @property
    def categorical_features(self) -> list[str]:
        return [c.name for c in self.feature_columns if not c.is_numeric]

    @property
    def scoring_columns(self) -> list[str]:
        """Columns a file to be scored must carry: everything but the target."""
        return [n for n in self.column_names if n != self.target_column]

    @property
    def negative_label(self) -> str:
        allowed = self.column(self.target_column).allowed or ()
        return next(v for v in allowed if v != self.positive_label)

    # ---- identity -----------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "id_column": self.id_column,
            "target_column": self.target_column,
            "positive_label": self.positive_label,
            "table": self.table,
            "columns": [
                {
                    "name": c.name,
                    "kind": c.kind.value,
                    "nullable": c.nullable,
                    "allowed": list(c.allowed) if c.allowed else None,
                    "minimum": c.minimum,
                    "maximum": c.maximum,
                    "blank_value": c.blank_value,
                    "blank_when": list(c.blank_when) if c.blank_when else None,
                }
                for c in self.columns
            ],
        }

    @property
    def schema_hash(self) -> str:
        """Fingerprint of everything that changes what a valid row is. Models carry it, and
        serving refuses a model whose hash differs from its own contract's."""
        blob = json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(blob.encode()).hexdigest()[:16]

    def check_model_card(self, card: Mapping[str, Any]) -> None:
        """Refuse a model trained for another contract, or another version of this one (its
        schema hash differs): scoring it would read columns by the wrong meaning."""
        if card.get("contract") != self.name:
            raise ContractMismatchError(
                f"model {card.get('version')} was trained for contract '{card.get('contract')}', "
                f"not '{self.name}'"
            )
        if card.get("schema_hash") != self.schema_hash:
            raise ContractMismatchError(
                f"model {card.get('version')} was trained on another version of the "
                f"'{self.name}' contract (schema {card.get('schema_hash')}, "
                f"now {self.schema_hash})"
            )

    # ---- header and row checks ----------------------------------------------------------------
    @property
    def repeated_id_reason(self) -> str:
        return f"{self.id_column} repeats an earlier row of this file"

    def check_header(
        self, header: Iterable[str], *, target_required: bool = True
    ) -> HeaderProblems:
        header = [h.strip() for h in header]
        seen: set[str] = set()
        duplicated = []
        for h in header:
            if h in seen and h not in duplicated:
                duplicated.append(h)
            seen.add(h)
        expected = self.column_names if target_required else self.scoring_columns
        missing = tuple(c for c in expected if c not in seen)
        unexpected = tuple(h for h in dict.fromkeys(header) if h not in self.column_names)
        return HeaderProblems(missing, unexpected, tuple(duplicated))

    def validate(self, raw: pd.DataFrame, *, target_required: bool = True) -> ValidationResult:
        """Split raw string rows into clean typed rows and rejected rows with a reason each.

        `raw` holds strings (blank cells as "" or NaN). Row order is kept in both outputs.
        Without `target_required`, a missing target column is allowed (files to be scored).
        Columns may be categorical (how churnops.csv_splits reads repetitive columns).

        Each column is factorised first and every check runs once per distinct value: customer
        files have few distinct values per column, which makes a million rows take about a second.
        """
        import numpy as np
        import pandas as pd

        problems = self.check_header(raw.columns, target_required=target_required)
        if problems:
            raise ChurnOpsError(f"{self.name} contract: {problems.describe()}")
        raw = raw.rename(columns=lambda c: c.strip())
        n = len(raw)
        reasons = np.full(n, "", dtype=object)

        def flag(mask: npt.NDArray[np.bool_], text: str | npt.NDArray[np.object_]) -> None:
            """Add a reason to the masked rows; `text` is one string or one per distinct value."""
            if not mask.any():
                return
            current = reasons[mask]
            add = text[codes[mask]] if isinstance(text, np.ndarray) else text
            reasons[mask] = np.where(current == "", add, current + "; " + add)

        out: dict[str, Any] = {}
        present = [c for c in self.columns if c.name in raw.columns]
        for col in present:
            codes, uniques = pd.factorize(raw[col.name], use_na_sentinel=False)
            text = np.array(
                ["" if (u is None or u != u) else str(u).strip() for u in uniques], dtype=object
            )
            # Values quoted in messages; an id column (one distinct value per row) needs none.
            shown = (
                text if col.kind is Kind.STRING else np.array([t[:40] for t in text], dtype=object)
            )
            blank_u = text == ""
            blank = blank_u[codes]
            if col.kind is Kind.STRING:
                flag(
                    np.array([len(t) > col.max_length for t in text], dtype=bool)[codes],
                    f"{col.name} is longer than {col.max_length} characters",
                )
                if not col.nullable:
                    flag(blank, f"{col.name} is blank")
                values = text.copy()
                values[blank_u] = None
                out[col.name] = values[codes]
            elif col.kind is Kind.CATEGORY:
                lookup = {a.lower(): a for a in col.allowed or ()}
                canon = np.array([lookup.get(t.lower()) for t in text], dtype=object)
                message = np.array(
                    [
                        f"{col.name} has value '{s}', expected one of: {', '.join(col.allowed or ())}"
                        for s in shown
                    ],
                    dtype=object,
                )
                flag((~blank_u & (canon == None))[codes], message)  # noqa: E711 - elementwise
                if not col.nullable:
                    flag(blank, f"{col.name} is blank")
                out[col.name] = canon[codes]
            else:
                number_u = pd.to_numeric(pd.Series(text, dtype=object), errors="coerce").to_numpy(
                    dtype="float64"
                )
                message = np.array(
                    [f"{col.name} has value '{s}', expected a number" for s in shown], dtype=object
                )
                flag((~blank_u & np.isnan(number_u))[codes], message)
                if col.kind is Kind.INTEGER:
                    fractional = (~np.isnan(number_u)) & (np.floor(number_u) != number_u)
                    flag(fractional[codes], f"{col.name} must be a whole number")
                if col.minimum is not None:
                    flag(
                        (number_u < col.minimum)[codes],
                        f"{col.name} is below the minimum {col.minimum:g}",
                    )
                if col.maximum is not None:
                    flag(
                        (number_u > col.maximum)[codes],
                        f"{col.name} is above the maximum {col.maximum:g}",
                    )
                number = number_u[codes]
                if col.blank_value is not None:
                    fill_ok = blank.copy()
                    if col.blank_when is not None:
                        other, wanted = col.blank_when
                        fill_ok &= out.get(other, np.full(n, np.nan)) == wanted
                        if not col.nullable:
                            flag(
                                blank & ~fill_ok,
                                f"{col.name} is blank, allowed only when {other} is {wanted:g}",
                            )
                    number = np.where(fill_ok, col.blank_value, number)
                elif not col.nullable:
                    flag(blank, f"{col.name} is blank")
                out[col.name] = number

        ids = out[self.id_column]
        dup = pd.Series(ids).duplicated(keep="first").to_numpy() & (ids != None)  # noqa: E711
        flag(dup, self.repeated_id_reason)

        ok = reasons == ""
        # copy=False: the masked arrays are new already; consolidating them would copy again.
        clean = pd.DataFrame({name: values[ok] for name, values in out.items()}, copy=False)
        for col in present:
            if col.kind is Kind.INTEGER:
                clean[col.name] = clean[col.name].round().astype("Int64")
        rejected = raw[~ok].copy()
        rejected[REJECT_REASON] = reasons[~ok]
        return ValidationResult(clean=clean, rejected=rejected.reset_index(drop=True), accepted=ok)

    def target_vector(self, clean: pd.DataFrame) -> npt.NDArray[np.int8]:
        """1 for the positive label, 0 otherwise; rows with an unknown target must be dropped first."""
        import numpy as np

        return (clean[self.target_column] == self.positive_label).to_numpy(dtype=np.int8)

    # ---- derived schemas ----------------------------------------------------------------------
    def sql_type(self, col: Column) -> str:
        if col.kind is Kind.INTEGER:
            return "BIGINT"
        if col.kind is Kind.FLOAT:
            return "DOUBLE"
        if col.kind is Kind.CATEGORY:
            return f"VARCHAR({max(len(a) for a in col.allowed or ('',))})"
        # Binary collation: ids are compared exactly, as validation's duplicate check does. On
        # a server whose default collation ignores case, 'ab-1' and 'AB-1' would be one key and
        # an upsert would silently overwrite one customer with another.
        return f"VARCHAR({col.max_length}) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin"

    def ddl(self, table: str | None = None, *, extra: Mapping[str, str] | None = None) -> str:
        """CREATE TABLE for the contract's rows, keyed by the id column (upserts need the key)."""
        table = table or self.table
        lines = []
        for col in self.columns:
            null = "NULL" if (col.nullable or col.name == self.target_column) else "NOT NULL"
            if col.name == self.id_column:
                null = "NOT NULL"
            lines.append(f"  `{col.name}` {self.sql_type(col)} {null}")
        for name, sql in (extra or {}).items():
            lines.append(f"  `{name}` {sql}")
        lines.append(f"  PRIMARY KEY (`{self.id_column}`)")
        body = ",\n".join(lines)
        return f"CREATE TABLE IF NOT EXISTS `{table}` (\n{body}\n)"

    def json_schema_for(self, col: Column) -> dict[str, Any]:
        if col.kind is Kind.CATEGORY:
            schema: dict[str, Any] = {"type": "string", "enum": list(col.allowed or ())}
        elif col.kind is Kind.STRING:
            schema = {"type": "string", "minLength": 1, "maxLength": col.max_length}
        else:
            schema = {"type": "integer" if col.kind is Kind.INTEGER else "number"}
            if col.minimum is not None:
                schema["minimum"] = col.minimum
            if col.maximum is not None:
                schema["maximum"] = col.maximum
        if col.nullable or col.blank_value is not None:
            schema = {"anyOf": [schema, {"type": "null"}]}
        if col.description:
            schema["description"] = col.description
        return schema

    def customer_json_schema(self) -> dict[str, Any]:
        """JSON Schema of one customer in an API request: the id and the model's features."""
        cols = [self.column(self.id_column), *self.feature_columns]
        required = [c.name for c in cols if not c.nullable and c.blank_value is None]
        return {
            "type": "object",
            "properties": {c.name: self.json_schema_for(c) for c in cols},
            "required": required,
            "additionalProperties": False,
        }

    def api_customers(self, clean: pd.DataFrame) -> list[dict[str, Any]]:
        """Clean rows as the customers of an API request (what `customer_json_schema` accepts):
        the id and the features, a missing value as None, numbers as int or float by kind."""
        import pandas as pd

        names = [self.id_column, *self.feature_names]
        kinds = {name: self.column(name).kind for name in names}
        customers = []
        for record in clean[names].to_dict("records"):
            customer: dict[str, Any] = {}
            for name in names:
                value = record[name]
                if value is None or pd.isna(value):
                    customer[name] = None
                elif kinds[name] is Kind.INTEGER:
                    customer[name] = int(value)
                elif kinds[name] is Kind.FLOAT:
                    customer[name] = float(value)
                else:
                    customer[name] = str(value)
            customers.append(customer)
        return customers


def _yes_no(name: str, description: str = "") -> Column:
    return Column(name, Kind.CATEGORY, description, allowed=("Yes", "No"))


_NO_INTERNET = ("Yes", "No", "No internet service")

TELCO = Contract(
    name="telco",
    description="IBM Telco Customer Churn: one row per customer of a telecom operator.",
    id_column="customerID",
    target_column="Churn",
    positive_label="Yes",
    table="customers",
    slices=(("Contract", ()), ("tenure", (12.0, 24.0, 48.0))),
    columns=(
        Column("customerID", Kind.STRING, "Customer identifier", max_length=64),
        Column("gender", Kind.CATEGORY, "Customer gender", allowed=("Male", "Female")),
        Column("SeniorCitizen", Kind.INTEGER, "1 if 65 or older", minimum=0, maximum=1),
        _yes_no("Partner", "Has a partner"),
        _yes_no("Dependents", "Has dependents"),
        Column("tenure", Kind.INTEGER, "Months with the company", minimum=0, maximum=600),
        _yes_no("PhoneService", "Has phone service"),
        Column(
            "MultipleLines",
            Kind.CATEGORY,
            "Has multiple phone lines",
            allowed=("Yes", "No", "No phone service"),
        ),
        Column(
            "InternetService",
            Kind.CATEGORY,
            "Internet service type",
            allowed=("DSL", "Fiber optic", "No"),
        ),
        Column("OnlineSecurity", Kind.CATEGORY, "Online security add-on", allowed=_NO_INTERNET),
        Column("OnlineBackup", Kind.CATEGORY, "Online backup add-on", allowed=_NO_INTERNET),
        Column("DeviceProtection", Kind.CATEGORY, "Device protection add-on", allowed=_NO_INTERNET),
        Column("TechSupport", Kind.CATEGORY, "Tech support add-on", allowed=_NO_INTERNET),
        Column("StreamingTV", Kind.CATEGORY, "Streams TV", allowed=_NO_INTERNET),
        Column("StreamingMovies", Kind.CATEGORY, "Streams movies", allowed=_NO_INTERNET),
        Column(
            "Contract",
            Kind.CATEGORY,
            "Contract term",
            allowed=("Month-to-month", "One year", "Two year"),
        ),
        _yes_no("PaperlessBilling", "Paperless billing"),
        Column(
            "PaymentMethod",
            Kind.CATEGORY,
            "Payment method",
            allowed=(
                "Electronic check",
                "Mailed check",
                "Bank transfer (automatic)",
                "Credit card (automatic)",
            ),
        ),
        Column("MonthlyCharges", Kind.FLOAT, "Monthly charge", minimum=0, maximum=10_000),
        Column(
            "TotalCharges",
            Kind.FLOAT,
            "Total charged to date",
            minimum=0,
            maximum=1_000_000,
            blank_value=0.0,
            blank_when=("tenure", 0),
        ),
        _yes_no("Churn", "Left within the last month (the target)"),
    ),
)

INSURANCE = Contract(
    name="insurance",
    description="Insurance policy holders: one row per customer.",
    id_column="customer_id",
    target_column="churn",
    positive_label="1",
    table="insurance_customers",
    slices=(("policy_type", ()), ("age", (30.0, 45.0, 60.0))),
    columns=(
        Column("customer_id", Kind.STRING, "Customer identifier", max_length=64),
        Column("age", Kind.INTEGER, "Age in years", minimum=18, maximum=120),
        Column("annual_premium", Kind.FLOAT, "Annual premium", minimum=0, maximum=1_000_000),
        Column(
            "policy_type",
            Kind.CATEGORY,
            "Kind of policy",
            allowed=("auto", "home", "life", "health", "travel"),
        ),
        Column("claims_count", Kind.INTEGER, "Claims filed", minimum=0, maximum=1_000),
        Column("churn", Kind.CATEGORY, "Did not renew (the target)", allowed=("1", "0")),
    ),
)

CONTRACTS: dict[str, Contract] = {c.name: c for c in (TELCO, INSURANCE)}


def get_contract(name: str) -> Contract:
    try:
        return CONTRACTS[name]
    except KeyError:
        known = ", ".join(sorted(CONTRACTS))
        raise ChurnOpsError(f"unknown contract '{name}' (known: {known})") from None
