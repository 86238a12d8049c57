"""
Restart policies: validation that names the key, layering, backoff, and the
sliding window of restarts.
"""

import pytest

from twisted_plugmgr._policy import POLICY_KEYS, RestartPolicy, RestartWindow, class_policy


def test_the_defaults_are_systemds_habits():
    policy = RestartPolicy()
    assert policy.as_dict() == {
        "restart": "on-failure", "restart_delay": 0.1, "restart_delay_max": 30.0,
        "restart_burst": 5, "restart_interval": 10.0, "fail_on_error": False,
    }
    assert tuple(policy.as_dict()) == POLICY_KEYS


@pytest.mark.parametrize("key, value", [
    ("restart", "sometimes"), ("restart", None), ("restart_delay", -1), ("restart_delay", "1"),
    ("restart_delay", True), ("restart_delay_max", float("nan")), ("restart_burst", 1.5),
    ("restart_burst", -1), ("restart_interval", 0), ("fail_on_error", "yes"),
    ("restart_delay", float("inf")), ("restart_delay_max", float("inf")),
    ("restart_interval", float("inf")), ("restart", "On-Failure"),
])
def test_a_bad_value_is_refused_naming_the_key(key, value):
    with pytest.raises(ValueError, match=key):
        RestartPolicy(**{key: value})
    with pytest.raises(ValueError, match=key):
        RestartPolicy().evolve(**{key: value}) if value is not None else RestartPolicy(restart=None)


def test_an_unknown_key_is_refused():
    with pytest.raises(ValueError, match="unknown restart policy key 'restrat'"):
        RestartPolicy().evolve(restrat="no")


def test_layers_apply_in_order_and_none_keeps():
    base = RestartPolicy(restart="always")
    policy = base.over({"restart": "no", "restart_burst": 2}, None, {"restart_burst": 3},
                       {"restart": None})
    assert (policy.restart, policy.restart_burst) == ("no", 3)
    assert base.restart == "always"


def test_restarts_after():
    assert not RestartPolicy(restart="no").restarts_after(clean=False)
    assert RestartPolicy(restart="on-failure").restarts_after(clean=False)
    assert not RestartPolicy(restart="on-failure").restarts_after(clean=True)
    assert RestartPolicy(restart="always").restarts_after(clean=True)


def test_the_delay_doubles_and_is_capped():
    policy = RestartPolicy(restart_delay=0.1, restart_delay_max=1.0)
    assert [policy.delay(n) for n in range(6)] == [0.1, 0.2, 0.4, 0.8, 1.0, 1.0]
    assert policy.delay(10_000) == 1.0
    assert RestartPolicy(restart_delay=0).delay(3) == 0.0


def test_the_window_slides():
    window = RestartWindow()
    for t in (0, 1, 2):
        window.add(t)
    assert window.count(now=2.5, interval=10) == 3
    assert window.count(now=10.5, interval=10) == 2  # the one at 0 is out
    assert window.count(now=100, interval=10) == 0
    window.add(100)
    window.clear()
    assert window.count(now=100, interval=10) == 0


def test_class_policy_takes_what_the_class_sets():
    class P:
        restart = "always"
        restart_burst = None

    class Raising(type):
        def __getattribute__(cls, name):
            if name == "restart":
                raise RuntimeError("plugin code")
            return super().__getattribute__(name)

    class Q(metaclass=Raising):
        fail_on_error = True

    assert class_policy(P) == {"restart": "always"}
    assert class_policy(Q) == {"fail_on_error": True}
