"""The service catalog (一号通, F1): the numbers a province's callers dial and the services behind them.

One number may serve every service (the postal 185), and a service may have numbers of its own.
Each service names the flow a caller of that number starts in, the cities that offer it, its
skill groups and its hours. Central keeps the catalog; every site reads it to answer a call.
"""

from __future__ import annotations

from typing import Annotated

import yaml
from pydantic import Field, ValidationError, model_validator

from vcc.ivr.flow import FlowId, Language, OpeningHours, SkillGroupId, _Doc

ServiceId = Annotated[str, Field(pattern=r"^[a-z][a-z0-9-]{0,47}$")]
SiteId = Annotated[str, Field(pattern=r"^[a-z][a-z0-9_-]{0,31}$")]
Number = Annotated[str, Field(pattern=r"^[0-9]{3,20}$")]


class Service(_Doc):
    id: ServiceId
    name: dict[Language, str] = Field(min_length=1)
    numbers: list[Number] = Field(min_length=1)
    flow: FlowId
    # The site ids (cities) that offer it; any skilled agent of any city may serve it (一台清).
    cities: list[SiteId] = Field(min_length=1)
    skill_groups: list[SkillGroupId] = Field(min_length=1)
    # When agents serve it; empty: always. The flow itself decides what a caller hears when closed.
    hours: list[OpeningHours] = []


class ServiceCatalog(_Doc):
    services: list[Service] = Field(min_length=1)

    @model_validator(mode="after")
    def _one_service_per_number_and_city(self) -> ServiceCatalog:
        ids: set[str] = set()
        taken: dict[tuple[str, str], str] = {}
        for service in self.services:
            if service.id in ids:
                raise ValueError(f"services: {service.id!r} appears twice")
            ids.add(service.id)
            for number in service.numbers:
                for city in service.cities:
                    other = taken.setdefault((number, city), service.id)
                    if other != service.id:
                        raise ValueError(
                            f"services.{service.id}: number {number} in {city} is already {other!r}"
                        )
        return self

    def for_number(self, number: str, city: str) -> Service | None:
        """The service a caller reaches by dialling `number` in `city` (None: not offered there)."""
        for service in self.services:
            if number in service.numbers and city in service.cities:
                return service
        return None

    def service(self, service_id: str) -> Service | None:
        return next((s for s in self.services if s.id == service_id), None)


class CatalogError(ValueError):
    """A catalog document that cannot be used; the message names each key and reason."""


def parse_catalog(text: str) -> ServiceCatalog:
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise CatalogError(f"not valid YAML: {exc}") from None
    try:
        return ServiceCatalog.model_validate(data)
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            key = ".".join(str(p) for p in err["loc"]) or "(top level)"
            msg = (
                "unknown key"
                if err["type"] == "extra_forbidden"
                else err["msg"].removeprefix("Value error, ")
            )
            problems.append(f"{key}: {msg}")
        raise CatalogError("; ".join(problems)) from None


def is_catalog(text: str) -> bool:
    """Whether a document is a catalog (top-level `services`) rather than a flow (`nodes`)."""
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError:
        return False
    return isinstance(data, dict) and "services" in data and "nodes" not in data
