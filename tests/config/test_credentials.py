"""The configuration's credentials: key files, the SDK's environment variables, never
shown in a repr or an error, and a warning for a literal secret in a readable file."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from qf_exporter.config.file import ConfigError, load_config, parse_config
from qf_exporter.util import yamlfile
from tests.checks import assert_no_keys
from tests.config_text import AK, CREDS, MINIMAL, SK, parse, problems, write

# --- credentials -----------------------------------------------------------------------


def test_secret_key_file_is_read_and_stripped(tmp_path: Path) -> None:
    secret_file = write(tmp_path / "sk", f"  {SK}\n\n", 0o600)
    config = parse(
        f"""
        accounts:
          - name: a
            access_key: {AK}
            secret_key_file: {secret_file}
            jobs: [j]
        """,
        {},
    )
    assert config.accounts[0].secret_key.reveal() == SK
    assert config.warnings == ()


def test_secret_key_file_relative_to_the_config_file(tmp_path: Path) -> None:
    (tmp_path / "secrets").mkdir()
    write(tmp_path / "secrets" / "sk", SK + "\n")
    config_file = write(
        tmp_path / "config.yaml",
        f"accounts: [{{name: a, access_key: {AK}, secret_key_file: secrets/sk, jobs: [j]}}]\n",
    )
    config = load_config(config_file, environ={})
    assert config.accounts[0].secret_key.reveal() == SK


def test_secret_key_file_from_env_path(tmp_path: Path) -> None:
    secret_file = write(tmp_path / "sk", SK)
    config = parse(
        "accounts: [{name: a, jobs: [j], secret_key_file: '${SK_FILE}'}]",
        {"SK_FILE": str(secret_file), "QIANFAN_ACCESS_KEY": AK},
    )
    assert config.accounts[0].secret_key.reveal() == SK
    assert config.accounts[0].access_key.reveal() == AK


def test_secret_key_file_problems(tmp_path: Path) -> None:
    empty = write(tmp_path / "empty", "\n  \n")
    binary = tmp_path / "binary"
    binary.write_bytes(b"\xff\xfe\x00bad")
    missing = tmp_path / "missing"
    found = problems(
        f"""
        accounts:
          - {{name: a, jobs: [j], secret_key_file: {empty}}}
          - {{name: b, jobs: [j], secret_key_file: {binary}}}
          - {{name: c, jobs: [j], secret_key_file: {missing}}}
          - {{name: d, jobs: [j], secret_key_file: {tmp_path}}}
          - {{name: e, jobs: [j], secret_key_file: {missing}, secret_key: literal}}
        """
    )
    assert found == [
        f"accounts[0].secret_key_file: {empty} is empty",
        f"accounts[1].secret_key_file: {binary} is not UTF-8 text",
        f"accounts[2].secret_key_file: cannot read {missing}: No such file or directory",
        f"accounts[3].secret_key_file: {tmp_path} is not a regular file (a directory)",
        "accounts[4].secret_key_file: give secret_key or secret_key_file, not both",
    ]


def test_keys_fall_back_to_the_sdk_environment_variables() -> None:
    config = parse(MINIMAL, CREDS)
    assert config.accounts[0].access_key.reveal() == AK
    assert config.accounts[0].secret_key.reveal() == SK
    # A key in the file wins over the environment.
    config = parse(MINIMAL.replace("jobs:", "access_key: file-ak\n    jobs:"), CREDS)
    assert config.accounts[0].access_key.reveal() == "file-ak"
    assert config.accounts[0].secret_key.reveal() == SK


def test_missing_keys_name_the_environment_variables() -> None:
    assert problems(MINIMAL, {}) == [
        "accounts[0].access_key: is required (or set QIANFAN_ACCESS_KEY)",
        "accounts[0].secret_key: is required (or secret_key_file, or set QIANFAN_SECRET_KEY)",
    ]
    assert problems(MINIMAL, {"QIANFAN_ACCESS_KEY": AK}) == [
        "accounts[0].secret_key: is required (or secret_key_file, or set QIANFAN_SECRET_KEY)",
    ]


def test_a_key_that_is_not_a_string_is_refused() -> None:
    # An unquoted 0123 would be read as a number by YAML (and mangled).
    assert problems(MINIMAL.replace("jobs:", "secret_key: 0123\n    jobs:"), CREDS) == [
        "accounts[0].secret_key: must be a string (quote it)"
    ]


def test_config_repr_hides_credentials(tmp_path: Path) -> None:
    secret_file = write(tmp_path / "sk", SK)
    config = parse(
        f"accounts: [{{name: a, jobs: [j], access_key: {AK}, secret_key_file: {secret_file}}}]",
        {},
    )
    for text in (repr(config), str(config), f"{config}", repr(config.accounts)):
        assert_no_keys(text, keys=(AK, SK))


def test_config_errors_never_show_credentials(tmp_path: Path) -> None:
    secret_file = write(tmp_path / "sk", SK)
    with pytest.raises(ConfigError) as info:
        parse(
            f"""
            accounts:
              - name: "bad name with {SK}"
                access_key: {AK}
                secret_key: {SK}
                secret_key_file: {secret_file}
                qps: 0
              - name: b
                access_key: {AK}
                secret_key_file: {secret_file}
                {SK}: 1
              - name: c
                access_key: [{AK}]
                secret_key: {{nested: {SK}}}
                jobs: [j]
            poll: {{interval: {SK}}}
            """,
            {},
        )
    text = str(info.value) + repr(info.value) + "\n".join(info.value.problems)
    assert len(info.value.problems) >= 6
    # Even where a value is quoted or a key named (a bad duration, an unknown key), a
    # credential that the file holds is replaced.
    assert "accounts[1].<redacted>: unknown key" in info.value.problems
    assert_no_keys(text, keys=(AK, SK))


# --- file permissions ------------------------------------------------------------------


LITERAL = f"""
accounts:
  - name: a
    access_key: {AK}
    secret_key: {SK}
    jobs: [j]
"""


def test_world_readable_file_with_a_literal_secret_warns(tmp_path: Path) -> None:
    config = load_config(write(tmp_path / "c.yaml", LITERAL, 0o644), environ={})
    assert len(config.warnings) == 1
    assert "can be read by every user" in config.warnings[0]
    assert "accounts[0].secret_key" in config.warnings[0]
    assert_no_keys(config.warnings[0], keys=(SK,))


def test_private_file_with_a_literal_secret_does_not_warn(tmp_path: Path) -> None:
    config = load_config(write(tmp_path / "c.yaml", LITERAL, 0o600), environ={})
    assert config.warnings == ()
    assert config.accounts[0].secret_key.reveal() == SK


def test_group_readable_file_does_not_warn(tmp_path: Path) -> None:
    assert load_config(write(tmp_path / "c.yaml", LITERAL, 0o640), environ={}).warnings == ()


@pytest.mark.parametrize(
    "line",
    [
        "secret_key: ${QIANFAN_SECRET_KEY}",
        'secret_key: "${QIANFAN_SECRET_KEY}"',
        "secret_key: ' ${QIANFAN_SECRET_KEY} '",
        "# secret_key: commented-out-literal",
    ],
)
def test_world_readable_file_without_a_literal_secret_does_not_warn(
    tmp_path: Path, line: str
) -> None:
    text = f"accounts:\n  - name: a\n    {line}\n    access_key: x\n    jobs: [j]\n"
    config = load_config(write(tmp_path / "c.yaml", text, 0o644), environ=CREDS)
    assert config.warnings == ()
    assert config.accounts[0].secret_key.reveal() == SK


@pytest.mark.parametrize(
    "text",
    [
        # The secret key as the first key of a list item, and in flow style.
        f"accounts:\n  - secret_key: {SK}\n    name: a\n    access_key: x\n    jobs: [j]\n",
        f"accounts: [{{name: a, access_key: x, secret_key: {SK}, jobs: [j]}}]\n",
        f'accounts:\n  - name: a\n    access_key: x\n    secret_key: "{SK}"\n    jobs: [j]\n',
    ],
)
def test_world_readable_literal_secret_in_any_yaml_style_warns(tmp_path: Path, text: str) -> None:
    config = load_config(write(tmp_path / "c.yaml", text, 0o604), environ={})
    assert len(config.warnings) == 1, config.warnings


def test_world_readable_secret_key_file_warns(tmp_path: Path) -> None:
    secret_file = write(tmp_path / "sk", SK, 0o644)
    config_file = write(
        tmp_path / "c.yaml",
        f"accounts: [{{name: a, access_key: x, secret_key_file: {secret_file}, jobs: [j]}}]\n",
        0o644,  # holds no secret itself: no warning about the config file
    )
    config = load_config(config_file, environ={})
    assert len(config.warnings) == 1
    assert config.warnings[0].startswith("accounts[0].secret_key_file")
    assert str(secret_file) in config.warnings[0]
    assert_no_keys(config.warnings[0], keys=(SK,))
    os.chmod(secret_file, 0o600)
    assert load_config(config_file, environ={}).warnings == ()


def test_secret_key_file_over_a_few_kib_is_refused(tmp_path: Path) -> None:
    big = tmp_path / "sk"
    big.write_text("x" * (yamlfile.MAX_SECRET_BYTES + 1), encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        parse_config(
            f"accounts: [{{name: a, access_key: {AK}, secret_key_file: {big}, jobs: [j]}}]"
        )
    assert info.value.problems == [f"accounts[0].secret_key_file: {big} is larger than 4 KiB"]

