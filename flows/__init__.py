"""Prefect flows and the I/O edges they compose: Whop client, publishers, snapshot writer."""

if __name__ != "memberpulse.flows":  # flows/ is installed only under the memberpulse namespace
    raise ImportError(f"import memberpulse.flows, not {__name__}")
