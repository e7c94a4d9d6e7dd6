"""Prefect flows and the I/O edges they compose: Whop client, publishers, snapshot writer."""
