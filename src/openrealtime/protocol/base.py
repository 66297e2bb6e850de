"""Base classes shared by every wire model (spec §2.1, §8.3)."""

from __future__ import annotations

from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, SerializerFunctionWrapHandler, model_serializer


class WireModel(BaseModel):
    """A strict wire object: unknown keys are errors, types are never coerced.

    ``_omit_if_none`` names optional fields that are left out of the JSON when unset, because a
    client treats an explicit ``null`` there as invalid (spec §8.3, constraints 8-14).
    """

    model_config = ConfigDict(strict=True, extra="forbid", frozen=True)

    _omit_if_none: ClassVar[frozenset[str]] = frozenset()

    @model_serializer(mode="wrap")
    def _serialize(self, handler: SerializerFunctionWrapHandler) -> Any:
        data = handler(self)
        if self._omit_if_none and isinstance(data, dict):
            for key in self._omit_if_none:
                if key in data and data[key] is None:
                    del data[key]
        return data


def to_wire(model: BaseModel) -> dict[str, Any]:
    """Return the JSON-ready dict of a wire model (the one dump convention of the package)."""
    return model.model_dump(mode="json", by_alias=True)
