"""Test helpers shared across the suite: a real PostgreSQL server harness and a PostgREST stand-in."""
