"""The run parameters a pipeline run may override: dataset, split (strategy, fractions), seed, tuning trials.

WHY one module: the Airflow DAG's params, the host-side `./run.sh pipeline` options, the command line of
every batch step and the DAG task that builds that command line all name the same values. They are
declared once here (name, type, help, the DAG's JSON schema); their defaults and their validation are the
settings' own (`Settings.validate`), so a value refused in `.env` is refused as a run parameter too.
"""

from __future__ import annotations

import argparse
from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any

from mlops.settings import DATASET_NAMES, SPLIT_STRATEGIES, Settings, SettingsError


@dataclass(frozen=True)
class RunParam:
    """One overridable parameter: its settings field, type, command-line help and DAG schema."""

    name: str  # the settings field (and DAG param); the option is `--name-with-dashes`
    kind: type
    help: str
    schema: dict[str, Any]  # JSON-schema keywords of the DAG's `Param`

    @property
    def option(self) -> str:
        """The command-line option that carries this parameter to a batch step (`--name-with-dashes`)."""
        return "--" + self.name.replace("_", "-")


RUN_PARAMS: tuple[RunParam, ...] = (
    RunParam(
        "dataset",
        str,
        "override DATASET",
        {
            "type": "string",
            "minLength": 1,
            "description": f"One of {', '.join(DATASET_NAMES)}, or a path to a MovieLens directory or zip",
        },
    ),
    RunParam("split_strategy", str, "override SPLIT_STRATEGY", {"enum": list(SPLIT_STRATEGIES)}),
    RunParam(
        "test_fraction",
        float,
        "override TEST_FRACTION",
        {"type": "number", "exclusiveMinimum": 0, "exclusiveMaximum": 1},
    ),
    RunParam(
        "validation_fraction",
        float,
        "override VALIDATION_FRACTION",
        {"type": "number", "exclusiveMinimum": 0, "exclusiveMaximum": 1},
    ),
    RunParam("seed", int, "override SEED", {"type": "integer"}),
    RunParam(
        "tuning_trials",
        int,
        "override TUNING_TRIALS (0: no hyperparameter search this run)",
        {"type": "integer", "minimum": 0, "description": "Optuna trials of the train step; 0 turns tuning off"},
    ),
)


@dataclass(frozen=True)
class RunParams:
    """The values of one run; everything else comes from the settings."""

    dataset: str
    split_strategy: str
    test_fraction: float
    validation_fraction: float
    seed: int
    tuning_trials: int

    @classmethod
    def defaults(cls, settings: Settings) -> RunParams:
        """The values the settings give (what a run uses when nothing is overridden)."""
        return cls(**{p.name: getattr(settings, p.name) for p in RUN_PARAMS})

    @classmethod
    def from_params(cls, params: Mapping[str, Any], settings: Settings) -> RunParams:
        """From a DAG run's params; a missing or empty value falls back to the settings.

        Raises `SettingsError` (a `ValueError`) naming the parameters when a value is not usable.
        """
        given = {p.name: p.kind(params[p.name]) for p in RUN_PARAMS if params.get(p.name) not in (None, "")}
        try:
            return cls.defaults(apply(settings, given))
        except SettingsError as exc:
            raise SettingsError(f"run parameters {given}: {exc}") from exc

    def as_dict(self) -> dict[str, Any]:
        """The values by name: the `conf` a pipeline run is triggered with (the DAG's params)."""
        return {f.name: getattr(self, f.name) for f in fields(self)}

    def argv(self) -> list[str]:
        """The step command-line options that carry these values (what `add_arguments` parses)."""
        out: list[str] = []
        for p in RUN_PARAMS:
            value = getattr(self, p.name)
            out += [p.option, repr(value) if p.kind is float else str(value)]
        return out


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The run-parameter options, each unset by default (then the settings decide)."""
    for p in RUN_PARAMS:
        choices = SPLIT_STRATEGIES if p.name == "split_strategy" else None
        parser.add_argument(p.option, dest=p.name, type=p.kind, default=None, choices=choices, help=p.help)


def overrides(args: argparse.Namespace) -> dict[str, Any]:
    """The run parameters given on a command line parsed with `add_arguments`."""
    return {p.name: getattr(args, p.name) for p in RUN_PARAMS if getattr(args, p.name, None) is not None}


def apply(settings: Settings, values: Mapping[str, Any]) -> Settings:
    """The settings with these run parameters, validated by the settings' own rules."""
    return settings.replace(**values).validate()
