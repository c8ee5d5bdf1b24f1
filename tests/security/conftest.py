import pytest

from .world import build_world


@pytest.fixture
def world(alice):
    return build_world(alice)
