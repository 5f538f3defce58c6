"""Fixtures shared by every suite. Real services come from the plugin modules below."""

pytest_plugins = ["tests.fixtures.services", "tests.fixtures.cluster"]
