import pytest


@pytest.fixture
def job(make_job, alice):
    return make_job(alice)
