"""The pytest plugin's library half: the test server's config, and a template per database for its current sources."""

from __future__ import annotations

from collections.abc import Sequence

from .. import session
from ..builds.pipeline import ensure_template, prune_templates
from ..config import Config
from ..errors import DriftDetected
from ..events import Event, EventFn, ignore
from ..results import TemplateSet
from ..targets import make_target
from . import recycling
from .pool import remove_dead_copies


def config_for_tests(cfg: Config) -> Config:
    """The config a test run uses: for the docker target its own container `<container>-test` on a
    free port, data in memory, fsync and friends off; a server target is used as it is."""
    return make_target(cfg).for_tests()


def ensure_templates(
    cfg: Config, names: Sequence[str] = (), *, on_event: EventFn | None = None, remove_dead: bool = True
) -> TemplateSet:
    """Bring the server up and make sure each database has a template for its current sources.

    A template is rebuilt only when its content hash changes. Serialised by the server-wide
    lock, so parallel test workers build each template once. Also drops pool copies left by
    test sessions that died, or kept by them for debugging (unless not `remove_dead`).
    """
    emit = on_event or ignore
    plans = session.selected(cfg, names, False)
    throwaway = make_target(cfg).throwaway
    try:
        server, up_result = session.ready(cfg, on_event=emit)
    except DriftDetected as exc:
        if not throwaway:
            raise
        # provision's own test server holds nothing a rebuild loses.
        emit(Event("info", f"{exc}; recreating the test server"))
        server, up_result = session.ready(cfg, recreate=True, on_event=emit)
    with session.holding_lock(cfg, server, "templates", emit) as lock_conn:
        templates = {plan.name: ensure_template(server, plan, emit) for plan in plans}
        for name, tpl in templates.items():
            prune_templates(lock_conn, name, cfg.keep_templates, tpl, emit)
        if remove_dead:
            remove_dead_copies(lock_conn, [plan.name for plan in plans], server.endpoint)
        if throwaway:
            # provision's own throwaway test server: pool copies a test left unchanged are reused.
            recycling.enable(lock_conn)
    return TemplateSet(server.endpoint, templates, up_result)
