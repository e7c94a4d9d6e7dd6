"""Conform a polars frame to a schema: the one way every stage takes a frame it did not build itself."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import polars as pl

from memberpulse.errors import InvalidInput


def conform(
    frame: pl.DataFrame | None,
    schema: Mapping[str, pl.DataType],
    *,
    required: Sequence[str] = (),
    what: str = "frame",
    hint: str | None = None,
) -> pl.DataFrame:
    """Exactly ``schema``'s columns, in its order and types; a missing column is all null, extra ones dropped.

    ``None`` gives an empty frame of the schema. A column named in ``required`` must be present (InvalidInput
    naming ``what`` otherwise). Casts are strict: a value that does not fit raises.
    """
    if frame is not None:
        missing = [name for name in required if name not in frame.columns]
        if missing:
            raise InvalidInput(f"{what} lacks required column(s) {missing}", value=frame.columns, hint=hint)
    if frame is None:
        return pl.DataFrame(schema=dict(schema))
    return frame.select(
        [
            pl.col(name).cast(dtype) if name in frame.columns else pl.lit(None, dtype=dtype).alias(name)
            for name, dtype in schema.items()
        ]
    )
