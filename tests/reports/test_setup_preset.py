"""The cover-report webhook as a ``bridge setup`` preset."""

from __future__ import annotations

import pytest

from bridge.errors import ConfigError
from bridge.pipelines.registry import ROUTES
from bridge.setup.presets import REPORT_ROUTE, ROUTE_EVENTS, builtin_layout, layout_from_dict, with_cover_report


def test_the_preset_route_is_a_bridge_route():
    assert REPORT_ROUTE in {r.path for r in ROUTES}
    assert ROUTE_EVENTS[REPORT_ROUTE] == ("update:task",)


@pytest.mark.parametrize("layout", ["3-stage", "2-stage", "1-stage"])
def test_with_cover_report_adds_one_webhook_to_the_coral_project(layout):
    base = builtin_layout(layout)
    once = with_cover_report(base, quadrat_cm=100)
    twice = with_cover_report(once, points=50)
    coral = twice.project("coral")
    hooks = [h for h in coral.webhooks if h.route == REPORT_ROUTE]
    assert len(hooks) == 1 and hooks[0].query_dict() == {"points": 50} and hooks[0].events == ("update:task",)
    assert len(coral.webhooks) == len(base.project("coral").webhooks) + 1
    assert [p.webhooks for p in twice.projects if p.key != "coral"] == [p.webhooks for p in base.projects
                                                                       if p.key != "coral"]


def test_layout_files_can_name_the_route_without_events_or_target():
    layout = layout_from_dict({"projects": [{"key": "c", "name": "corals", "labels": "coral_finegrained",
                                             "webhooks": [{"route": REPORT_ROUTE, "query": {"quadrat_cm": 50}}]}]})
    (hook,) = layout.project("c").webhooks
    assert hook.events == ("update:task",) and hook.target is None
    with pytest.raises(ConfigError):
        with_cover_report(layout, key="nope")
