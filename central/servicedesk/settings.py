"""The service desk's settings: from the environment of central (never the shared province file,
which every site reads: SMTP credentials and the SMS gateway's token stay on central's host)."""

from __future__ import annotations

from pydantic import Field, SecretStr, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict

from central.servicedesk.tickets import HOUR_S, Category
from vcc.config import ConfigError


class SmtpSettings(BaseSettings):
    """VCC_SMTP_HOST, VCC_SMTP_PORT, ...; no host: e-mail notifications wait (they stay pending)."""

    model_config = SettingsConfigDict(env_prefix="VCC_SMTP_", extra="ignore")

    host: str = ""
    port: int = Field(default=587, ge=1, le=65535)
    username: str = ""
    password: SecretStr = SecretStr("")
    sender: str = "service@vcc.invalid"
    # STARTTLS after connecting (port 587), or TLS from the start (port 465), or neither (tests).
    starttls: bool = True
    use_tls: bool = False
    timeout_s: float = Field(default=10.0, gt=0)


class SmsSettings(BaseSettings):
    """VCC_SMS_GATEWAY_URL, VCC_SMS_TOKEN; no URL: SMS notifications wait."""

    model_config = SettingsConfigDict(env_prefix="VCC_SMS_", extra="ignore")

    gateway_url: str = ""
    token: SecretStr = SecretStr("")
    timeout_s: float = Field(default=10.0, gt=0)


class DeskSettings(BaseSettings):
    """VCC_DESK_*: delivery retries, the background loops, tickets' due times (hours by category,
    e.g. VCC_DESK_DUE_HOURS='{"complaint": 24}')."""

    model_config = SettingsConfigDict(env_prefix="VCC_DESK_", extra="ignore")

    max_attempts: int = Field(default=5, ge=1, le=50)
    retry_base_s: float = Field(default=1.0, ge=0)
    retry_max_s: float = Field(default=60.0, ge=0)
    # One delivery attempt with no answer in this long counts as failed (a hung gateway).
    attempt_timeout_s: float = Field(default=30.0, gt=0)
    poll_s: float = Field(default=2.0, gt=0)
    escalate_every_s: float = Field(default=60.0, gt=0)
    due_hours: dict[Category, float] = Field(default_factory=dict)

    def due_s(self) -> dict[Category, float]:
        return {category: hours * HOUR_S for category, hours in self.due_hours.items()}


def check_environment() -> None:
    """At start, before serving: a bad VCC_SMTP_* / VCC_SMS_* / VCC_DESK_* value is one line
    naming the variable (vcc.config.ConfigError), not a failure at the first notification."""
    for settings, prefix in (
        (SmtpSettings, "VCC_SMTP_"),
        (SmsSettings, "VCC_SMS_"),
        (DeskSettings, "VCC_DESK_"),
    ):
        try:
            settings()
        except ValidationError as exc:
            first = exc.errors()[0]
            name = prefix + str(first["loc"][0]).upper() if first["loc"] else prefix
            raise ConfigError(f"{name}: {first['msg']}") from None
