"""The inference tests share the trainers' fixtures: the demo base is built here once per run, never downloaded."""

from trainers.tests.conftest import demo_base  # noqa: F401 - a fixture, used by name
