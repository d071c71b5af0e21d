"""The service desk's settings: from the environment of central (never the shared province file,
which every site reads: SMTP credentials and the SMS gateway's token stay on central's host)."""

from __future__ import annotations

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from central.servicedesk.tickets import HOUR_S, Category


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
    poll_s: float = Field(default=2.0, gt=0)
    escalate_every_s: float = Field(default=60.0, gt=0)
    due_hours: dict[Category, float] = Field(default_factory=dict)

    def due_s(self) -> dict[Category, float]:
        return {category: hours * HOUR_S for category, hours in self.due_hours.items()}
