"""
A plugin's config schema (its C{Config}): L{data_for} on its own first
(types, defaults, every problem named by its dotted key), then through a
manager on a Clock (load, reload, restarts: what is left when the data is
refused), then an isolated plugin, validated in its real worker process.

This module's own annotations are strings (C{from __future__ import
annotations}): each Config below is resolved as a plugin's would be.
"""

from __future__ import annotations

import dataclasses
import os
import sys
import types
from typing import Any, Dict, List, Literal, Mapping, Optional, Sequence, Tuple, Union

import attr
import pytest
import pytest_twisted
from _workers import isolating_manager, shut_down, until, workers

from twisted_plugmgr import (
    DependencyError,
    InvalidData,
    InvalidMetadata,
    Plugin,
    PluginError,
    PluginManager,
    PluginState,
    ReloadFailed,
)
from twisted_plugmgr._schema import data_for
from twisted_plugmgr.testing import (
    FakePluginAPI,
    failure_of,
    make_plugin,
    plugin_modules,
    result_of,
    write_plugin,
)

# -- data_for: the schema on its own --------------------------------------------


class Irc(Plugin):
    """A plugin whose Config nests a table (a sibling class) and a list of them."""

    name = "irc"
    version = "1"

    @dataclasses.dataclass
    class Server:
        host: str
        port: int = 6667
        tls: bool = False

    @dataclasses.dataclass
    class Config:
        nick: str
        servers: List[Server]  # noqa: F821  (a sibling: resolved in the plugin class)
        level: Literal["debug", "info", "warn"] = "info"
        timeout: float = 30.0
        owner: Optional[str] = None
        channels: Dict[str, int] = dataclasses.field(default_factory=dict)
        limits: Tuple[int, int] = (10, 20)
        tags: Tuple[str, ...] = ()
        extra: Any = None


def problems_of(cls: type, data: Any) -> List[Tuple[str, str]]:
    """The (key, sentence) of each problem C{data_for} finds in C{data}."""
    with pytest.raises(InvalidData) as info:
        data_for(cls.name, cls, data)
    error = info.value
    assert error.plugin == cls.name and len(error.keys) == len(error.problems)
    return list(zip(error.keys, error.problems, strict=True))


def test_a_plugin_without_config_gets_its_data_as_given():
    class Plain(Plugin):
        name = "plain"
        version = "1"

    data = {"anything": [1, 2]}
    assert data_for("plain", Plain, data) is data
    assert data_for("plain", Plain, None) is None


def test_config_none_means_no_schema():
    class Opted(Irc):
        Config = None

    assert data_for("irc", Opted, {"x": 1}) == {"x": 1}


def test_data_becomes_an_instance_of_config_with_defaults():
    config = data_for("irc", Irc, {"nick": "bot", "servers": [{"host": "a"}, {"host": "b",
                                                                           "port": 7000}]})
    assert config == Irc.Config(nick="bot", servers=[Irc.Server("a"), Irc.Server("b", 7000)])
    assert (config.level, config.timeout, config.owner, config.channels) == ("info", 30.0, None, {})


def test_each_supported_type_converts():
    config = data_for("irc", Irc, {
        "nick": "bot", "servers": [], "level": "debug", "timeout": 5, "owner": "me",
        "channels": {"#a": 1}, "limits": [1, 2], "tags": ["x", "y"], "extra": {"free": [1]},
    })
    assert config.timeout == 5.0 and isinstance(config.timeout, float)
    assert config.limits == (1, 2) and config.tags == ("x", "y")
    assert config.channels == {"#a": 1} and config.extra == {"free": [1]}


def test_default_factories_give_each_instance_its_own():
    first = data_for("irc", Irc, {"nick": "a", "servers": []})
    second = data_for("irc", Irc, {"nick": "b", "servers": []})
    first.channels["#x"] = 1
    assert second.channels == {}


def test_the_data_given_is_not_changed():
    data: Dict[str, Any] = {"nick": "a", "servers": [{"host": "h"}], "channels": {"#c": 1}}
    config = data_for("irc", Irc, data)
    config.channels["#d"] = 2
    config.servers.append(Irc.Server("x"))
    assert data == {"nick": "a", "servers": [{"host": "h"}], "channels": {"#c": 1}}


def test_an_instance_of_config_is_taken_as_it_is():
    config = Irc.Config(nick="n", servers=[])
    assert data_for("irc", Irc, config) is config


def test_every_problem_is_named_by_its_dotted_key():
    assert problems_of(Irc, {
        "nick": 3,
        "servers": [{"host": "a"}, {"host": "b", "port": "x", "prot": 1}],
        "level": "loud",
        "timeout": "slow",
        "channels": {"#a": "one"},
        "limits": [1],
        "colour": "red",
    }) == [
        ("nick", "key 'nick': expected a string, got 3 (an integer)"),
        ("servers[1].port", "key 'servers[1].port': expected an integer, got 'x' (a string)"),
        ("servers[1].prot", "key 'servers[1].prot': unknown (known keys: host, port, tls)"),
        ("level", "key 'level': expected one of 'debug', 'info', 'warn', got 'loud' (a string)"),
        ("timeout", "key 'timeout': expected a number, got 'slow' (a string)"),
        ('channels."#a"', """key 'channels."#a"': expected an integer, got 'one' (a string)"""),
        ("limits", "key 'limits': expected a list of 2, got [1] (a list of 1)"),
        ("colour", "key 'colour': unknown (known keys: nick, servers, level, timeout, owner, "
                   "channels, limits, tags, extra)"),
    ]


def test_the_message_names_the_plugin_and_each_key():
    with pytest.raises(InvalidData) as info:
        data_for("irc", Irc, {"nick": "a", "servers": [{"host": 1}], "level": 2})
    assert str(info.value) == (
        "plugin 'irc': invalid data: key 'servers[0].host': expected a string, got 1 "
        "(an integer); key 'level': expected one of 'debug', 'info', 'warn', got 2 (an integer)")
    assert isinstance(info.value, PluginError) and "\n" not in str(info.value)


def test_no_data_is_no_keys_and_required_ones_are_reported():
    assert problems_of(Irc, None) == [
        ("nick", "key 'nick': missing (required: a string)"),
        ("servers", "key 'servers': missing (required: a list)"),
    ]


def test_no_data_with_all_defaults_works():
    class Defaults(Plugin):
        name = "defaults"
        version = "1"

        @dataclasses.dataclass
        class Config:
            greeting: str = "hi"

    assert data_for("defaults", Defaults, None) == Defaults.Config()
    assert data_for("defaults", Defaults, {}) == Defaults.Config()


@pytest.mark.parametrize("data, shown", [
    ([1, 2], "[1, 2] (a list of 2)"),
    ("nick = 'x'", "\"nick = 'x'\" (a string)"),
    (3, "3 (an integer)"),
])
def test_data_that_is_not_a_table(data, shown):
    assert problems_of(Irc, data) == [("", f"the data: expected a table, got {shown}")]


@pytest.mark.parametrize("value, ok", [
    (1, True), (0, True), (-3, True), (True, False), (1.0, False), ("1", False), (None, False),
])
def test_int_is_not_bool_nor_float(value, ok):
    data = {"nick": "n", "servers": [{"host": "h", "port": value}]}
    if ok:
        assert data_for("irc", Irc, data).servers[0].port == value
    else:
        assert [key for key, _ in problems_of(Irc, data)] == ["servers[0].port"]


@pytest.mark.parametrize("value, ok", [(True, True), (False, True), (1, False), ("true", False)])
def test_bool_is_only_true_or_false(value, ok):
    data = {"nick": "n", "servers": [{"host": "h", "tls": value}]}
    if ok:
        assert data_for("irc", Irc, data).servers[0].tls is value
    else:
        assert problems_of(Irc, data) == [
            ("servers[0].tls", f"key 'servers[0].tls': expected true or false, got {value!r} "
                               f"({'an integer' if value == 1 else 'a string'})")]


def test_float_takes_an_int_but_not_a_bool():
    assert data_for("irc", Irc, {"nick": "n", "servers": [], "timeout": 2}).timeout == 2.0
    assert problems_of(Irc, {"nick": "n", "servers": [], "timeout": True}) == [
        ("timeout", "key 'timeout': expected a number, got True (a boolean)")]


def test_literal_tells_true_from_one():
    class Lit(Plugin):
        name = "lit"
        version = "1"

        @dataclasses.dataclass
        class Config:
            level: Literal[1, 2] = 1

    assert data_for("lit", Lit, {"level": 2}).level == 2
    assert problems_of(Lit, {"level": True}) == [
        ("level", "key 'level': expected one of 1, 2, got True (a boolean)")]


class Unions(Plugin):
    name = "unions"
    version = "1"

    @dataclasses.dataclass
    class Where:
        path: str

    @dataclasses.dataclass
    class Config:
        port: Union[int, str] = 0
        either: int | None = None
        where: Optional[Where] = None  # noqa: F821


def test_unions_take_any_member():
    config = data_for("unions", Unions, {"port": "http", "either": None, "where": {"path": "/"}})
    assert (config.port, config.either, config.where) == ("http", None, Unions.Where("/"))
    assert data_for("unions", Unions, {"port": 80, "either": 3}).port == 80


def test_a_union_names_every_member():
    assert problems_of(Unions, {"port": 1.5, "either": "x"}) == [
        ("port", "key 'port': expected an integer or a string, got 1.5 (a float)"),
        ("either", "key 'either': expected an integer or None, got 'x' (a string)"),
    ]


def test_a_union_of_one_table_reports_inside_that_table():
    assert problems_of(Unions, {"where": {"path": 1, "mode": "r"}}) == [
        ("where.path", "key 'where.path': expected a string, got 1 (an integer)"),
        ("where.mode", "key 'where.mode': unknown (known keys: path)"),
    ]


def test_sequences_and_mappings_of_every_spelling():
    class Spellings(Plugin):
        name = "spellings"
        version = "1"

        @dataclasses.dataclass
        class Config:
            a: list[int] = dataclasses.field(default_factory=list)
            b: Sequence[str] = ()
            c: tuple[float, ...] = ()
            d: dict[str, bool] = dataclasses.field(default_factory=dict)
            e: Mapping[str, list[int]] = dataclasses.field(default_factory=dict)
            f: list = dataclasses.field(default_factory=list)
            g: dict = dataclasses.field(default_factory=dict)

    config = data_for("spellings", Spellings, {
        "a": [1], "b": ("x",), "c": [1, 2.5], "d": {"k": True}, "e": {"k": [1]},
        "f": [None, "any"], "g": {"k": object}})
    assert (config.a, config.b, config.c, config.d, config.e) == (
        [1], ["x"], (1.0, 2.5), {"k": True}, {"k": [1]})
    assert problems_of(Spellings, {"a": "123", "b": [1], "e": {"k": [1, "2"]}, "d": {1: True}}) == [
        ("a", "key 'a': expected a list, got '123' (a string)"),
        ("b[0]", "key 'b[0]': expected a string, got 1 (an integer)"),
        ("e.k[1]", "key 'e.k[1]': expected an integer, got '2' (a string)"),
        ("d[1]", "key 'd[1]': a key of this table must be a string"),
    ]


def test_an_instance_of_an_older_version_s_config_is_checked_as_its_keys():
    @dataclasses.dataclass
    class Server:  # the same names as Irc's, in another module: a version before a reload
        host: str
        port: int = 1

    Server.__qualname__ = "Irc.Server"
    config = data_for("irc", Irc, {"nick": "n", "servers": [Server("h", 2)]})
    assert config.servers == [Irc.Server("h", 2)]
    assert problems_of(Irc, {"nick": "n", "servers": [Server("h", "x")]}) == [
        ("servers[0].port", "key 'servers[0].port': expected an integer, got 'x' (a string)")]


def test_a_nested_table_given_as_an_instance_is_taken_as_it_is():
    server = Irc.Server("h")
    assert data_for("irc", Irc, {"nick": "n", "servers": [server]}).servers[0] is server


def test_long_values_are_shortened_on_one_line():
    [(key, sentence)] = problems_of(Irc, {"nick": ["x\n" * 100], "servers": []})
    assert key == "nick" and "\n" not in sentence and len(sentence) < 140


def test_attrs_config():
    @attr.s(auto_attribs=True)
    class Settings:
        port: int
        _secret: str = "s"
        retries: int = attr.ib(default=3, validator=attr.validators.ge(0))
        hosts: List[str] = attr.Factory(list)

    class Attrs(Plugin):
        name = "attrs"
        version = "1"
        Config = Settings

    config = data_for("attrs", Attrs, {"port": 1, "secret": "t"})
    assert config == Settings(port=1, secret="t", retries=3, hosts=[])
    assert problems_of(Attrs, {"port": "p", "_secret": "t", "hosts": [1]}) == [
        ("port", "key 'port': expected an integer, got 'p' (a string)"),
        ("_secret", "key '_secret': unknown (known keys: port, secret, retries, hosts)"),
        ("hosts[0]", "key 'hosts[0]': expected a string, got 1 (an integer)"),
    ]


@attr.s(auto_attribs=True)
class Checked:
    retries: int = attr.ib(default=3, validator=attr.validators.ge(0))


def test_the_config_s_own_checks_are_reported_as_its_key():
    class Attrs(Plugin):
        name = "attrs"
        version = "1"

        @dataclasses.dataclass
        class Config:
            inner: Checked

            def __post_init__(self) -> None:
                raise ValueError("never")

    assert problems_of(Attrs, {"inner": {"retries": -1}}) == [
        ("inner", "key 'inner': refused by Checked: ValueError: 'retries' must be >= 0: -1")]
    assert problems_of(Attrs, {"inner": {}}) == [
        ("", "the data: refused by test_the_config_s_own_checks_are_reported_as_its_key."
             "<locals>.Attrs.Config: ValueError: never")]


def test_an_attrs_converter_takes_the_value_as_given():
    @attr.s(auto_attribs=True)
    class Converted:
        port: int = attr.ib(converter=int, default=0)

    class Conv(Plugin):
        name = "conv"
        version = "1"
        Config = Converted

    assert data_for("conv", Conv, {"port": "8080"}).port == 8080


def test_a_config_may_refer_to_itself():
    class Tree(Plugin):
        name = "tree"
        version = "1"

        @dataclasses.dataclass
        class Config:
            label: str = ""
            children: List[Tree.Config] = dataclasses.field(default_factory=list)

    config = data_for("tree", Tree, {"label": "a", "children": [{"children": [{"label": "c"}]}]})
    assert config.children[0].children[0].label == "c"
    assert problems_of(Tree, {"children": [{"children": [{"label": 1}]}]}) == [
        ("children[0].children[0].label",
         "key 'children[0].children[0].label': expected a string, got 1 (an integer)")]


# -- data_for: schemas that are not ones ------------------------------------------


def metadata_problem(cls: type, data: Any = None) -> str:
    with pytest.raises(InvalidMetadata) as info:
        data_for(cls.name, cls, data)
    [problem] = info.value.problems
    return problem


@pytest.mark.parametrize("config, shown", [
    (dict, "dict"), (42, "42 (an integer)"), (type("Plain", (), {}), "Plain"),
])
def test_a_config_that_is_not_a_dataclass_or_attrs_class(config, shown):
    cls = type("Bad", (Plugin,), {"name": "bad", "version": "1", "Config": config})
    assert metadata_problem(cls) == (
        f"Bad.Config ({shown}) is not a dataclass or an attrs class")


@pytest.mark.parametrize("annotation, shown", [
    ("set[int]", "set[int] is not supported"),
    ("Dict[int, str]", "Dict[int, str] is not supported"),
    ("complex", "complex is not supported"),
    ("List[bytes]", "List[bytes] is not supported (bytes in it)"),
    ("Optional[object]", "Optional[object] is not supported (object in it)"),
])
def test_an_unsupported_annotation_names_class_field_and_annotation(annotation, shown):
    namespace: Dict[str, Any] = {"__annotations__": {"odd": annotation}, "odd": None}
    config = dataclasses.dataclass(type("Config", (), namespace))
    config.__qualname__ = "Odd.Config"
    cls = type("Odd", (Plugin,), {"name": "odd", "version": "1", "Config": config})
    # Refused whatever the data (its default included): the schema is checked first.
    problem = metadata_problem(cls, {})
    assert problem.startswith(f"Odd.Config field 'odd': annotation {shown} "
                              "(supported: str, int, float")


def test_an_annotation_that_cannot_be_resolved():
    class Unresolved(Plugin):
        name = "unresolved"
        version = "1"

        @dataclasses.dataclass
        class Config:
            x: NoSuchType  # noqa: F821

    assert metadata_problem(Unresolved) == (
        "test_an_annotation_that_cannot_be_resolved.<locals>.Unresolved.Config: its annotations "
        "cannot be resolved (NameError: name 'NoSuchType' is not defined)")


def module_from(source: str, name: str = "schema_plugin_module") -> types.ModuleType:
    """Run C{source} as module C{name} (in C{sys.modules} while the test runs)."""
    module = types.ModuleType(name)
    sys.modules[name] = module
    exec(compile(source, f"<{name}>", "exec"), module.__dict__)
    return module


@pytest.fixture
def modules():
    before = set(sys.modules)
    yield module_from
    for name in set(sys.modules) - before:
        del sys.modules[name]


@pytest.mark.parametrize("future", ["from __future__ import annotations", ""])
def test_annotations_resolve_in_the_plugin_module(modules, future):
    module = modules(f"""{future}
import dataclasses
from typing import Optional

Port = int

@dataclasses.dataclass
class Table:
    port: Port = 1

class P:
    name = "p"

    @dataclasses.dataclass
    class Config:
        table: Optional[Table] = None
        ports: "list[Port]" = dataclasses.field(default_factory=list)
""")
    config = data_for("p", module.P, {"table": {"port": 2}, "ports": [3]})
    assert (config.table.port, config.ports) == (2, [3])
    with pytest.raises(InvalidData, match=r"key 'ports\[0\]': expected an integer"):
        data_for("p", module.P, {"ports": ["x"]})


# -- through a manager on a Clock ----------------------------------------------


#: A plugin with a Config (module-level tables, as a plugin author would
#: write them), whose handlers tell what it was given.
GREETER = '''
import dataclasses
import os
from typing import List, Literal
from twisted_plugmgr import Plugin, handler

@dataclasses.dataclass
class Server:
    host: str
    port: int = 6667

@dataclasses.dataclass
class Settings:
    VERSION_FIELD
    greeting: str
    servers: List[Server] = dataclasses.field(default_factory=list)
    level: Literal["debug", "info"] = "info"

class P_greeter(Plugin):
    name = "greeter"
    version = "VERSION"
    Config = Settings

    @handler()
    def given(self):
        return self.data

    @handler()
    def broke(self):
        self.api.fail("upstream gone")

    @handler()
    def summary(self):
        return os.getpid(), dataclasses.asdict(self.data)
'''


def greeter(plugdir: Any, version: str = "1", field: str = "") -> None:
    source = GREETER.replace("VERSION_FIELD", field).replace("VERSION", version)
    (plugdir / "greeter.py").write_text(source)


GOOD = {"greeting": "hi", "servers": [{"host": "irc.example"}]}
BAD = {"greeting": 3, "servers": [{"host": "irc.example", "port": "x"}], "colour": "red"}


def assert_nothing_left(manager: Any, name: str) -> None:
    assert name not in manager.plugin_table()
    assert name not in manager.namedServices
    assert not [s for s in manager.services if getattr(s, "name", None) == name]
    assert not [m for m in plugin_modules(manager) if m.endswith("__" + name)]


def test_a_loaded_plugin_is_given_an_instance_of_its_config(env):
    manager, clock, events, plugdir = env
    greeter(plugdir)
    plugin = result_of(manager.load("greeter", GOOD))
    config = result_of(manager.call("greeter", "given"))
    assert config is plugin.data and type(config).__name__ == "Settings"
    assert (config.greeting, config.servers[0].host, config.servers[0].port, config.level) == (
        "hi", "irc.example", 6667, "info")


def test_a_load_with_bad_data_fails_with_every_problem_and_leaves_nothing(env, logged_failures):
    manager, clock, events, plugdir = env
    greeter(plugdir)
    failure = failure_of(manager.load("greeter", BAD), InvalidData)
    assert failure.value.keys == ("greeting", "servers[0].port", "colour")
    assert_nothing_left(manager, "greeter")
    [event] = [e for e in events.events if e.failure is not None]
    assert event.plugin == "greeter" and event.failure.check(InvalidData)
    assert event.message == str(failure.value)
    assert event.message.startswith(
        "plugin 'greeter': invalid data: key 'greeting': expected a string, got 3 (an integer); "
        "key 'servers[0].port': expected an integer, got 'x' (a string); key 'colour': unknown")
    assert "plugin_started" not in events.kinds()
    logged_failures.flush(InvalidData)
    # The same name loads once the data is right.
    greeter(plugdir)
    assert result_of(manager.load("greeter", GOOD)).data.greeting == "hi"


def test_a_config_that_cannot_be_a_schema_fails_the_load_as_invalid_metadata(env, logged_failures):
    manager, clock, events, plugdir = env
    write_plugin(plugdir, "odd", "Config = dict\n")
    failure = failure_of(manager.load("odd", {}), InvalidMetadata)
    assert failure.value.problems == ("P_odd.Config (dict) is not a dataclass or an attrs class",)
    assert_nothing_left(manager, "odd")
    assert [e.reason for e in events.of("plugin_invalid_values")] == ["invalid_metadata"]
    logged_failures.flush(InvalidMetadata)


def test_a_reload_with_bad_data_keeps_the_old_version_with_its_old_data(env, logged_failures):
    manager, clock, events, plugdir = env
    greeter(plugdir)
    old = result_of(manager.load("greeter", GOOD))
    greeter(plugdir, version="2")
    failure = failure_of(manager.reload("greeter", data=BAD), InvalidData)
    assert failure.value.keys == ("greeting", "servers[0].port", "colour")
    assert manager.getServiceNamed("greeter") is old and old.running
    assert result_of(manager.call("greeter", "given")).greeting == "hi"
    assert manager.plugin_table()["greeter"].version == "1"
    logged_failures.flush(InvalidData)
    # A reload with the data unchanged is checked again, and works.
    new = result_of(manager.reload("greeter"))
    # The new version's Settings, from the same data.
    assert type(new.data) is not type(old.data) and type(new.data).__module__ == type(new).__module__
    assert dataclasses.asdict(new.data) == dataclasses.asdict(old.data)
    assert manager.plugin_table()["greeter"].version == "2"


def test_a_reload_checks_the_unchanged_data_against_the_new_config(env, logged_failures):
    manager, clock, events, plugdir = env
    greeter(plugdir)
    old = result_of(manager.load("greeter", GOOD))
    greeter(plugdir, version="2", field="channel: str")  # a new required key
    failure = failure_of(manager.reload("greeter"), InvalidData)
    assert failure.value.problems == ("key 'channel': missing (required: a string)",)
    assert manager.getServiceNamed("greeter") is old and old.running
    assert manager.plugin_table()["greeter"].version == "1"
    logged_failures.flush(InvalidData)
    new = result_of(manager.reload("greeter", data=dict(GOOD, channel="#c")))
    assert new.data.channel == "#c" and manager.plugin_table()["greeter"].version == "2"


def test_a_restart_reuses_the_data_that_was_valid(env, logged_failures):
    manager, clock, events, plugdir = env
    greeter(plugdir)
    old = result_of(manager.load("greeter", GOOD, restart_delay=1))
    failure_of(manager.reload("greeter", data=BAD), InvalidData)
    logged_failures.flush(InvalidData)
    result_of(manager.call("greeter", "broke"))
    clock.advance(1)
    new = manager.getServiceNamed("greeter")
    assert new is not old and new.running
    assert new.data == old.data and new.data is not old.data  # a fresh Config of the same data
    assert "plugin_started" in events.kinds()




def test_a_plugin_loaded_with_an_instance_of_its_config_reloads_with_it(env):
    manager, clock, events, plugdir = env
    greeter(plugdir)
    config = result_of(manager.load("greeter", GOOD)).data
    result_of(manager.unload("greeter"))
    # An instance of the Settings of a version gone: taken as its keys.
    plugin = result_of(manager.load("greeter", config))
    assert type(plugin.data) is not type(config) and plugin.data.greeting == "hi"
    greeter(plugdir, version="2")
    new = result_of(manager.reload("greeter"))
    assert dataclasses.asdict(new.data) == dataclasses.asdict(config)


def test_a_transaction_with_refused_data_for_one_plugin_changes_none(env, logged_failures):
    manager, clock, events, plugdir = env
    greeter(plugdir)
    write_plugin(plugdir, "other")
    old = result_of(manager.load("greeter", GOOD))
    other = result_of(manager.load("other"))
    greeter(plugdir, version="2")
    write_plugin(plugdir, "other", version="2.0")
    failure = failure_of(manager.reload_many(["greeter", "other"], data={"greeter": BAD}),
                         ReloadFailed)
    cause = failure.value.failure
    assert cause is not None and cause.check(InvalidData)
    assert cause.value.keys == ("greeting", "servers[0].port", "colour")
    assert manager.getServiceNamed("greeter") is old and manager.getServiceNamed("other") is other
    assert [manager.plugin_table()[n].version for n in ("greeter", "other")] == ["1", "1.0"]
    assert result_of(manager.call("greeter", "given")).greeting == "hi"
    logged_failures.flush(InvalidData, ReloadFailed)

def quarantine(manager: PluginManager, clock: Any) -> None:
    """Make the greeter (loaded with a burst of one restart) fail into quarantine."""
    for _ in range(2):
        result_of(manager.call("greeter", "broke"))
        clock.advance(1)
    assert manager.plugin_table()["greeter"].state is PluginState.QUARANTINED


def test_a_quarantined_plugin_given_refused_data_keeps_its_data(env, logged_failures):
    """
    A load of a quarantined plugin with data its Config refuses: refused,
    and nothing changed -- still quarantined, its data, its restart policy
    and its restarts as they were; a reset then starts it with its data.
    """
    manager, clock, events, plugdir = env
    greeter(plugdir)
    result_of(manager.load("greeter", GOOD, restart="always", restart_burst=1,
                           restart_interval=100, restart_delay=1))
    quarantine(manager, clock)
    before = manager.plugin_table()["greeter"]
    seen = len(events.kinds())
    failure = failure_of(manager.load("greeter", BAD, restart="no"), InvalidData)
    assert failure.value.keys == ("greeting", "servers[0].port", "colour")
    logged_failures.flush(InvalidData)
    after = manager.plugin_table()["greeter"]
    assert after.state is PluginState.QUARANTINED
    assert (after.restarts, after.last_failure) == (before.restarts, before.last_failure)
    assert "plugin_failed" not in events.kinds()[seen:]
    assert "plugin_started" not in events.kinds()[seen:]
    clock.advance(10)
    assert manager.plugin_table()["greeter"].state is PluginState.QUARANTINED
    plugin = result_of(manager.reset("greeter"))
    assert plugin.data.greeting == "hi"
    # Its policy is still the one it was loaded with: it restarts.
    result_of(manager.call("greeter", "broke"))
    clock.advance(1)
    assert manager.getServiceNamed("greeter") is not plugin
    assert manager.plugin_table()["greeter"].state is PluginState.RUNNING


def test_a_quarantined_plugin_reloaded_with_refused_data_keeps_its_code(env, logged_failures):
    """
    A reload of a quarantined plugin with data the new version's Config
    refuses: refused, still quarantined, with its old code and data.
    """
    manager, clock, events, plugdir = env
    greeter(plugdir)
    result_of(manager.load("greeter", GOOD, restart="always", restart_burst=1,
                           restart_interval=100, restart_delay=1))
    quarantine(manager, clock)
    greeter(plugdir, version="2")
    failure_of(manager.reload("greeter", data=BAD), InvalidData)
    logged_failures.flush(InvalidData)
    assert manager.plugin_table()["greeter"].state is PluginState.QUARANTINED
    plugin = result_of(manager.reset("greeter"))
    assert plugin.data.greeting == "hi"
    assert manager.plugin_table()["greeter"].version == "1"
    # And a reload with good data gets the new code.
    quarantine(manager, clock)
    assert result_of(manager.reload("greeter", data=GOOD)).data.greeting == "hi"
    assert manager.plugin_table()["greeter"].version == "2"


def test_a_plugin_required_by_another_is_loaded_with_no_data(env, logged_failures):
    manager, clock, events, plugdir = env
    greeter(plugdir)
    write_plugin(plugdir, "front", "requires = ('greeter',)\n")
    failure = failure_of(manager.load("front"), DependencyError)
    assert "key 'greeting': missing (required: a string)" in str(failure.value)
    assert_nothing_left(manager, "front")
    assert_nothing_left(manager, "greeter")
    logged_failures.flush(InvalidData, DependencyError)


# -- an isolated plugin: its worker checks the data ------------------------------




@pytest.fixture
def isolating(tmp_path):
    """A manager on the real reactor, with the greeter; at teardown no worker may be left."""
    plugdir = tmp_path / "plugins"
    plugdir.mkdir()
    greeter(plugdir)
    manager = isolating_manager(plugdir)
    yield manager, plugdir
    shut_down(manager)


linux_only = pytest.mark.skipif(sys.platform != "linux", reason="worker processes: Linux")


@linux_only
@pytest_twisted.ensureDeferred
async def test_an_isolated_plugin_is_given_its_config_in_its_worker(isolating):
    manager, plugdir = isolating
    await manager.load("greeter", GOOD, isolate=True)
    pid, given = await manager.call("greeter", "summary")
    assert pid != os.getpid() and pid in workers()
    assert given == {"greeting": "hi", "servers": [{"host": "irc.example", "port": 6667}],
                     "level": "info"}


@linux_only
@pytest_twisted.ensureDeferred
async def test_an_isolated_load_with_bad_data_fails_in_its_worker_and_leaves_nothing(
        isolating, logged_failures):
    manager, plugdir = isolating
    with pytest.raises(InvalidData) as info:
        await manager.load("greeter", BAD, isolate=True)
    error = info.value
    assert (error.plugin, error.keys) == ("greeter", ("greeting", "servers[0].port", "colour"))
    assert error.problems[1] == "key 'servers[0].port': expected an integer, got 'x' (a string)"
    assert "greeter" not in manager.plugin_table() and "greeter" not in manager.namedServices
    await until(lambda: not workers(), 5.0)  # its worker is gone, and no spare is kept
    logged_failures.flush(InvalidData)


@linux_only
@pytest_twisted.ensureDeferred
async def test_an_isolated_reload_with_bad_data_keeps_the_old_worker_and_its_data(
        isolating, logged_failures):
    manager, plugdir = isolating
    await manager.load("greeter", GOOD, isolate=True)
    pid, given = await manager.call("greeter", "summary")
    greeter(plugdir, version="2", field="channel: str")
    with pytest.raises(InvalidData) as info:
        await manager.reload("greeter")  # the old data, against the new version's Config
    assert info.value.problems == ("key 'channel': missing (required: a string)",)
    with pytest.raises(InvalidData) as info:
        await manager.reload("greeter", data=BAD)
    assert info.value.keys == ("greeting", "servers[0].port", "colour", "channel")
    assert tuple(await manager.call("greeter", "summary")) == (pid, given)
    assert manager.plugin_table()["greeter"].version == "1"
    # Its worker, and the spare: the workers of the refused versions are gone.
    await until(lambda: pid in workers() and len(workers()) == 2, 5.0)
    logged_failures.flush(InvalidData)
    await manager.reload("greeter", data=dict(GOOD, channel="#c"))
    new_pid, given = await manager.call("greeter", "summary")
    assert new_pid != pid and given["channel"] == "#c"


@linux_only
@pytest_twisted.ensureDeferred
async def test_a_quarantined_isolated_plugin_given_refused_data_keeps_its_data(
        isolating, logged_failures):
    """
    Data refused by the worker of a quarantined isolated plugin: still
    quarantined, no worker left of the refused start; a reset starts it in
    a worker with its data.
    """
    manager, plugdir = isolating
    await manager.load("greeter", GOOD, isolate=True, restart="always", restart_burst=1,
                       restart_interval=100)
    await manager.call("greeter", "broke")
    await until(lambda: manager.info("greeter").restarts == 1 and
                manager.info("greeter").state is PluginState.RUNNING)
    await manager.call("greeter", "broke")
    await until(lambda: manager.info("greeter").state is PluginState.QUARANTINED)
    with pytest.raises(InvalidData):
        await manager.load("greeter", BAD)
    logged_failures.flush(InvalidData)
    assert manager.plugin_table()["greeter"].state is PluginState.QUARANTINED
    # At most the warm spare: the worker of the refused start is gone.
    await until(lambda: len(workers()) <= 1, 5.0)
    await manager.reset("greeter")
    pid, given = await manager.call("greeter", "summary")
    assert pid in workers() and given["greeting"] == "hi"



# -- twisted_plugmgr.testing: a plugin constructed without a manager ------------


def test_make_plugin_checks_the_data_as_a_load_would():
    plugin = make_plugin(Irc, {"nick": "n", "servers": [{"host": "h"}]})
    assert plugin.data == Irc.Config(nick="n", servers=[Irc.Server("h")])
    assert isinstance(plugin.api, FakePluginAPI) and plugin.api.name == "irc"
    assert not plugin.running
    with pytest.raises(InvalidData) as info:
        make_plugin(Irc, {"nick": 1, "servers": []}, api=FakePluginAPI("renamed"))
    assert info.value.plugin == "renamed" and info.value.keys == ("nick",)


def test_make_plugin_of_a_plugin_without_config_passes_the_data():
    class Plain(Plugin):
        name = "plain"
        version = "1"

    api = FakePluginAPI("plain")
    plugin = make_plugin(Plain, {"x": [1]}, api=api)
    assert plugin.data == {"x": [1]} and plugin.api is api
