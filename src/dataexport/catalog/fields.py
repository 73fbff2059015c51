"""PLACEHOLDER being replaced by the catalog work: the interface below is fixed."""

from __future__ import annotations

from dataclasses import dataclass, field

from dataexport.domain.enums import Scope

BOTH = frozenset({Scope.SESSIONS, Scope.VIEWS})


@dataclass(frozen=True)
class CatalogField:
    name: str
    scopes: frozenset[Scope]
    type: str
    description: str
    example: str
    aliases: tuple[str, ...] = ()
    parameters: tuple[str, ...] = ()
    extra: dict = field(default_factory=dict, compare=False, hash=False)

    def as_api(self) -> dict:
        return {
            "name": self.name,
            "description": self.description,
            "example": self.example,
            "aliases": list(self.aliases),
            "parameters": list(self.parameters),
        }


CATALOG: tuple[CatalogField, ...] = (
    CatalogField("project_id", BOTH, "Integer", "The project id.", "42"),
    CatalogField("session_id", BOTH, "UInt64", "Session id.", "123"),
    CatalogField("view_number", frozenset({Scope.VIEWS}), "UInt16", "Rank of the view.", "1"),
    CatalogField("custom_var", BOTH, "String", "Custom variable.", "x", parameters=("customVarPosition",)),
    CatalogField("dynamic_var", BOTH, "String", "Dynamic variable.", "x", parameters=("dynamicVarKey",)),
)

_BY_SCOPE: dict[Scope, dict[str, CatalogField]] = {
    scope: {f.name: f for f in CATALOG if scope in f.scopes} for scope in Scope
}


def fields_for(scope: Scope) -> list[CatalogField]:
    return list(_BY_SCOPE[scope].values())


def lookup(scope: Scope, name: str) -> CatalogField | None:
    return _BY_SCOPE[scope].get(name)
