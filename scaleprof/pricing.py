"""The pricing table: node types with price per hour, size, source and date (never prices in code).

Only the rows a study uses are copied into its manifest, so a report can be re-rendered, and its
costs checked, from the study directory alone.
"""

from __future__ import annotations

import csv
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from scaleprof.config import ConfigError, Experiment


class NodePrice(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    node_type: str = Field(min_length=1)
    provider: str
    region: str
    instance: str
    # Empty: a node type with no public list price found; its runs get no cost figures, never a guess.
    price_per_hour_usd: float | None = Field(ge=0)
    vcpus: float = Field(gt=0)
    memory_gib: float = Field(ge=0)
    gpus: float = Field(ge=0)
    gpu_model: str = ""
    source: str = Field(min_length=1)
    retrieved: str = Field(min_length=1)

    @field_validator("price_per_hour_usd", mode="before")
    @classmethod
    def _empty_is_unpriced(cls, value: object) -> object:
        return None if value == "" else value


def load_pricing(path: Path) -> dict[str, NodePrice]:
    try:
        with open(path, newline="", encoding="utf-8") as f:
            rows = list(csv.DictReader(f))
    except FileNotFoundError:
        raise ConfigError(f"{path}: pricing table not found") from None
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise ConfigError(f"{path}: cannot read pricing table ({exc})") from None
    table: dict[str, NodePrice] = {}
    for line, row in enumerate(rows, start=2):
        if None in row:
            raise ConfigError(f"{path}: line {line}: more fields than the header (quote fields that contain commas)")
        try:
            price = NodePrice.model_validate(row)
        except ValidationError as err:
            first = err.errors()[0]
            field = ".".join(str(p) for p in first["loc"])
            raise ConfigError(f"{path}: line {line}, column {field}: {first['msg']}") from None
        table[price.node_type] = price
    return table


def prices_for(experiment: Experiment, base_dir: Path | None = None) -> dict[str, NodePrice]:
    """The pricing rows the experiment's placements name; a missing one is a ConfigError naming the field."""
    wanted = {(i, experiment.node_type(p)) for i, p in enumerate(experiment.placements) if experiment.node_type(p)}
    if not wanted:
        return {}
    path = Path(experiment.cost.pricing)
    if not path.is_absolute() and not path.exists() and base_dir is not None:
        path = base_dir / path
    table = load_pricing(path)
    used = {}
    for i, node_type in sorted(wanted, key=lambda t: t[0]):
        if node_type not in table:
            field = f"placements.{i}.node_type" if experiment.placements[i].node_type else "cost.node_type"
            raise ConfigError(
                f"{field}: no node type {node_type!r} in {path} (have: {', '.join(sorted(table)) or 'none'})"
            )
        used[node_type] = table[node_type]
    return used
