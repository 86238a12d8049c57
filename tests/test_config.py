"""
Tests for L{twisted_plugmgr._config}: the config file model and validation.
"""

from __future__ import annotations

import json
import math
import os

import attr
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from twisted_plugmgr._config import (
    Config,
    ConfigError,
    FloodConfig,
    IRCConfig,
    ManagerConfig,
    PluginConfig,
    default_control,
    endpoint_kind,
    join_endpoint,
    parse_config,
    resolve_unix_endpoint,
    split_endpoint,
)
from twisted_plugmgr._lifecycle import DEFAULT_DEADLINES, ShutdownMode
from twisted_plugmgr._policy import POLICY_KEYS, RestartPolicy

FILE = "/etc/plugmgr/plugmgr.toml"


def parse(text):
    return parse_config(text, FILE)


def error(text) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        parse(text)
    return info.value


FULL = """
[manager]
packages = ["myapp.plugins", "other"]
paths = ["plugins", "/abs/dir", "../up"]
watch = true
control = "unix:path=ctl.sock:mode=600"
shutdown_mode = "lazy"
deadlines = { immediate = 2, lazy = 30.5 }
start_deadline = 5
allow_shared_dir = true
control_token = "s3cret"

[plugins.hello]
data = { greeting = "hi", n = [1, 2] }

[plugins.slow]
enabled = false
data = 3

[irc]
server = "tcp:irc.example.org:6667"
nick = "plugbot"
channels = ["#a", "#b"]
owners = ["me!*@example.org"]
prefix = "."
flood = { rate = 0.5, burst = 3 }
data_dir = "ircdata"
password = "pw"
username = "bot"
realname = "Plug Bot"
"""


class TestValid:
    def test_empty_file_gives_defaults(self):
        config = parse("")
        assert config == Config(filename=FILE, base_dir="/etc/plugmgr")
        assert config.manager == ManagerConfig()
        assert dict(config.manager.deadlines) == dict(DEFAULT_DEADLINES)
        assert config.manager.shutdown_mode is ShutdownMode.SMART
        assert config.irc is None
        assert config.enabled() == ()

    def test_bytes_and_str_are_the_same(self):
        assert parse(FULL.encode("utf-8")) == parse(FULL)

    def test_manager_section(self):
        m = parse(FULL).manager
        assert m.packages == ("myapp.plugins", "other")
        assert m.paths == ("/etc/plugmgr/plugins", "/abs/dir", "/etc/up")
        assert m.watch is True
        assert m.shutdown_mode is ShutdownMode.LAZY
        assert dict(m.deadlines) == {
            ShutdownMode.IMMEDIATE: 2.0, ShutdownMode.SMART: 10.0, ShutdownMode.LAZY: 30.5,
        }
        assert m.start_deadline == 5.0
        assert m.allow_shared_dir is True
        assert m.control_token == "s3cret"

    def test_unix_control_path_is_relative_to_the_file(self):
        m = parse(FULL).manager
        assert split_endpoint(m.control) == (
            "unix", [], {"path": "/etc/plugmgr/ctl.sock", "mode": "600"}
        )

    def test_tcp_control_is_unchanged(self):
        m = parse('[manager]\ncontrol = "tcp:8123:interface=127.0.0.1"\n'
                  'control_token_file = "tok"\n').manager
        assert m.control == "tcp:8123:interface=127.0.0.1"
        assert m.control_token_file == "/etc/plugmgr/tok"

    def test_plugins_in_file_order_with_defaults(self):
        config = parse(FULL)
        assert list(config.plugins) == ["hello", "slow"]
        hello = config.plugins["hello"]
        assert hello.enabled is True
        assert hello.data == {"greeting": "hi", "n": [1, 2]}
        assert config.plugins["slow"].data == 3
        assert config.enabled() == ("hello",)

    def test_plugin_without_data(self):
        assert parse("[plugins.x]\n").plugins["x"].data is None

    def test_irc_section(self):
        irc = parse(FULL).irc
        assert irc == IRCConfig(
            server="tcp:irc.example.org:6667", nick="plugbot", channels=("#a", "#b"),
            owners=("me!*@example.org",), prefix=".", flood=FloodConfig(rate=0.5, burst=3),
            data_dir="/etc/plugmgr/ircdata", password="pw", username="bot",
            realname="Plug Bot",
        )

    def test_irc_defaults(self):
        irc = parse('[irc]\nserver = "tcp:h:6667"\nnick = "b"\n').irc
        assert irc.prefix == "!"
        assert irc.flood == FloodConfig()
        assert irc.channels == () and irc.owners == ()
        assert irc.data_dir is None and irc.password is None

    def test_base_dir_given(self):
        config = parse_config('[manager]\npaths = ["p"]\n', "x.toml", base_dir="/srv")
        assert config.manager.paths == ("/srv/p",)

    def test_relative_filename_resolves_against_cwd(self, tmp_path, monkeypatch):
        monkeypatch.chdir(tmp_path)
        config = parse_config('[manager]\npaths = ["p"]\n', "x.toml")
        assert config.manager.paths == (os.path.join(str(tmp_path), "p"),)

    def test_model_is_frozen(self):
        config = parse(FULL)
        with pytest.raises(AttributeError):
            config.manager = None
        with pytest.raises(TypeError):
            config.plugins["new"] = None


class TestErrors:
    """
    One test per kind of error; each checks the message names the file, the
    key and what was expected.
    """

    def test_invalid_toml(self):
        e = error("[manager\n")
        assert e.filename == FILE and e.key is None
        assert str(e).startswith(f"{FILE}: invalid TOML: ")
        assert "line 1" in str(e)

    def test_not_utf8(self):
        e = error(b"\xff\xfe[manager]")
        assert str(e) == f"{FILE}: expected UTF-8 text (invalid byte at offset 0)"

    def test_unknown_top_level_key(self):
        e = error("[managr]\n")
        assert e.key == "managr"
        assert str(e) == (f"{FILE}: managr: unknown key "
                          "(expected one of: manager, plugins, irc, web)")

    def test_unknown_manager_key(self):
        e = error("[manager]\nwatched = true\n")
        assert e.key == "manager.watched"
        assert "unknown key" in str(e) and "watch," in str(e)

    def test_unknown_plugin_key(self):
        e = error("[plugins.hello]\nenable = true\n")
        assert str(e) == (f"{FILE}: plugins.hello.enable: unknown key "
                          "(expected one of: enabled, data, restart, restart_delay, "
                          "restart_delay_max, restart_burst, restart_interval, fail_on_error, "
                          "isolate, call_deadline, limits)")

    def test_wrong_type_bool(self):
        e = error('[plugins.hello]\nenabled = "yes"\n')
        assert e.key == "plugins.hello.enabled"
        assert str(e) == (f"{FILE}: plugins.hello.enabled: expected true or false, "
                          "got a string 'yes'")

    def test_wrong_type_list(self):
        e = error('[manager]\npackages = "myapp.plugins"\n')
        assert str(e) == (f"{FILE}: manager.packages: expected an array of strings, "
                          "got a string 'myapp.plugins'")

    def test_wrong_type_list_item(self):
        e = error('[manager]\npaths = ["a", 3]\n')
        assert e.key == "manager.paths[1]"
        assert "expected a string, got an integer 3" in str(e)

    def test_section_not_a_table(self):
        e = error("manager = 3\n")
        assert str(e) == f"{FILE}: manager: expected a table, got an integer 3"

    def test_plugin_not_a_table(self):
        e = error("[plugins]\nhello = true\n")
        assert str(e) == f"{FILE}: plugins.hello: expected a table, got a boolean True"

    def test_invalid_plugin_name(self):
        e = error('[plugins."../x"]\n')
        assert e.key == 'plugins."../x"'
        assert "invalid plugin name (expected a Python identifier" in str(e)

    def test_keyword_plugin_name(self):
        e = error("[plugins.class]\n")
        assert "invalid plugin name" in str(e)

    def test_dotted_plugin_name_is_a_nested_table(self):
        # [plugins.a.b] is plugin "a" with an unknown key "b".
        e = error("[plugins.a.b]\n")
        assert e.key == "plugins.a.b"

    def test_invalid_package_name(self):
        e = error('[manager]\npackages = ["my-app.plugins"]\n')
        assert e.key == "manager.packages[0]"
        assert "expected a dotted Python package name" in str(e)

    def test_invalid_mode(self):
        e = error('[manager]\nshutdown_mode = "fast"\n')
        assert str(e) == (f"{FILE}: manager.shutdown_mode: expected one of 'immediate', "
                          "'smart', 'lazy', got a string 'fast'")

    def test_mode_case_insensitive(self):
        assert parse('[manager]\nshutdown_mode = "LAZY"\n').manager.shutdown_mode is \
            ShutdownMode.LAZY

    def test_unknown_deadline_mode(self):
        e = error("[manager]\ndeadlines = { fast = 1 }\n")
        assert str(e) == (f"{FILE}: manager.deadlines.fast: unknown key "
                          "(expected one of: immediate, smart, lazy)")

    @pytest.mark.parametrize("value", ["0", "-1", "nan", "inf", '"10"', "true"])
    def test_deadline_not_positive(self, value):
        e = error(f"[manager]\ndeadlines = {{ smart = {value} }}\n")
        assert e.key == "manager.deadlines.smart"
        assert "expected a positive number" in str(e)

    def test_start_deadline_not_positive(self):
        e = error("[manager]\nstart_deadline = 0\n")
        assert e.key == "manager.start_deadline"

    def test_empty_string(self):
        e = error('[manager]\ncontrol = ""\n')
        assert str(e) == f"{FILE}: manager.control: expected a non-empty string, got a string ''"

    def test_nul_in_path(self):
        e = error('[manager]\npaths = ["a\\u0000b"]\n')
        assert "without NUL" in str(e)

    def test_token_and_token_file(self):
        e = error('[manager]\ncontrol_token = "a"\ncontrol_token_file = "b"\n')
        assert "either control_token or control_token_file" in str(e)

    def test_irc_missing_required(self):
        e = error('[irc]\nserver = "tcp:h:6667"\n')
        assert str(e) == f"{FILE}: irc.nick: missing (required in the [irc] section)"

    def test_irc_unknown_key(self):
        e = error('[irc]\nserver = "tcp:h:6667"\nnick = "b"\nchannel = "#a"\n')
        assert e.key == "irc.channel"

    def test_irc_bad_nick(self):
        e = error('[irc]\nserver = "tcp:h:6667"\nnick = "a b"\n')
        assert e.key == "irc.nick"

    def test_irc_flood_burst_int(self):
        e = error('[irc]\nserver = "tcp:h:6667"\nnick = "b"\nflood = { burst = 1.5 }\n')
        assert str(e) == (f"{FILE}: irc.flood.burst: expected a positive integer, "
                          "got a float 1.5")

    def test_irc_channel_with_space(self):
        e = error('[irc]\nserver = "tcp:h:6667"\nnick = "b"\nchannels = ["#a b"]\n')
        assert e.key == "irc.channels[0]"

    def test_deep_nesting(self):
        e = error("x = " + "[" * 100000 + "]" * 100000)
        assert e.filename == FILE


#: The two kinds of section that take the restart policy keys: the TOML
#: before the key, and the key path messages name.
SECTIONS = [("[manager]\n", "manager"), ("[plugins.hello]\n", "plugins.hello")]


def section_of(config, where):
    return config.manager if where == "manager" else config.plugins["hello"]


class TestRestartPolicyKeys:
    """
    The restart policy keys of C{[manager]} and C{[plugins.NAME]}: optional,
    checked by L{RestartPolicy}'s rules, each error naming the file and the
    key.
    """

    def test_both_models_have_every_policy_key(self):
        for model in (ManagerConfig, PluginConfig):
            assert set(POLICY_KEYS) <= {f.name for f in attr.fields(model)}

    @pytest.mark.parametrize("header, where", SECTIONS)
    def test_absent_keys_are_not_given(self, header, where):
        section = section_of(parse(header), where)
        assert all(getattr(section, key) is None for key in POLICY_KEYS)
        assert section.policy() == {}

    @pytest.mark.parametrize("header, where", SECTIONS)
    def test_every_key_given(self, header, where):
        section = section_of(parse(header + """
            restart = "always"
            restart_delay = 0.5
            restart_delay_max = 60
            restart_burst = 3
            restart_interval = 20
            fail_on_error = true
        """.replace("    ", "")), where)
        expected = {
            "restart": "always", "restart_delay": 0.5, "restart_delay_max": 60.0,
            "restart_burst": 3, "restart_interval": 20.0, "fail_on_error": True,
        }
        assert section.policy() == expected
        assert tuple(section.policy()) == POLICY_KEYS
        assert {key: getattr(section, key) for key in POLICY_KEYS} == expected
        assert RestartPolicy().evolve(**section.policy()).as_dict() == expected

    @pytest.mark.parametrize("header, where", SECTIONS)
    @pytest.mark.parametrize("key, toml, value", [
        ("restart", '"no"', "no"),
        ("restart", '"on-failure"', "on-failure"),
        ("restart", '"always"', "always"),
        ("restart_delay", "0", 0.0),
        ("restart_delay", "2", 2.0),
        ("restart_delay_max", "0.25", 0.25),
        ("restart_burst", "0", 0),
        ("restart_burst", "10", 10),
        ("restart_interval", "0.5", 0.5),
        ("fail_on_error", "false", False),
        ("fail_on_error", "true", True),
    ])
    def test_one_key_alone(self, header, where, key, toml, value):
        section = section_of(parse(f"{header}{key} = {toml}\n"), where)
        assert section.policy() == {key: value}
        assert type(getattr(section, key)) is type(value)
        assert all(getattr(section, other) is None for other in POLICY_KEYS if other != key)

    def test_seconds_become_floats_and_burst_stays_an_integer(self):
        m = parse("[manager]\nrestart_delay = 1\nrestart_burst = 2\n").manager
        assert type(m.restart_delay) is float and type(m.restart_burst) is int

    def test_manager_and_plugin_keys_are_separate(self):
        config = parse('[manager]\nrestart = "no"\n[plugins.hello]\nrestart_burst = 1\n'
                       "[plugins.other]\n")
        assert config.manager.policy() == {"restart": "no"}
        assert config.plugins["hello"].policy() == {"restart_burst": 1}
        assert config.plugins["other"].policy() == {}

    @pytest.mark.parametrize("header, where", SECTIONS)
    @pytest.mark.parametrize("key, toml, expected", [
        ("restart", '"sometimes"',
         "expected one of 'no', 'on-failure', 'always', got a string 'sometimes'"),
        ("restart", '"NO"', "expected one of 'no', 'on-failure', 'always', got a string 'NO'"),
        ("restart", "false",
         "expected one of 'no', 'on-failure', 'always', got a boolean False"),
        ("restart", "1", "expected one of 'no', 'on-failure', 'always', got an integer 1"),
        ("restart_delay", "-1", "expected a number of seconds >= 0, got an integer -1"),
        ("restart_delay", '"1"', "expected a finite number of seconds, got a string '1'"),
        ("restart_delay", "true", "expected a finite number of seconds, got a boolean True"),
        ("restart_delay", "nan", "expected a finite number of seconds, got a float nan"),
        ("restart_delay_max", "inf", "expected a finite number of seconds, got a float inf"),
        ("restart_delay", "[1]", "expected a finite number of seconds, got an array [1]"),
        ("restart_delay_max", "-0.5", "expected a number of seconds >= 0, got a float -0.5"),
        ("restart_delay_max", "{ s = 1 }",
         "expected a finite number of seconds, got a table {'s': 1}"),
        ("restart_burst", "-1", "expected a whole number >= 0, got an integer -1"),
        ("restart_burst", "1.5", "expected a whole number >= 0, got a float 1.5"),
        ("restart_burst", "true", "expected a whole number >= 0, got a boolean True"),
        ("restart_burst", '"5"', "expected a whole number >= 0, got a string '5'"),
        ("restart_interval", "0", "expected a positive number of seconds, got an integer 0"),
        ("restart_interval", "-2.5",
         "expected a positive number of seconds, got a float -2.5"),
        ("restart_interval", '"10"', "expected a finite number of seconds, got a string '10'"),
        ("fail_on_error", '"yes"', "expected true or false, got a string 'yes'"),
        ("fail_on_error", "1", "expected true or false, got an integer 1"),
        ("fail_on_error", "1979-05-27",
         "expected true or false, got date datetime.date(1979, 5, 27)"),
    ])
    def test_bad_value(self, header, where, key, toml, expected):
        e = error(f"{header}{key} = {toml}\n")
        assert (e.filename, e.key) == (FILE, f"{where}.{key}")
        assert str(e) == f"{FILE}: {where}.{key}: {expected}"
        assert "\n" not in str(e)

    @pytest.mark.parametrize("header, where", SECTIONS)
    def test_the_first_bad_key_is_named(self, header, where):
        e = error(f'{header}restart_burst = -1\nrestart = "x"\n')
        assert e.key == f"{where}.restart"

    def test_a_bad_key_in_a_later_plugin_names_that_plugin(self):
        e = error('[plugins.good]\nrestart = "no"\n[plugins.bad]\nrestart = "nope"\n')
        assert e.key == "plugins.bad.restart"

    def test_an_unknown_manager_key_lists_the_policy_keys(self):
        e = error("[manager]\nrestart_delays = 1\n")
        assert e.key == "manager.restart_delays"
        assert str(e).endswith("allow_shared_dir, old_code_grace, log_tables, entry_points, restart, "
                               "restart_delay, "
                               "restart_delay_max, "
                               "restart_burst, restart_interval, fail_on_error)")

    def test_the_example_config_sets_policies(self):
        path = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                            "examples", "plugmgr.toml")
        with open(path, "rb") as f:
            config = parse_config(f.read(), path)
        assert config.manager.policy() == {"restart": "on-failure", "restart_burst": 5,
                                           "restart_interval": 60.0}
        assert config.plugins["reporter"].policy() == {"restart_delay": 1.0}
        assert config.plugins["greeter"].policy() == {}

    def test_a_policy_key_nested_elsewhere_is_unknown(self):
        e = error("[manager]\ndeadlines = { restart = 1 }\n")
        assert e.key == "manager.deadlines.restart"


class TestEndpoints:
    def test_split_and_join(self):
        desc = r"unix:path=/tmp/a\:b:mode=600"
        kind, args, kwargs = split_endpoint(desc)
        assert (kind, args, kwargs) == ("unix", [], {"path": "/tmp/a:b", "mode": "600"})
        assert join_endpoint(kind, args, kwargs) == desc

    def test_positional(self):
        assert split_endpoint("tcp:8080:interface=127.0.0.1") == (
            "tcp", ["8080"], {"interface": "127.0.0.1"}
        )

    def test_kind(self):
        assert endpoint_kind("UNIX:path=x") == "unix"
        assert endpoint_kind("tcp6:80") == "tcp6"

    def test_resolve_positional_unix(self):
        assert resolve_unix_endpoint("unix:sock", "/srv") == "unix:/srv/sock"

    def test_resolve_leaves_absolute(self):
        assert resolve_unix_endpoint("unix:path=/run/x.sock", "/srv") == "unix:path=/run/x.sock"

    def test_default_control(self):
        assert default_control("/srv") == "unix:path=/srv/plugmgr.sock"

    def test_empty_kind(self):
        with pytest.raises(ValueError):
            split_endpoint(":x")


# --- fuzzing: whatever the input, only ConfigError ----------------------------

def _toml_value(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return repr(value)
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    return "{" + ", ".join(f"{json.dumps(k)} = {_toml_value(v)}" for k, v in value.items()) + "}"


_KEYS = st.sampled_from(
    ["manager", "plugins", "irc", "packages", "paths", "watch", "control", "shutdown_mode",
     "deadlines", "immediate", "smart", "lazy", "start_deadline", "control_token",
     "control_token_file", "allow_shared_dir", "enabled", "data", "hello", "server", "nick",
     "channels", "owners", "prefix", "flood", "rate", "burst", "data_dir", "password",
     "username", "realname", "a.b", "", "class", *POLICY_KEYS]
) | st.text(max_size=8)

_SCALARS = (
    st.booleans() | st.integers() | st.floats() | st.text(max_size=12)
    | st.sampled_from(["smart", "lazy", "unix:path=x", "tcp:1", "#chan", "a!b@c", "pkg.mod",
                       "no", "on-failure", "always"])
)

_VALUES = st.recursive(
    _SCALARS,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(_KEYS, children, max_size=5),
    max_leaves=20,
)

_DOCUMENTS = st.dictionaries(_KEYS, _VALUES, max_size=4)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_DOCUMENTS)
def test_random_toml_gives_config_or_config_error(document):
    text = "".join(f"{json.dumps(k)} = {_toml_value(v)}\n" for k, v in document.items())
    try:
        parse(text)
    except ConfigError:
        pass


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200))
def test_random_bytes_give_config_or_config_error(data):
    try:
        parse(data)
    except ConfigError:
        pass


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet="[]{}=\"'.,#\n abcmnager0123plugins", max_size=80))
def test_random_text_gives_config_or_config_error(text):
    try:
        parse(text)
    except ConfigError:
        pass


@pytest.mark.parametrize("text, expected", [
    ("old_code_grace = 2.5", 2.5), ("old_code_grace = 10", 10.0), ("old_code_grace = false", False),
    ("", None),
])
def test_old_code_grace(tmp_path, text, expected):
    from twisted_plugmgr._config import parse_config

    config = parse_config(f"[manager]\n{text}\n", str(tmp_path / "plugmgr.toml"))
    assert config.manager.old_code_grace == expected


@pytest.mark.parametrize("value", ["true", "0", "-1", "'soon'"])
def test_a_bad_old_code_grace_is_refused_naming_the_key(tmp_path, value):
    from twisted_plugmgr._config import ConfigError, parse_config

    with pytest.raises(ConfigError, match="manager.old_code_grace"):
        parse_config(f"[manager]\nold_code_grace = {value}\n", str(tmp_path / "plugmgr.toml"))


# -- [irc]: SASL, permissions, abuse control, per-channel plugins, networks --

IRC = '[irc]\nserver = "tcp:h:6667"\nnick = "b"\n'


def test_irc_sasl_password_file_is_relative_to_the_config_file():
    irc = parse(IRC + 'sasl = { account = "bot", password_file = "pw.txt" }\n').irc
    assert irc.sasl.account == "bot" and irc.sasl.password_file == "/etc/plugmgr/pw.txt"
    assert irc.sasl.mechanism == "PLAIN" and irc.sasl.required is True


def test_irc_abuse_defaults_and_off():
    irc = parse(IRC).irc
    assert (irc.user_flood.rate, irc.user_flood.burst, irc.ignore_seconds) == (1.0, 5, 60.0)
    assert parse(IRC + "user_flood = false\n").irc.user_flood is None


def test_irc_networks_take_the_top_level_defaults_and_add_permissions():
    irc = parse('[irc]\nnick = "b"\nchannels = ["#a"]\n'
                '[irc.permissions]\nadmin = ["account:alice"]\n'
                '[irc.networks.libera]\nserver = "tcp:irc.libera.chat:6667"\n'
                '[irc.networks.libera.permissions]\nadmin = ["*!*@trusted.example"]\n'
                '[irc.networks.oftc]\nserver = "tcp:irc.oftc.net:6667"\nnick = "c"\n').irc
    libera, oftc = irc.networks
    assert (libera.name, libera.nick, libera.channels) == ("libera", "b", ("#a",))
    assert libera.permissions == {"admin": ("account:alice", "*!*@trusted.example")}
    assert (oftc.name, oftc.nick, oftc.permissions) == ("oftc", "c", {"admin": ("account:alice",)})


def test_irc_channel_plugins():
    irc = parse(IRC + '[irc.channel_plugins."#quiet"]\ndisabled = ["games"]\n').irc
    assert irc.channel_plugins["#quiet"].disabled == ("games",)


@pytest.mark.parametrize("text, message", [
    ('sasl = { account = "bot" }\n',
     'irc.sasl.password: expected one of password or password_file for SASL PLAIN'),
    ('sasl = { mechanism = "EXTERNAL" }\n',
     "irc.sasl.mechanism: EXTERNAL needs a tls: server with a client certificate "
     "(certificate=, privateKey=), got a string 'tcp:h:6667'"),
    ('sasl = { mechanism = "SCRAM", account = "a", password = "p" }\n',
     "irc.sasl.mechanism: expected PLAIN or EXTERNAL, got a string 'SCRAM'"),
    ('owners = ["alice"]\n',
     "irc.owners[0]: expected nick!user@host (wildcards allowed) or account:NAME, "
     "got a string 'alice'"),
    ('[irc.permissions]\nop = ["bob"]\n',
     "irc.permissions.op[0]: expected nick!user@host (wildcards allowed) or account:NAME, "
     "got a string 'bob'"),
    ('[irc.permissions]\nowner = ["account:a"]\n',
     "irc.permissions.owner: owner is given by the owners key, not here"),
    ('user_flood = { rate = 0 }\n', "irc.user_flood.rate: expected a positive number"),
    ('[irc.channel_plugins."#a"]\nenabled = ["x"]\ndisabled = ["y"]\n',
     'irc.channel_plugins."#a": expected one of enabled or disabled'),
    ('[irc.networks.x]\nnick = "q"\nprefix = "."\n',
     "irc.networks.x.prefix: unknown key (expected one of: server, nick, channels, owners, "
     "password, username, realname, sasl, permissions)"),
])
def test_irc_bad_values_name_the_section_and_key(text, message):
    e = error(IRC + text)
    assert str(e).startswith(f"{FILE}: {message}")


def test_irc_a_network_without_a_server_names_it():
    e = error('[irc]\nnick = "b"\n[irc.networks.x]\nchannels = []\n')
    assert str(e) == (f"{FILE}: irc.networks.x.server: missing (in the network, or as a "
                      "top-level [irc] default)")
