"""
Tests for the shell completion of C{plugmgr} (C{plugmgr completion
bash|zsh}): the generated bash script is sourced in a real C{bash}, with
C{COMP_WORDS}, C{COMP_CWORD}, C{COMP_LINE} and C{COMP_POINT} set as bash
sets them, and its C{COMPREPLY} read back; plugin names come from a control
service in C{tmp_path} (a fake manager). The zsh script is loaded in a real
C{zsh} when there is one.
"""

from __future__ import annotations

import os
import shlex
import shutil
import sys

import pytest
import pytest_twisted
import test_control
from _processes import environment
from _processes import timeout as process_timeout
from test_control import run_cli
from twisted.internet.defer import Deferred
from twisted.internet.utils import getProcessOutputAndValue

from twisted_plugmgr.testing import result_of

server = test_control.server

#: The installed console script, which the script runs for plugin names.
PLUGMGR = os.path.join(os.path.dirname(sys.executable), "plugmgr")

BASH = shutil.which("bash")


@pytest.fixture(scope="module")
def script(tmp_path_factory):
    """
    The bash script, as C{plugmgr completion bash} prints it.
    """
    path = tmp_path_factory.mktemp("completion") / "plugmgr.bash"
    code, out, err = pytest_twisted.blockon(Deferred.fromCoroutine(run_cli("completion",
                                                                           "bash")))
    assert (code, err) == (0, "")
    path.write_text(out)
    return path


async def complete(script, line: str, program: str = "plugmgr"):
    """
    What the bash script completes C{line} (the cursor at its end) with.
    """
    words = line.split()
    if line.endswith(" ") or not words:
        words.append("")
    words[0] = program
    command_line = " ".join(shlex.quote(w) for w in [program] + line.split()[1:])
    if line.endswith(" "):
        command_line += " "
    shell = (
        f"source {shlex.quote(str(script))}\n"
        f"COMP_WORDS=({' '.join(shlex.quote(w) for w in words)})\n"
        f"COMP_CWORD={len(words) - 1}\n"
        f"COMP_LINE={shlex.quote(command_line)}\n"
        "COMP_POINT=${#COMP_LINE}\n"
        "_plugmgr\n"
        "printf '%s\\n' \"${COMPREPLY[@]}\"\n"
    )
    out, err, code = await process_timeout(getProcessOutputAndValue(
        BASH, ["--norc", "--noprofile", "-c", shell], env=environment()))
    assert (code, err) == (0, b""), err
    return [w for w in out.decode().split("\n") if w]


pytestmark = pytest.mark.skipif(BASH is None, reason="no bash")


@pytest_twisted.ensureDeferred
async def test_commands(script):
    assert await complete(script, "plugmgr re") == ["reload", "reload-changed", "reset",
                                                    "reconfig", "ready"]
    assert "checkconfig" in await complete(script, "plugmgr ")


@pytest_twisted.ensureDeferred
async def test_global_options_before_the_command(script):
    assert await complete(script, "plugmgr --t") == ["--token", "--token-file", "--timeout"]


@pytest_twisted.ensureDeferred
async def test_a_commands_options_and_the_global_ones_after_it(script):
    options = await complete(script, "plugmgr --json unload --")
    assert options[:3] == ["--help", "--mode", "--reason"]
    assert "--control" in options and "--json" in options
    assert await complete(script, "plugmgr load x --restart-d") == ["--restart-delay",
                                                                   "--restart-delay-max"]


@pytest_twisted.ensureDeferred
async def test_option_values_with_choices(script):
    assert await complete(script, "plugmgr shutdown --mode ") == ["immediate", "smart", "lazy"]
    assert await complete(script, "plugmgr load x --restart a") == ["always"]
    assert await complete(script, "plugmgr completion ") == ["bash", "zsh"]


@pytest_twisted.ensureDeferred
async def test_an_option_value_without_choices_completes_nothing(script):
    assert await complete(script, "plugmgr --timeout ") == []


@pytest_twisted.ensureDeferred
async def test_config_file_names(script, tmp_path):
    (tmp_path / "plugmgr.toml").write_text("")
    assert await complete(script, f"plugmgr --config {tmp_path}/plug") == [
        f"{tmp_path}/plugmgr.toml"]
    assert await complete(script, f"plugmgr checkconfig {tmp_path}/plug") == [
        f"{tmp_path}/plugmgr.toml"]


@pytest_twisted.ensureDeferred
async def test_the_offline_commands_options(script, tmp_path):
    assert await complete(script, "plugmgr checkconfig --p") == ["--plugins"]
    options = await complete(script, "plugmgr new hello --")
    assert options[:3] == ["--help", "--irc", "--dir"]
    (tmp_path / "src").mkdir()
    (tmp_path / "setup.cfg").write_text("")
    # --dir completes directories only.
    assert await complete(script, f"plugmgr new hello --dir {tmp_path}/s") == [f"{tmp_path}/src"]


needs_plugmgr = pytest.mark.skipif(not os.access(PLUGMGR, os.X_OK),
                                   reason="the plugmgr console script is not installed")


@needs_plugmgr
@pytest_twisted.ensureDeferred
async def test_plugin_names_from_the_running_manager(script, server):
    result_of(server.manager.load("hello"))
    line = f"plugmgr --control unix:path={server.path} reload "
    assert await complete(script, line, PLUGMGR) == ["a", "b", "hello"]
    assert await complete(script, f"plugmgr --control unix:path={server.path} info h",
                          PLUGMGR) == ["hello"]
    # A command taking one plugin name completes only the first argument.
    assert await complete(script, f"plugmgr --control unix:path={server.path} call hello ",
                          PLUGMGR) == []


@needs_plugmgr
@pytest_twisted.ensureDeferred
async def test_plugin_names_without_a_manager_are_nothing_silently(script, tmp_path):
    line = f"plugmgr --control unix:path={tmp_path}/none.sock unload "
    assert await complete(script, line, PLUGMGR) == []


ZSH = shutil.which("zsh")


@pytest.mark.skipif(ZSH is None, reason="no zsh")
@pytest_twisted.ensureDeferred
async def test_zsh_script_loads_and_registers(tmp_path):
    code, out, err = await run_cli("completion", "zsh")
    assert code == 0
    path = tmp_path / "_plugmgr"
    path.write_text(out)
    shell = (f"autoload -U compinit && compinit -u\nsource {shlex.quote(str(path))}\n"
             "print -r -- ${_comps[plugmgr]}\n")
    out, err, code = await process_timeout(getProcessOutputAndValue(
        ZSH, ["-f", "-c", shell], env=environment()))
    assert code == 0, err
    assert out.decode().strip() == "_bash_complete -F _plugmgr"


@pytest_twisted.ensureDeferred
async def test_zsh_script_is_the_bash_one_through_bashcompinit():
    code, zsh, err = await run_cli("completion", "zsh")
    code, bash, err = await run_cli("completion", "bash")
    assert zsh.startswith("#compdef plugmgr\n")
    assert "bashcompinit" in zsh
    assert zsh.endswith(bash.split("\n", 1)[1])
