"""One run outside Prefect (``memberpulse run``): the state checked first, the data dir's warning said before
the work, and Ctrl-C turned into what was committed and where the next run starts."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

from memberpulse.errors import CorruptState, Interrupted
from memberpulse.flows.reconcile._flow import check_data_dir, reconcile
from memberpulse.flows.reconcile._report import RunReport
from memberpulse.flows.reconcile._steps import check_state_readable
from memberpulse.flows.reconcile._store import Manifest, ReconcileStore
from memberpulse.flows.statestore import shared_state
from memberpulse.settings import Settings


def one_off_run(
    settings: Settings,
    *,
    as_of: datetime | None,
    full_refresh: bool,
    dry_run: bool = False,
    on_warning: Callable[[str], None] = lambda warning: None,
) -> RunReport:
    """The reconcile steps as plain calls (no Prefect API server to start or leave behind). Damaged state is
    named before any work (a full refresh replaces it); a data dir no one writes to is a warning, handed to
    ``on_warning`` at once and kept in the report. Ctrl-C raises :class:`Interrupted` saying what was
    committed."""
    try:
        with shared_state(settings, "run", write=not dry_run):  # the storage URL set: lease, cache, tree commit
            return _run(settings, as_of=as_of, full_refresh=full_refresh, dry_run=dry_run, on_warning=on_warning)
    except Interrupted:
        if settings.storage is None:
            raise
        raise Interrupted(  # the shared state's commit comes last: an interrupted run made none
            "interrupted: nothing of this run was committed to the shared state; the next run starts from its last "
            "commit"
        ) from None


def _run(
    settings: Settings,
    *,
    as_of: datetime | None,
    full_refresh: bool,
    dry_run: bool,
    on_warning: Callable[[str], None],
) -> RunReport:
    store = ReconcileStore(settings.warehouse_dir)
    check_state_readable(settings, store, full_refresh=full_refresh)  # damaged state: said before any work
    warning = check_data_dir(settings, deployment=False)
    if warning:
        on_warning(warning)
    try:
        before: Manifest | None = store.load_manifest()
    except CorruptState:  # a full refresh replaces it
        before = None
    try:
        return reconcile(
            settings, as_of=as_of, full_refresh=full_refresh, dry_run=dry_run, warnings=[warning] if warning else []
        )
    except KeyboardInterrupt:
        raise Interrupted(f"interrupted: {_what_was_committed(store, before)}") from None


def _what_was_committed(store: ReconcileStore, before: Manifest | None) -> str:
    """One line: whether this run's ingest was committed, and where the next run starts."""
    try:
        after = store.load_manifest()
    except CorruptState:  # named by the next run's own check
        return "the reconcile state could not be read back; the next run checks it first"
    if after == before or after.as_of is None:
        where = f"the last commit (as of {after.as_of})" if after.as_of else "the beginning of the raw store"
        return f"nothing of this run was committed; the next run starts from {where}"
    return (
        f"this run's ingest was committed (as of {after.as_of}); the next run publishes and snapshots what "
        "this one did not, and reads raw webhooks from where it stopped"
    )
