"""pytest configuration shared by all tests."""

from hypothesis import settings

# Modest example counts keep the whole suite within its time budget on 2 cores.
settings.register_profile("ci", max_examples=25, deadline=None)
settings.load_profile("ci")
