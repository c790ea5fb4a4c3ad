"""service.settings: precedence (flag > CONVSERVE_* > default), parsing, validation, help."""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

import pytest

from service.errors import ConvserveError, SettingsError
from service.settings import Settings


def parse(argv: list[str]) -> dict[str, object]:
    parser = argparse.ArgumentParser()
    Settings.add_arguments(parser)
    return vars(parser.parse_args(argv))


def test_defaults_need_no_sources() -> None:
    settings = Settings.from_sources({}, {})
    assert settings == Settings()
    assert settings.grpc_port == 8001 and settings.metrics_port == 8002
    assert settings.repository == Path("model_repository")
    assert settings.load_models == ()


def test_flag_beats_env_beats_default() -> None:
    env = {"CONVSERVE_GRPC_PORT": "7000", "CONVSERVE_METRICS_PORT": "7001"}
    settings = Settings.from_sources(parse(["--grpc-port", "9000"]), env)
    assert settings.grpc_port == 9000  # flag
    assert settings.metrics_port == 7001  # env
    assert settings.grpc_host == "0.0.0.0"  # default


def test_none_args_and_unknown_keys_are_ignored() -> None:
    settings = Settings.from_sources(
        {"grpc_port": None, "command": "serve", "max_audio_seconds": 5},
        {"CONVSERVE_GRPC_PORT": "1234"},
    )
    assert settings.grpc_port == 1234
    assert settings.max_audio_seconds == 5.0


def test_env_defaults_to_os_environ(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CONVSERVE_DEVICE", "CUDA:1")
    monkeypatch.setenv("CONVSERVE_LOG_LEVEL", "debug")
    settings = Settings.from_sources()
    assert settings.device == "cuda:1"
    assert settings.log_level == "DEBUG"


def test_every_type_parses_from_strings() -> None:
    env = {
        "CONVSERVE_REPOSITORY": "/srv/models",
        "CONVSERVE_GRACE_PERIOD_S": "2.5",
        "CONVSERVE_MAX_MESSAGE_BYTES": "1_048_576",
        "CONVSERVE_LOAD_MODELS": " a, b,,c ",
        "CONVSERVE_METRICS_PORT": "-1",
    }
    settings = Settings.from_sources({}, env)
    assert settings.repository == Path("/srv/models")
    assert settings.grace_period_s == 2.5
    assert settings.max_message_bytes == 1 << 20
    assert settings.load_models == ("a", "b", "c")
    assert settings.metrics_port == -1


def test_load_models_from_a_list_and_from_a_flag() -> None:
    assert Settings.from_sources({"load_models": ["x", "y"]}, {}).load_models == ("x", "y")
    assert Settings.from_sources(parse(["--load-models", "m1,m2"]), {}).load_models == ("m1", "m2")


def test_empty_env_value_counts_as_unset() -> None:
    assert Settings.from_sources({}, {"CONVSERVE_GRPC_PORT": ""}).grpc_port == 8001


@pytest.mark.parametrize(
    ("args", "env", "needle"),
    [
        ({"grpc_port": "70000"}, {}, "grpc-port"),
        ({}, {"CONVSERVE_GRPC_PORT": "eighty"}, "CONVSERVE_GRPC_PORT"),
        ({"grpc_port": True}, {}, "--grpc-port"),
        ({"metrics_port": -2}, {}, "metrics-port"),
        ({"grpc_port": 9000, "metrics_port": 9000}, {}, "different from grpc-port"),
        ({"device": "gpu"}, {}, "device"),
        ({"device": "cuda:x"}, {}, "device"),
        ({"log_level": "LOUD"}, {}, "log-level"),
        ({"max_queue_size": 0}, {}, "max-queue-size"),
        ({"max_audio_seconds": "-1"}, {}, "max-audio-seconds"),
        ({"grace_period_s": "soon"}, {}, "--grace-period-s"),
        ({"load_models": "../etc"}, {}, "load-models"),
        ({"intra_op_threads": -1}, {}, "intra-op-threads"),
        ({"max_message_bytes": 10}, {}, "max-message-bytes"),
    ],
)
def test_bad_values_raise_settings_error_naming_the_setting(
    args: dict[str, object], env: dict[str, str], needle: str
) -> None:
    with pytest.raises(SettingsError, match=needle) as info:
        Settings.from_sources(args, env)
    assert isinstance(info.value, ConvserveError)


def test_several_problems_are_reported_together() -> None:
    with pytest.raises(SettingsError) as info:
        Settings(grpc_port=-5, device="tpu")
    assert "grpc-port" in str(info.value) and "device" in str(info.value)


def test_settings_are_frozen() -> None:
    settings = Settings()
    with pytest.raises(dataclasses.FrozenInstanceError):
        settings.grpc_port = 1  # type: ignore[misc]


def test_every_field_documents_itself_in_its_metadata() -> None:
    """The help text is field metadata (no source reading): --help, describe() and limits()
    all show the same text, and every field has one."""
    described = {info.name: info for info in Settings.describe()}
    for field in dataclasses.fields(Settings):
        text = field.metadata["help"]
        assert isinstance(text, str) and len(text) > 10 and text == " ".join(text.split()), field
        assert described[field.name].doc == text
        assert described[field.name].limit is field.metadata["limit"]
        assert described[field.name].default == field.default
    assert [i.name for i in Settings.limits()] == [
        f.name for f in dataclasses.fields(Settings) if f.metadata["limit"]
    ]


def test_one_flag_per_field_with_help_from_its_metadata() -> None:
    parser = argparse.ArgumentParser()
    Settings.add_arguments(parser)
    actions = {a.dest: a for a in parser._actions if a.dest != "help"}
    fields = [f.name for f in dataclasses.fields(Settings)]
    assert sorted(actions) == sorted(fields)
    for name in fields:
        action = actions[name]
        assert action.option_strings == ["--" + name.replace("_", "-")]
        assert action.default is None
        assert f"CONVSERVE_{name.upper()}" in (action.help or "")
        # The field's help text, then the bracketed env var and default.
        field = Settings.__dataclass_fields__[name]
        assert (action.help or "").startswith(field.metadata["help"].replace("%", "%%")), name
    assert "ephemeral" in (actions["metrics_port"].help or "") or "free port" in (
        actions["metrics_port"].help or ""
    )
    parser.format_help()  # the % escaping holds


def test_log_summary_names_every_field(caplog: pytest.LogCaptureFixture) -> None:
    import logging

    logger = logging.getLogger("test.settings")
    with caplog.at_level(logging.INFO, logger="test.settings"):
        Settings(grpc_port=1234).log_summary(logger)
    assert "grpc_port=1234" in caplog.text and "load_models=()" in caplog.text
