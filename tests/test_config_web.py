"""
The C{[web]} section of the config file: L{WebConfig} and its validation.
"""

from __future__ import annotations

import pytest

from twisted_plugmgr._config import ConfigError, WebConfig, parse_config

FILE = "/etc/plugmgr/plugmgr.toml"


def parse(text):
    return parse_config(text, FILE)


def error(text) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        parse(text)
    assert "\n" not in str(info.value)
    return info.value


def test_no_web_section_is_none():
    assert parse("[manager]\n").web is None


def test_the_endpoint_alone():
    web = parse('[web]\nendpoint = "tcp:9180:interface=127.0.0.1"\n').web
    assert web == WebConfig(endpoint="tcp:9180:interface=127.0.0.1")
    assert web.token is None and web.token_file is None and web.metrics_public is False


def test_every_key():
    web = parse('[web]\nendpoint = "tcp:9180"\ntoken = "s3cret"\nmetrics_public = true\n').web
    assert web.token == "s3cret" and web.metrics_public is True


def test_the_token_file_is_relative_to_the_config_file():
    web = parse('[web]\nendpoint = "tcp:9180"\ntoken_file = "web-token"\n').web
    assert web.token_file == "/etc/plugmgr/web-token"


def test_a_unix_socket_is_relative_to_the_config_file():
    assert parse('[web]\nendpoint = "unix:address=web.sock"\n').web.endpoint == \
        "unix:address=/etc/plugmgr/web.sock"
    assert parse('[web]\nendpoint = "unix:web.sock"\n').web.endpoint == \
        "unix:/etc/plugmgr/web.sock"


def test_the_endpoint_is_required():
    e = error("[web]\ntoken = \"x\"\n")
    assert e.key == "web.endpoint" and "missing" in str(e)


@pytest.mark.parametrize("text, key, words", [
    ('[web]\nendpoint = 9180\n', "web.endpoint", "expected a string"),
    ('[web]\nendpoint = ""\n', "web.endpoint", "non-empty"),
    ('[web]\nendpoint = "tcp:notaport"\n', "web.endpoint", "server endpoint string"),
    ('[web]\nendpoint = "nosuchkind:1"\n', "web.endpoint", "Unknown endpoint type"),
    ('[web]\nendpoint = "tcp:9180"\nport = 1\n', "web.port", "unknown key"),
    ('[web]\nendpoint = "tcp:9180"\ntoken = 5\n', "web.token", "expected a string"),
    ('[web]\nendpoint = "tcp:9180"\ntoken = " "\n', "web.token", "non-empty"),
    ('[web]\nendpoint = "tcp:9180"\ntoken = "a\\nb"\n', "web.token", "line breaks"),
    ('[web]\nendpoint = "tcp:9180"\ntoken = "a"\ntoken_file = "b"\n', "web.token_file",
     "not both"),
    ('[web]\nendpoint = "tcp:9180"\nmetrics_public = "yes"\n', "web.metrics_public",
     "true or false"),
    ('web = 3\n', "web", "expected a table"),
])
def test_bad_values_name_the_key(text, key, words):
    e = error(text)
    assert e.key == key
    assert words in str(e)
    assert str(e).startswith(f"{FILE}: {key}: ")


def test_the_other_sections_are_untouched_by_web():
    config = parse('[manager]\npaths = ["p"]\n\n[web]\nendpoint = "tcp:9180"\n')
    assert config.manager.paths == ("/etc/plugmgr/p",)
    assert config.irc is None
