"""The stream job's Spark schemas follow the quantcore.events records field for field."""

from __future__ import annotations

import pytest
from pyspark.sql.types import ArrayType, BooleanType, DoubleType, LongType, StringType

from quantcore.events import BookRecord, TradeRecord
from quantcore.stream.schema import required_fields, spark_schema


@pytest.mark.parametrize("model", [BookRecord, TradeRecord])
def test_schema_has_every_record_field_in_order(model):
    assert spark_schema(model).fieldNames() == list(model.model_fields)


def test_book_types_and_nullability():
    schema = {f.name: f for f in spark_schema(BookRecord).fields}
    assert schema["seq"].dataType == LongType()
    assert schema["symbol"].dataType == StringType()
    assert schema["tick_size"].dataType == DoubleType()
    assert schema["bid_px"].dataType == ArrayType(DoubleType(), containsNull=False)
    assert schema["prev_bid_px"].nullable
    assert not schema["bid_px"].nullable


def test_trade_aggressor_flag_is_boolean():
    schema = {f.name: f for f in spark_schema(TradeRecord).fields}
    assert schema["buyer_is_maker"].dataType == BooleanType()


def test_required_fields_leave_out_the_optional_previous_top():
    required = required_fields(BookRecord)
    assert "seq" in required
    assert "ask_qty" in required
    assert not {"prev_bid_px", "prev_bid_qty", "prev_ask_px", "prev_ask_qty"} & set(required)
