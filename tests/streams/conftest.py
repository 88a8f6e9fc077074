"""Helpers for the streams tests: string serdes everywhere unless a test says otherwise."""

from __future__ import annotations

import pytest

from pylog.streams import Serdes, StreamsBuilder, TopologyTestDriver

S = Serdes.string()
L = Serdes.long()
CONFIG = {"application.id": "app", "default.key.serde": S, "default.value.serde": S}


@pytest.fixture
def builder() -> StreamsBuilder:
    return StreamsBuilder(CONFIG)


def driver_for(builder: StreamsBuilder, **kw) -> TopologyTestDriver:
    return TopologyTestDriver(builder.build(), CONFIG, initial_wall_clock_time_ms=kw.pop("wall", 0))
