"""
C{plugin_table} events are logged only when asked: C{PluginManager(log_tables=True)}
or C{log_tables = true} in C{[manager]}.
"""

import pytest
from twisted.logger import globalLogPublisher

from twisted_plugmgr._config import ConfigError, parse_config
from twisted_plugmgr.testing import clock_manager, result_of, write_plugin


@pytest.fixture
def logged():
    events = []
    globalLogPublisher.addObserver(events.append)
    yield events
    globalLogPublisher.removeObserver(events.append)


def tables(events):
    return [e for e in events if e.get("kind") == "plugin_table"]


@pytest.mark.parametrize("log_tables", [False, True])
def test_plugin_table_events_are_logged_only_when_asked(plugdir, logged, log_tables):
    manager, clock, recorder = clock_manager(paths=[plugdir], log_tables=log_tables)
    write_plugin(plugdir, "p")
    result_of(manager.load("p"))
    manager.plugin_table()
    assert [e.kind for e in recorder.events].count("plugin_table") == 1  # always broadcast
    shown = tables(logged)
    if log_tables:
        assert len(shown) == 1 and shown[0]["log_level"].name == "debug"
    else:
        assert shown == []
    result_of(manager.unload("p"))


@pytest.mark.parametrize("text, expected", [("log_tables = true", True),
                                            ("log_tables = false", False), ("", False)])
def test_log_tables_in_the_manager_section(tmp_path, text, expected):
    config = parse_config(f"[manager]\n{text}\n", str(tmp_path / "plugmgr.toml"))
    assert config.manager.log_tables is expected


def test_a_bad_log_tables_is_refused_naming_the_key(tmp_path):
    with pytest.raises(ConfigError, match="manager.log_tables"):
        parse_config("[manager]\nlog_tables = 'yes'\n", str(tmp_path / "plugmgr.toml"))


def test_twist_plugmgr_passes_log_tables_to_its_manager(tmp_path, logged):
    from twisted.internet import reactor

    from twisted_plugmgr._tap import Options, PlugmgrService

    config = tmp_path / "plugmgr.toml"
    config.write_text("[manager]\nlog_tables = true\n")
    options = Options()
    options.parseOptions(["--config", str(config)])
    service = PlugmgrService(options["settings"], reactor, handle_signals=False)
    service.manager.plugin_table()
    assert len(tables(logged)) == 1
