from __future__ import annotations

from pathlib import Path

import pytest

from mpim import config
from mpim.config import ConfigError


def test_defaults_match_goim() -> None:
    cfg = config.Config()
    assert cfg.tcp.bind == ["0.0.0.0:3101"]
    assert cfg.websocket.bind == ["0.0.0.0:3102"]
    assert cfg.http.bind == "127.0.0.1:3111"  # goim binds every address; mpim's push API stays local
    assert cfg.protocol.handshake_timeout == 8
    assert cfg.protocol.heartbeat == 240 and cfg.protocol.heartbeat_max == 2
    assert cfg.protocol.max_body == 4096
    assert cfg.heartbeat_timeout == 480


def test_shipped_config_toml_loads_and_equals_defaults() -> None:
    path = Path(__file__).resolve().parent.parent / "config.toml"
    cfg = config.load(path)
    assert cfg.source == str(path)
    defaults = config.Config(source=str(path))
    assert cfg == defaults


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "c.toml"
    path.write_text(text)
    return path


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[protocol]\nheartbeat = -1\n", "[protocol] heartbeat: -1.0 is below the minimum"),
        ("[protocol]\nheartbeat = 'long'\n", "[protocol] heartbeat: expected a number"),
        ("[protocol]\nheartbeet = 1\n", "[protocol] heartbeet: unknown key"),
        ("[protocl]\n", "[protocl]: unknown section"),
        ("[server]\nworkers = 1.5\n", "[server] workers: expected an integer"),
        ("[server]\nworkers = true\n", "[server] workers: expected an integer"),
        ("[tcp]\nbind = '0.0.0.0:1'\n", "[tcp] bind: expected a list of strings"),
        ("[tcp]\nbind = ['nowhere']\n", "[tcp] bind: 'nowhere' is not host:port"),
        ("[websocket]\nbind = ['1.2.3.4:70000']\n", "port 70000 is out of range"),
        ("[auth]\nmode = 'jwt'\n", "[auth] secret: required"),
        ("[websocket]\nbind = ['0.0.0.0:3101']\n", "[websocket] bind: 0.0.0.0:3101 is already used by [tcp]"),
        ("[tcp]\nbind = ['127.0.0.1:9', '0.0.0.0:9']\n", "[tcp] bind: 0.0.0.0:9 is already used by [tcp]"),
        (
            "[tcp]\nbind = ['127.0.0.1:9', '127.0.0.1:9']\n",
            "[tcp] bind: 127.0.0.1:9 is already used by [tcp]",
        ),
        ("[http]\nbind = '0.0.0.0:3102'\n", "[http] bind: 0.0.0.0:3102 is already used by [websocket]"),
        ("[auth]\nmode = 'ldap'\n", "[auth] mode: 'ldap' is not one of jwt, json"),
        ("[websocket]\necho_path = 'echo'\n", "must start with '/'"),
        ("[room]\nbatch = 0\n", "[room] batch: 0 is below the minimum 1"),
        ("[room]\nmode = 'asap'\n", "[room] mode: 'asap' is not one of adaptive, fixed"),
        ("[room]\nmax_delay = -1\n", "[room] max_delay: -1.0 is below the minimum 0"),
        ("[router]\nshards = 0\n", "[router] shards: 0 is below the minimum 1"),
        ("[router]\nshards = 2\n[inbox]\npath = ':memory:'\n", "the shards share the inbox: name a file"),
        ("[router]\nshards = 2\nendpoint = 'tcp://127.0.0.1:9'\n", "[router] shards: more than one needs"),
        (
            "[router]\nshards = 2\n[ingress]\nzmq_bind = 'ipc:///tmp/mpim-ingress'\n",
            "[ingress] zmq_bind: 'ipc:///tmp/mpim-ingress': with [router] shards > 1 the ZeroMQ",
        ),
        ("protocol = 3\n", "[protocol] must be a table"),
        ("[protocol\n", "not valid TOML"),
    ],
)
def test_bad_values_name_file_key_and_reason(tmp_path: Path, text: str, message: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        config.load(path)
    assert str(path) in str(info.value)
    assert message in str(info.value)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        config.load(tmp_path / "absent.toml")


def test_ints_accepted_for_seconds(tmp_path: Path) -> None:
    cfg = config.load(write(tmp_path, "[protocol]\nheartbeat = 30\nhandshake_timeout = 0.5\n"))
    assert cfg.protocol.heartbeat == 30.0 and isinstance(cfg.protocol.heartbeat, float)
    assert cfg.protocol.handshake_timeout == 0.5


def test_replace_validates() -> None:
    cfg = config.replace(config.Config(), protocol={"heartbeat": 5})
    assert cfg.protocol.heartbeat == 5
    with pytest.raises(ConfigError):
        config.replace(cfg, protocol={"heartbeat": 0})


def test_worker_count_zero_means_cpus() -> None:
    assert config.Config().worker_count() >= 1
    assert config.replace(config.Config(), server={"workers": 3}).worker_count() == 3


def test_to_toml_round_trips_through_the_loader(tmp_path: Path) -> None:
    sections = {
        "tcp": {"bind": ["127.0.0.1:4101", "127.0.0.2:4101"]},
        "auth": {"mode": "jwt", "secret": 'quote " and back\\slash' + "x" * 32},
        "server": {"workers": 3, "graceful_timeout": 2.5},
        "websocket": {"echo_path": "/echo"},
    }
    path = tmp_path / "gen.toml"
    path.write_text(config.to_toml(sections))
    cfg = config.load(path)
    assert cfg.tcp.bind == sections["tcp"]["bind"]
    assert cfg.auth.secret == sections["auth"]["secret"]
    assert (cfg.server.workers, cfg.server.graceful_timeout) == (3, 2.5)
    assert cfg.websocket.echo_path == "/echo"


# -- safe defaults: who may push, and the network lists ------------------------------------------

KEY = "k" * 32


@pytest.mark.parametrize(
    ("sections", "message"),
    [
        ({"http": {"bind": "0.0.0.0:3111"}}, r"\[http\] bind: reachable from other machines without a key"),
        ({"http": {"bind": "10.1.2.3:3111"}}, r"set \[http\] api_key"),
        ({"http": {"bind": ":3111"}}, r"\[http\] bind: reachable"),
        (
            {"http": {"bind": "0.0.0.0:3111", "api_key": "short"}},
            r"\[http\] api_key: 5 characters is too short",
        ),
        ({"ingress": {"zmq_bind": "tcp://*:3112"}}, r"\[ingress\] zmq_bind: reachable from other machines"),
        ({"ingress": {"zmq_bind": "tcp://eth0:3112"}}, r"\[ingress\] zmq_bind: reachable"),
        ({"ingress": {"api_key": "x"}}, r"\[ingress\] api_key: 1 characters is too short"),
        ({"limits": {"exempt": ["10.0.0.0/33"]}}, r"\[limits\] exempt: '10.0.0.0/33' is not an IP network"),
        ({"proxy": {"trusted": ["lb.example"]}}, r"\[proxy\] trusted: 'lb.example' is not an IP network"),
        (
            {"auth": {"mode": "jwt"}},
            r"\[auth\] secret: required when mode = \"jwt\" \(or set \[auth\] public_key\)",
        ),
        ({"auth": {"public_key": "/nonexistent/key.pem"}}, r"\[auth\] public_key: cannot read"),
    ],
)
def test_unsafe_or_bad_security_settings_are_refused(
    sections: dict[str, dict[str, object]], message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        config.replace(config.Config(), **sections)


@pytest.mark.parametrize(
    "sections",
    [
        {"http": {"bind": "127.0.0.1:3111"}},
        {"http": {"bind": "[::1]:3111"}},
        {"http": {"bind": "localhost:3111"}},
        {"http": {"bind": "0.0.0.0:3111", "api_key": KEY}},
        {"http": {"bind": "0.0.0.0:3111", "insecure_open": True}},
        {"ingress": {"zmq_bind": "tcp://0.0.0.0:3112", "api_key": KEY}},
        {"ingress": {"zmq_bind": "tcp://*:3112", "insecure_open": True}},
        {"ingress": {"zmq_bind": "ipc:///tmp/mpim-push"}},
        {"ingress": {"zmq_bind": ""}},
        {"limits": {"exempt": ["10.0.0.0/8", "2001:db8::/32", "192.0.2.1"]}},
    ],
)
def test_safe_settings_load(sections: dict[str, dict[str, object]]) -> None:
    config.replace(config.Config(), **sections)


def test_a_config_file_with_an_open_push_api_names_the_fix(tmp_path: Path) -> None:
    path = write(tmp_path, '[http]\nbind = "0.0.0.0:3111"\n')
    with pytest.raises(ConfigError) as caught:
        config.load(path)
    text = str(caught.value)
    assert text.startswith(f"{path}: [http] bind:")
    assert "api_key" in text and "127.0.0.1" in text and "insecure_open = true" in text


def test_wss_listens_only_with_a_certificate(tmp_path: Path) -> None:
    """The default [websocket] tls_bind (goim's 3103) counts for port clashes only when TLS is on."""
    config.replace(config.Config(), http={"bind": "127.0.0.1:3103"})  # no cert: 3103 is free
    from tests.certs import issue

    certs = issue(tmp_path)
    with pytest.raises(
        ConfigError, match=r"\[http\] bind: 127.0.0.1:3103 is already used by \[websocket\] tls_bind"
    ):
        config.replace(config.Config(), tls=certs.tls(), http={"bind": "127.0.0.1:3103"})


def test_max_targets_is_a_config_key_with_limits() -> None:
    assert config.Config().router.max_targets == 10000
    assert config.replace(config.Config(), router={"max_targets": 1}).router.max_targets == 1
    for bad in (0, -1, 1_000_001):
        with pytest.raises(config.ConfigError, match=r"\[router\] max_targets"):
            config.replace(config.Config(), router={"max_targets": bad})


def test_router_shards_on_a_cluster_keep_the_inbox_in_redis(tmp_path: Path) -> None:
    """Several shards with ``[cluster] redis`` are allowed; the inbox is Redis's there, so an
    ``[inbox] path`` of ":memory:" (unused) is no reason to refuse them."""
    text = "[router]\nshards = 4\n[inbox]\npath = ':memory:'\n[cluster]\nredis = 'redis://127.0.0.1:6379/0'\n"
    cfg = config.load(write(tmp_path, text))
    assert cfg.router.shards == 4 and cfg.cluster.redis
