"""Which registered model version a reference means: ``models:/name@alias``, ``models:/name/N``, or a bare
alias or version of a named model.

One resolver for the DAGs, the scoring job and ``make run``: it answers with a concrete version or a
:class:`ModelNotFound` that says what the registry holds (MLflow's own alias lookup reports a missing alias
as a bad request, which would also hide real errors). Promotion and the gate are in lifecycle/registry.py;
this module imports only MLflow's client types, so a scoring driver resolves its model without loading the
training code.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING

from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import RESOURCE_DOES_NOT_EXIST, ErrorCode

if TYPE_CHECKING:
    from mlflow.entities.model_registry import RegisteredModel
    from mlflow.tracking import MlflowClient

# The aliases of the registered model (their meaning: lifecycle/registry.py).
CHAMPION, PREVIOUS, CHALLENGER = "champion", "previous", "challenger"


def registered_model(client: MlflowClient, model_name: str) -> RegisteredModel | None:
    """The registered model, or None when the registry does not hold it (other errors are raised)."""
    try:
        return client.get_registered_model(model_name)
    except MlflowException as exc:
        if exc.error_code == ErrorCode.Name(RESOURCE_DOES_NOT_EXIST):
            return None
        raise


def aliased_version(client: MlflowClient, model_name: str, alias: str) -> str | None:
    """The version number an alias points to, or None when the alias (or the model) does not exist.

    Read from the registered model's alias map: ``get_model_version_by_alias`` reports a missing alias as
    INVALID_PARAMETER_VALUE, which would also hide real errors. Versions are returned as strings (the SQL
    store gives integers, the REST API strings).
    """
    registered = registered_model(client, model_name)
    version = None if registered is None else registered.aliases.get(alias)
    return None if version is None else str(version)


MODELS_URI = re.compile(r"^models:/(?P<name>[^/@]+)(?:@(?P<alias>[^/@]+)|/(?P<version>[1-9][0-9]*))$")
BARE_REFERENCE = re.compile(r"^(?:(?P<version>[1-9][0-9]*)|(?P<alias>[A-Za-z][A-Za-z0-9_-]*))$")


class ModelNotFound(LookupError):
    """A model reference that names no existing version (no such model, version or alias)."""


@dataclass(frozen=True)
class ModelReference:
    """A registered model and one alias or one version of it."""

    name: str
    alias: str | None = None
    version: str | None = None

    def __str__(self) -> str:
        return f"models:/{self.name}@{self.alias}" if self.alias else f"models:/{self.name}/{self.version}"


def parse_model_reference(reference: str | int, model_name: str | None = None) -> ModelReference:
    """``models:/name@alias`` or ``models:/name/N``; with ``model_name``, also a bare alias or version."""
    text = str(reference).strip()
    match = MODELS_URI.match(text) or (BARE_REFERENCE.match(text) if model_name else None)
    if match is None:
        forms = "models:/<name>@<alias> or models:/<name>/<version>"
        if model_name:
            forms += f", or a version number or an alias of {model_name!r}"
        raise ValueError(f"model reference {text!r}: expected {forms}")
    name = match.groupdict().get("name") or model_name
    return ModelReference(name, match["alias"], match["version"])


def resolve_version(client: MlflowClient, reference: str | int | ModelReference,
                    model_name: str | None = None) -> str:
    """The concrete version number (a string) a reference means now; :class:`ModelNotFound` when none.

    Aliases are read with :func:`aliased_version` (the plain alias lookup reports a missing alias like a
    bad request). Resolve once and pass ``models:/name/N`` on, so every reader uses the same version even
    if the alias moves meanwhile.
    """
    ref = reference if isinstance(reference, ModelReference) else parse_model_reference(reference, model_name)
    if ref.alias is not None:
        version = aliased_version(client, ref.name, ref.alias)
        if version is None:
            raise ModelNotFound(f"{ref}: no alias {ref.alias!r} on {_registry_contents(client, ref.name)}")
        return version
    try:
        client.get_model_version(ref.name, ref.version)
    except MlflowException as exc:
        if exc.error_code != ErrorCode.Name(RESOURCE_DOES_NOT_EXIST):
            raise
        raise ModelNotFound(f"{ref}: no version {ref.version} of {_registry_contents(client, ref.name)}") from exc
    return str(ref.version)


def _registry_contents(client: MlflowClient, model_name: str) -> str:
    """What the registry holds under ``model_name``, for an error message."""
    registered = registered_model(client, model_name)
    if registered is None:
        return f"registered model {model_name!r}: it does not exist in the registry"
    versions = sorted(int(v.version) for v in client.search_model_versions(f"name = '{model_name}'"))
    aliases = ", ".join(f"@{alias} -> {version}" for alias, version in sorted(registered.aliases.items()))
    held = f"versions {', '.join(map(str, versions))}" if versions else "no versions"
    return f"registered model {model_name!r} ({held}; aliases: {aliases or 'none'})"
