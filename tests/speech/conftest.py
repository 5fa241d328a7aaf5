"""Fixtures of the speech tests: one Synthesizer with the bundled voice, loaded once."""
from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def synthesizer():
    from musetalk.speech import Synthesizer

    return Synthesizer()
