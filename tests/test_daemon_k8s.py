"""
The Kubernetes example (examples/k8s/): its YAML read with a YAML parser
when one is installed (none is a dependency), else as plain text; the
ConfigMap's config checked by the manager's own parser and run for real by
C{twist plugmgr}, SIGTERM ending it with status 0.
"""

from __future__ import annotations

import ast
import os
import re
import textwrap
from typing import Dict, List

import pytest_twisted
from _processes import REPO, Daemon, make_home
from twisted.internet.defer import Deferred

from twisted_plugmgr._config import parse_config
from twisted_plugmgr._lifecycle import ShutdownMode

K8S = os.path.join(REPO, "examples", "k8s")


def read(name: str) -> str:
    with open(os.path.join(K8S, name)) as f:
        return f.read()


def config_text() -> str:
    """
    The plugmgr.toml of the ConfigMap (its block scalar, dedented).
    """
    text = read("configmap.yaml")
    try:
        import yaml  # type: ignore[import-not-found]
    except ImportError:
        match = re.search(r"^  plugmgr\.toml: \|\n((?:    .*\n|\n)+)", text, re.M)
        assert match, "the ConfigMap holds plugmgr.toml as a block"
        return textwrap.dedent(match.group(1))
    return yaml.safe_load(text)["data"]["plugmgr.toml"]


def stages(plugins: List[str]) -> int:
    """
    How many stages a shutdown of C{plugins} (examples/plugins) takes: the
    longest chain of C{requires}, read from the files without importing.
    """
    requires: Dict[str, tuple] = {}
    for name in plugins:
        tree = ast.parse(open(os.path.join(REPO, "examples", "plugins", f"{name}.py")).read())
        requires[name] = ()
        for node in ast.walk(tree):
            if isinstance(node, ast.Assign) and any(
                    getattr(t, "id", None) == "requires" for t in node.targets):
                requires[name] = ast.literal_eval(node.value)

    def depth(name: str) -> int:
        return 1 + max((depth(r) for r in requires.get(name, ()) if r in requires), default=0)

    return max(depth(name) for name in plugins)


def test_the_configmap_holds_a_valid_config():
    config = parse_config(config_text(), "/etc/plugmgr/plugmgr.toml")
    assert config.manager.paths == ("/app/plugins",)
    assert config.manager.shutdown_mode is ShutdownMode.LAZY
    assert config.manager.control == "unix:path=/run/plugmgr/plugmgr.sock"
    assert config.enabled() == ("greeter", "reporter", "archiver")


def test_the_grace_period_covers_the_staged_lazy_shutdown():
    config = parse_config(config_text(), "/etc/plugmgr/plugmgr.toml")
    text = read("deployment.yaml")
    (grace,) = re.findall(r"^\s*terminationGracePeriodSeconds: (\d+)$", text, re.M)
    lazy = config.manager.deadlines[ShutdownMode.LAZY]
    n = stages(list(config.enabled()))
    assert n == 2
    # The comment beside it says the same.
    assert f"lazy deadline ({lazy:g} s) x {n} stages + 10 s" in text
    assert int(grace) == lazy * n + 10


def probe_command() -> List[str]:
    """
    The readiness probe's command line, from the Deployment.
    """
    text = read("deployment.yaml")
    try:
        import yaml  # type: ignore[import-not-found]
    except ImportError:
        probe = re.search(r"readinessProbe:\n(?: +#[^\n]*\n)* +exec:\n +command: \[([^\]]*)\]",
                          text)
        assert probe, "an exec readiness probe"
        return [part.strip().strip('"') for part in probe.group(1).split(",")]
    pod = yaml.safe_load(text)["spec"]["template"]["spec"]
    return list(pod["containers"][0]["readinessProbe"]["exec"]["command"])


def test_the_deployment_probes_readiness_with_plugmgr_ready():
    text = read("deployment.yaml")
    command = probe_command()
    try:
        import yaml  # type: ignore[import-not-found]
    except ImportError:
        assert re.search(r"^\s+- name: config\n\s+configMap:\n\s+name: plugmgr-config$",
                         text, re.M)
        assert re.search(r"^kind: Deployment$", text, re.M)
        assert re.search(r"^kind: ConfigMap$", read("configmap.yaml"), re.M)
        assert re.search(r"^  name: plugmgr-config$", read("configmap.yaml"), re.M)
    else:
        deployment = yaml.safe_load(text)
        assert deployment["kind"] == "Deployment"
        pod = deployment["spec"]["template"]["spec"]
        volumes = {v["name"]: v for v in pod["volumes"]}
        assert volumes["config"]["configMap"]["name"] == "plugmgr-config"
        assert yaml.safe_load(read("configmap.yaml"))["metadata"]["name"] == "plugmgr-config"
    assert command[0] == "plugmgr" and command[-1] == "ready"
    config = parse_config(config_text(), "/etc/plugmgr/plugmgr.toml")
    assert command[command.index("--control") + 1] == config.manager.control
    assert "/etc/plugmgr/plugmgr.toml" in text and "mountPath: /etc/plugmgr " in text


@pytest_twisted.ensureDeferred
async def test_the_configmap_config_runs(tmp_path):
    """
    The config, with its paths pointed at examples/ here, starts every
    plugin and stops with status 0 on SIGTERM (as the kubelet sends it).
    """
    home = make_home(tmp_path)
    text = config_text().replace('"/app/plugins"', repr(os.path.join(REPO, "examples",
                                                                        "plugins")))
    text = text.replace("/run/plugmgr/plugmgr.sock", str(home / "plugmgr.sock"))
    (home / "plugmgr.toml").write_text(text.replace("'", '"'))
    daemon = Daemon(home, "--config", "plugmgr.toml")
    try:
        await daemon.ready()
        assert "plugmgr ready: 3 of 3 plugins loaded" in daemon.proto.text
        # The readiness probe, as the Deployment runs it (its control
        # socket here).
        probe = probe_command()
        probe[probe.index("--control") + 1] = f"unix:path={home}/plugmgr.sock"
        code, out, err = await daemon.cli(*probe[1:])
        assert code == 0, out + err
        code, out, err = await daemon.cli("unload", "archiver")
        assert code == 0, err
        code, out, err = await daemon.cli(*probe[1:])
        assert code == 1 and "archiver" in out + err
        daemon.signal("TERM")
        assert await daemon.ended() == 0, daemon.proto.text
    finally:
        await Deferred.fromCoroutine(daemon.kill())
