"""
Hypothesis profiles of the fault-tolerance tests (test_faults, test_stateful,
test_fuzz, test_security).

Two profiles, chosen with the C{HYPOTHESIS_PROFILE} environment variable:

  - C{ci} (the default): enough examples to matter, small enough that all
    the fault-tolerance tests together take well under a minute on two
    cores;
  - C{long}: a nightly-style run, ten to twenty times as many examples
    and longer stateful runs (about ten minutes)::

        HYPOTHESIS_PROFILE=long .venv/bin/pytest tests/test_stateful.py tests/test_fuzz.py

Both are registered with Hypothesis (so C{--hypothesis-profile} also works)
and the chosen one is loaded. The tests do not use the profile's
C{max_examples} directly: each kind of test asks L{budget} for its own
settings, scaled by the profile.
"""

from __future__ import annotations

import os

from hypothesis import HealthCheck, settings

__all__ = ["PROFILE", "budget", "stateful"]

_COMMON = dict(
    deadline=None,
    print_blob=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)

settings.register_profile("ci", max_examples=100, **_COMMON)
settings.register_profile("long", max_examples=2000, **_COMMON)

#: The profile in use.
PROFILE = os.environ.get("HYPOTHESIS_PROFILE", "ci")
if PROFILE not in ("ci", "long"):
    PROFILE = "ci"
settings.load_profile(PROFILE)

#: Examples per kind of test, per profile.
_EXAMPLES = {
    "ci": {"cheap": 500, "fuzz": 300, "io": 100, "stateful": 150},
    "long": {"cheap": 10000, "fuzz": 10000, "io": 2000, "stateful": 5000},
}

#: Steps per stateful example, per profile.
_STEPS = {"ci": 30, "long": 60}


def budget(kind: str) -> settings:
    """
    The settings of a test of C{kind}: C{"cheap"} (pure functions),
    C{"fuzz"} (a manager on a Clock, or an in-memory connection), C{"io"}
    (writes files, or imports and loads a plugin, for each example),
    C{"stateful"} (see L{stateful}).
    """
    return settings(settings.get_profile(PROFILE), max_examples=_EXAMPLES[PROFILE][kind])


def stateful() -> settings:
    """
    The settings of the rule-based state machine: examples and steps per
    example scaled by the profile.
    """
    return settings(
        settings.get_profile(PROFILE),
        max_examples=_EXAMPLES[PROFILE]["stateful"],
        stateful_step_count=_STEPS[PROFILE],
    )
