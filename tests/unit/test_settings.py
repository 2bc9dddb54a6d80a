"""Settings: each comes from a flag, else the environment, else the config file, else its default, and
says where it came from; a bad value is refused with the setting's name, the value and its source."""

from __future__ import annotations

from pathlib import Path

import pytest

from vmhost.config import Settings
from vmhost.errors import InvalidInput


def load(tmp_path: Path, file: str = "", flags: dict[str, object] | None = None, **env: str) -> Settings:
    config = tmp_path / "config.toml"
    config.write_text(file)
    return Settings.load(flags, env={"VMHOST_CONFIG": str(config), **env})


@pytest.mark.parametrize("flags, env, file, workers, source", [
    ({"workers": 7}, {"VMHOST_WORKERS": "5"}, "workers = 3\n", 7, "flag"),
    ({}, {"VMHOST_WORKERS": "5"}, "workers = 3\n", 5, "env VMHOST_WORKERS"),
    ({}, {}, "workers = 3\n", 3, "file {config}"),
    ({}, {}, "", 8, "default"),
])
def test_a_flag_beats_the_environment_which_beats_the_file_which_beats_the_default(
        flags: dict[str, object], env: dict[str, str], file: str, workers: int, source: str, tmp_path: Path) -> None:
    settings = load(tmp_path, file, flags, **env)
    assert settings.workers == workers
    assert dict((name, where) for name, _, where in settings.described())["workers"] == \
        source.format(config=tmp_path / "config.toml")


def test_the_vmhost_variable_beats_its_legacy_name(tmp_path: Path) -> None:
    assert load(tmp_path, VM_API_DB_PATH="/srv/old.db").db_path == Path("/srv/old.db")
    assert load(tmp_path, VM_API_DB_PATH="/srv/old.db", VMHOST_DB_PATH="/srv/new.db").db_path == Path("/srv/new.db")


@pytest.mark.parametrize("env, file, message", [
    ({"VMHOST_WORKERS": "many"}, "",
     "bad value 'many' for workers (from env VMHOST_WORKERS): invalid literal for int() with base 10: 'many'"),
    ({"VMHOST_WORKERS": "0"}, "", "bad value '0' for workers (from env VMHOST_WORKERS): must be greater than 0"),
    ({}, "janitor_interval = -1\n",
     "bad value -1 for janitor_interval (from file {config}): must be greater than 0"),
    ({"VMHOST_LOG_FORMAT": "xml"}, "",
     "bad value 'xml' for log_format (from env VMHOST_LOG_FORMAT): must be text or json"),
    ({"VMHOST_ALLOW_INSECURE_TCP": "maybe"}, "", "bad value 'maybe' for allow_insecure_tcp "
     "(from env VMHOST_ALLOW_INSECURE_TCP): must be true or false (1/0, yes/no)"),
    ({"VMHOST_BIND": "localhost"}, "", "bad bind address 'localhost': expected HOST:PORT"),
    ({}, "colour = true\n", "unknown setting(s) in {config}: colour"),
])
def test_a_bad_value_is_refused_naming_the_setting_and_where_it_came_from(
        env: dict[str, str], file: str, message: str, tmp_path: Path) -> None:
    with pytest.raises(InvalidInput) as refused:
        load(tmp_path, file, **env)
    assert refused.value.detail == message.format(config=tmp_path / "config.toml")
    assert refused.value.exit_code == 2


def test_a_config_file_that_is_not_toml_is_refused_with_its_path(tmp_path: Path) -> None:
    with pytest.raises(InvalidInput, match=rf"^cannot read config file {tmp_path}/config.toml: Expected '=' "):
        load(tmp_path, "workers 3\n")
