"""A requested export column, as validated from `fields[]` of `POST /v1/exports`."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

CUSTOM_VAR = "custom_var"
DYNAMIC_VAR = "dynamic_var"


@dataclass(frozen=True)
class FieldSpec:
    field_name: str
    alias_name: str | None = None
    custom_var_position: int | None = None
    dynamic_var_key: str | None = None

    @property
    def output_name(self) -> str:
        """The column name in the output file: the alias, else a name derived from the field."""
        if self.alias_name:
            return self.alias_name
        if self.field_name == CUSTOM_VAR:
            return f"custom_var_{self.custom_var_position}"
        if self.field_name == DYNAMIC_VAR:
            return f"dynamic_var_{self.dynamic_var_key}"
        return self.field_name

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"fieldName": self.field_name}
        if self.alias_name is not None:
            out["aliasName"] = self.alias_name
        if self.custom_var_position is not None:
            out["customVarPosition"] = self.custom_var_position
        if self.dynamic_var_key is not None:
            out["dynamicVarKey"] = self.dynamic_var_key
        return out

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> FieldSpec:
        return cls(
            field_name=raw["fieldName"],
            alias_name=raw.get("aliasName"),
            custom_var_position=raw.get("customVarPosition"),
            dynamic_var_key=raw.get("dynamicVarKey"),
        )
