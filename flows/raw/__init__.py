"""Raw webhook history as the landing wrote it: ``reader`` reads the live NDJSON segments from byte offsets
(whole lines only), ``archive`` compacts ingested days into daily Parquet and reads all history back, live
and archived, for a full refresh or a recovery."""
