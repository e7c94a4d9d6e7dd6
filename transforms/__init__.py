"""Pure polars transforms: raw records and API snapshots in, member state and scores out. No I/O, no clock."""
