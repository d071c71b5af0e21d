"""Database credentials stay out of the shared province file."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.central.province import province_data
from vcc.config import DATABASE_URL_ENV, ConfigError, parse_province


@pytest.mark.parametrize(
    "url",
    [
        "cockroachdb+asyncpg://vcc:secret@db:26257/vcc",
        "cockroachdb+asyncpg://vcc@db:26257/vcc?password=secret",
    ],
)
def test_a_password_in_the_shared_file_is_refused_naming_the_key(url: str) -> None:
    with pytest.raises(ConfigError, match=r"central\.database_url: no password in the shared province file"):
        parse_province(province_data(database_url=url))


def test_central_takes_the_url_from_its_environment_or_its_own_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(DATABASE_URL_ENV, raising=False)
    secret = tmp_path / "database-url"
    secret.write_text("cockroachdb+asyncpg://vcc:secret@db:26257/vcc\n")
    data = province_data(database_url="cockroachdb+asyncpg://vcc@db:26257/vcc")
    data["central"]["database_url_file"] = str(secret)
    central = parse_province(data).central
    assert central.effective_database_url() == "cockroachdb+asyncpg://vcc:secret@db:26257/vcc"
    monkeypatch.setenv(DATABASE_URL_ENV, "cockroachdb+asyncpg://vcc:other@db:26257/vcc")
    assert central.effective_database_url() == "cockroachdb+asyncpg://vcc:other@db:26257/vcc"
    monkeypatch.setenv(DATABASE_URL_ENV, "mysql://x")
    with pytest.raises(ConfigError, match="database URL"):
        central.effective_database_url()
