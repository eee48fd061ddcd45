"""Reading the deployment files the way Docker does, for static checks without a Docker engine.

- :func:`read_env_file` and :func:`interpolate`: Compose's ``.env`` format and its variable substitution
  (``${VAR}``, ``${VAR:-default}``, ``${VAR-default}``, ``${VAR:?error}``, ``${VAR?error}``,
  ``${VAR:+other}``, ``${VAR+other}``, ``$VAR`` and ``$$`` for a literal dollar);
- :func:`dockerignore_excludes`: whether ``.dockerignore`` keeps a path out of the build context (last
  matching pattern wins, a path is excluded with its parent folder, ``**`` spans folders);
- :func:`dockerfile_instructions`: a Dockerfile's instructions with continuation lines joined.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
DOCKER = ROOT / "docker"
COMPOSE_FILE = DOCKER / "compose.yaml"
GPU_WORKER_FILE = DOCKER / "compose.gpu-worker.yaml"
ENV_EXAMPLE = DOCKER / ".env.example"
DOCKERFILE = DOCKER / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
CONSTRAINTS = ROOT / "constraints.txt"
CONTINUATION = "\\"
SECRET_NAME = re.compile(r"PASSWORD|SECRET|_KEY\b|TOKEN")
# Host-specific values of the remote GPU worker's file, empty in .env.example like the secrets.
REMOTE_WORKER_VALUES = {"STACK_HOST": "stack.example.internal", "WORKER_HOSTNAME": "gpu-1.example.internal",
                        "LAKE_PATH": "/mnt/lake"}

_NAME = r"[A-Za-z_][A-Za-z0-9_]*"
_TOKEN = re.compile(rf"\$\$|\$\{{(?P<braced>{_NAME})(?:(?P<op>:?[-?+])(?P<arg>[^}}]*))?\}}|\$(?P<plain>{_NAME})")


def is_secret(name: str) -> bool:
    """Whether a variable or environment key names a secret (a password, key or token)."""
    return bool(SECRET_NAME.search(name))


class InterpolationError(ValueError):
    """A required variable is unset (``${VAR:?message}``) or the syntax is not Compose's."""


def read_env_file(path: Path) -> dict[str, str]:
    """``KEY=value`` lines of a Compose env file (comments and blank lines skipped, no quoting used)."""
    values = {}
    for number, line in enumerate(path.read_text().splitlines(), 1):
        text = line.strip()
        if not text or text.startswith("#"):
            continue
        key, sep, value = text.partition("=")
        if not sep or not re.fullmatch(_NAME, key):
            raise ValueError(f"{path}:{number}: expected KEY=value, got {line!r}")
        values[key] = value
    return values


def variables_in(text: str) -> set[str]:
    """Names of the variables a Compose string substitutes (escaped ``$$`` excluded)."""
    return {m.group("braced") or m.group("plain") for m in _TOKEN.finditer(text) if m.group(0) != "$$"}


def references(text: str) -> list[tuple[str, str | None, str | None]]:
    """Every substitution in ``text`` as (name, operator, argument)."""
    return [(m.group("braced") or m.group("plain"), m.group("op"), m.group("arg"))
            for m in _TOKEN.finditer(text) if m.group(0) != "$$"]


def _substitute(match: re.Match[str], env: Mapping[str, str]) -> str:
    if match.group(0) == "$$":
        return "$"
    name = match.group("braced") or match.group("plain")
    op, arg = match.group("op"), match.group("arg") or ""
    value = env.get(name)
    is_set, non_empty = value is not None, bool(value)
    if op in (":-", "-"):
        return value if (non_empty if op == ":-" else is_set) else arg
    if op in (":?", "?"):
        if not (non_empty if op == ":?" else is_set):
            raise InterpolationError(f"required variable {name} is missing a value: {arg}")
        return value or ""
    if op in (":+", "+"):
        return arg if (non_empty if op == ":+" else is_set) else ""
    return value or ""


def interpolate(node: Any, env: Mapping[str, str]) -> Any:
    """``node`` (a parsed Compose document or part of it) with every string substituted from ``env``."""
    if isinstance(node, str):
        if "${" in node and not _TOKEN.search(node):
            raise InterpolationError(f"unsupported substitution syntax in {node!r}")
        return _TOKEN.sub(lambda m: _substitute(m, env), node)
    if isinstance(node, dict):
        return {key: interpolate(value, env) for key, value in node.items()}
    if isinstance(node, list):
        return [interpolate(value, env) for value in node]
    return node


def strings(node: Any) -> Iterator[str]:
    """Every string value in a parsed document."""
    if isinstance(node, str):
        yield node
    elif isinstance(node, dict):
        for value in node.values():
            yield from strings(value)
    elif isinstance(node, list):
        for value in node:
            yield from strings(value)


def load_yaml(path: Path) -> dict[str, Any]:
    """A YAML document with its anchors and ``<<`` merge keys resolved (as Compose reads it)."""
    document = yaml.safe_load(path.read_text())
    if not isinstance(document, dict):
        raise ValueError(f"{path}: expected a mapping at the top level")
    return document


def environment(service: Mapping[str, Any]) -> dict[str, str]:
    """A service's ``environment`` as a mapping (Compose allows a list of KEY=value too)."""
    value = service.get("environment") or {}
    if isinstance(value, list):
        return dict(item.split("=", 1) for item in value)
    return {key: "" if item is None else str(item) for key, item in value.items()}


def command_list(service: Mapping[str, Any]) -> list[str]:
    command = service.get("command") or []
    return command.split() if isinstance(command, str) else [str(part) for part in command]


def volume_targets(service: Mapping[str, Any]) -> dict[str, str]:
    """Mount path -> source (volume name or host path) of a service's short-syntax volumes."""
    mounts = {}
    for entry in service.get("volumes") or []:
        source, target = entry.split(":")[:2]
        mounts[target] = source
    return mounts


def _pattern_regex(pattern: str) -> re.Pattern[str]:
    """A .dockerignore pattern as a regular expression over slash-separated relative paths."""
    pattern = pattern.strip("/")
    parts, index = [], 0
    while index < len(pattern):
        if pattern.startswith("**/", index):
            parts.append("(?:.*/)?")
            index += 3
        elif pattern.startswith("**", index):
            parts.append(".*")
            index += 2
        elif pattern[index] == "*":
            parts.append("[^/]*")
            index += 1
        elif pattern[index] == "?":
            parts.append("[^/]")
            index += 1
        else:
            parts.append(re.escape(pattern[index]))
            index += 1
    return re.compile("".join(parts) + r"\Z")


def dockerignore_excludes(path: str, patterns: list[str]) -> bool:
    """Whether ``path`` (relative to the context) is left out: the last pattern matching it or one of its
    parent folders decides; ``!pattern`` brings a path back."""
    candidates = [path.strip("/")]
    while "/" in candidates[-1]:
        candidates.append(candidates[-1].rsplit("/", 1)[0])
    excluded = False
    for raw in patterns:
        negated = raw.startswith("!")
        regex = _pattern_regex(raw[1:] if negated else raw)
        if any(regex.match(candidate) for candidate in candidates):
            excluded = not negated
    return excluded


def dockerignore_patterns(path: Path = DOCKERIGNORE) -> list[str]:
    return [line.strip() for line in path.read_text().splitlines() if line.strip() and not line.startswith("#")]


def dockerfile_instructions(path: Path = DOCKERFILE) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined and comments dropped."""
    instructions, current = [], ""
    for line in path.read_text().splitlines():
        stripped = line.strip()
        if stripped.startswith("#") or not stripped:
            continue
        continued = stripped.endswith(CONTINUATION)
        current = f"{current} {stripped.removesuffix(CONTINUATION).strip()}".strip()
        if not continued:
            keyword, _, arguments = current.partition(" ")
            instructions.append((keyword.upper(), arguments.strip()))
            current = ""
    return instructions


def read_pins(path: Path) -> dict[str, str]:
    """``name==version`` lines of a requirements or constraints file: canonical name -> version."""
    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name

    pins = {}
    for line in path.read_text().splitlines():
        text = line.split("#", 1)[0].strip()
        if not text:
            continue
        requirement = Requirement(text)
        specifiers = list(requirement.specifier)
        if len(specifiers) != 1 or specifiers[0].operator != "==":
            raise ValueError(f"{path}: {text!r} is not pinned with ==")
        pins[canonicalize_name(requirement.name)] = specifiers[0].version
    return pins
