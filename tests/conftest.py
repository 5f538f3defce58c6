"""Fixtures shared by every suite. Real services come from the plugin modules below."""

from hypothesis import settings

pytest_plugins = ["tests.fixtures.services", "tests.fixtures.cluster"]

# Hypothesis fails an example that takes over 200 ms, which measures the machine, not the
# code: late in a CI run (Spark and the node's pods winding down on 2 cores) a correct example
# can take longer. The properties themselves are checked in full either way.
settings.register_profile("quantcore", deadline=None)
settings.load_profile("quantcore")
