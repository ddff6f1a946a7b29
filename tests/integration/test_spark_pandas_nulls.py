"""A missing string survives the trip pandas -> Spark -> pandas as a null, with Arrow on and off.

With pandas 3, PySpark 3.5 turns a missing string into the string 'NaN' on the non-Arrow path
(the reason requirements.txt pins pandas 2.2.x); this test fails if that upgrade happens.
"""

from __future__ import annotations

import pandas as pd
import pytest

ARROW = "spark.sql.execution.arrow.pyspark.enabled"


@pytest.fixture(params=["arrow-on", "arrow-off"])
def arrow_mode(request, spark):
    previous = spark.conf.get(ARROW)
    spark.conf.set(ARROW, "true" if request.param == "arrow-on" else "false")
    yield request.param
    spark.conf.set(ARROW, previous)


def test_a_null_string_round_trips_as_null(spark, arrow_mode):
    # GIVEN customers, one of them with a missing (nullable) string value
    frame = pd.DataFrame(
        {
            "customerID": ["0001-A", "0002-B", "0003-C"],
            "PaymentMethod": ["Mailed check", None, "Electronic check"],
            "MonthlyCharges": [20.5, 30.0, 99.9],
        }
    )
    # WHEN they go to Spark and back
    sdf = spark.createDataFrame(frame)
    rows = {r["customerID"]: r["PaymentMethod"] for r in sdf.collect()}
    back = sdf.toPandas()

    # THEN Spark sees a null, not the text 'NaN' or 'None'
    assert rows["0002-B"] is None, arrow_mode
    assert sdf.filter(sdf.PaymentMethod.isNull()).count() == 1
    # AND pandas gets a missing value back, and the present values unchanged
    assert back["PaymentMethod"].isna().tolist() == [False, True, False]
    assert back.loc[back["customerID"] == "0001-A", "PaymentMethod"].item() == "Mailed check"
    assert "NaN" not in set(back["PaymentMethod"].dropna())
