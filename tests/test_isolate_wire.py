"""
How errors cross a worker boundary (L{_wire.encode_failure} and
L{_wire.decode_failure}), through a real pickle, with no process: the
attributes of this package's errors, and the plugin's own traceback of a
cause, as the manager's log shows it (L{for_the_log}).
"""

from __future__ import annotations

from twisted.python.failure import Failure

from twisted_plugmgr import CallTimedOut, InitFailed, InvalidMetadata, PluginCrashed
from twisted_plugmgr._isolate._wire import decode_failure, dumps, encode_failure, loads
from twisted_plugmgr._tracebacks import for_the_log


def across(failure: Failure) -> Failure:
    """C{failure} as the other side of the channel gets it."""
    return decode_failure("p", loads(dumps(encode_failure(failure))))


def test_call_timed_out_keeps_handler_and_seconds():
    got = across(Failure(CallTimedOut("b", "hang", 0.5))).value
    assert isinstance(got, CallTimedOut)
    assert (got.plugin, got.handler, got.seconds) == ("b", "hang", 0.5)
    assert str(got) == str(CallTimedOut("b", "hang", 0.5))


def test_plugin_crashed_keeps_exit_code_and_signal():
    got = across(Failure(PluginCrashed("b", None, 9))).value
    assert isinstance(got, PluginCrashed)
    assert (got.exit_code, got.signal) == (None, 9)


def test_invalid_metadata_keeps_its_problems():
    got = across(Failure(InvalidMetadata("b", ["no version"]))).value
    assert got.problems == ("no version",)


def _helper():
    return 1 / 0


def test_cause_traceback_is_the_plugins_own():
    """
    An L{InitFailed} caused by plugin code: decoded, its log failure is
    still the L{InitFailed}, and its traceback shows the plugin's frames
    (here: this file's C{_helper}) from the other side.
    """
    try:
        _helper()
    except ZeroDivisionError:
        cause = Failure()
    got = across(Failure(InitFailed("p", "the constructor raised", failure=cause)))
    shown = for_the_log(got)
    assert shown is not None and shown.check(InitFailed)
    text = shown.getTraceback()
    assert "in _helper" in text and "return 1 / 0" in text
    assert "ZeroDivisionError: division by zero" in text


def test_expected_error_without_a_cause_is_one_line():
    assert for_the_log(across(Failure(CallTimedOut("b", "hang", 0.5)))) is None
