"""Every configuration field says what it is for (the YAML's only reference)."""

from __future__ import annotations

import inspect

from pydantic import BaseModel

import graphs.args
import ragserve.config


def _models(module) -> list[type[BaseModel]]:
    return [obj for _, obj in inspect.getmembers(module, inspect.isclass)
            if issubclass(obj, BaseModel) and obj.__module__ == module.__name__]


def test_every_config_field_has_a_description():
    missing = [f"{model.__name__}.{name}"
               for module in (ragserve.config, graphs.args)
               for model in _models(module)
               for name, field in model.model_fields.items()
               if not field.description]
    assert missing == []


def test_stage_sections_are_described_too():
    args = graphs.args.RagAppArgs
    assert all(f.description for f in args.model_fields.values())
    for stage in graphs.args.STAGE_ARGS.values():
        assert all(f.description for f in stage.model_fields.values()), stage.__name__
