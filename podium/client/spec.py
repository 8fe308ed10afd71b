"""A job file: YAML in, the body of ``POST /api/jobs`` out, and errors that name the line.

The file is composed into YAML nodes before it is turned into values, so each field keeps
the line it was written on. A field refused here (unknown, or of the wrong type) or by the
console (its error's ``field``) is reported as ``job.yaml:7: gpus_per_node: ...``; a YAML
syntax error as ``job.yaml:3:5: ...``. The console remains the judge of every value: only
what it could not even parse is checked here.
"""

import difflib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml


class SpecError(Exception):
    """A job file refused, with the place in it: file, line, column and field when known."""

    def __init__(
        self,
        message: str,
        *,
        source: str,
        line: int | None = None,
        column: int | None = None,
        field: str | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.source = source
        self.line = line
        self.column = column
        self.field = field

    def __str__(self) -> str:
        where = self.source
        if self.line is not None:
            where += f":{self.line}"
            if self.column is not None:
                where += f":{self.column}"
        message = self.message
        if self.field and not _names_field(message, self.field):
            message = f"{self.field}: {message}"
        return f"{where}: {message}"


def _names_field(message: str, field: str) -> bool:
    """Whether the message already starts with the field's name (as the console's do)."""
    lowered = message.lower()
    name = field.split(".")[0].lower()
    return lowered.startswith((name, name.replace("_", " ")))


# Reading one field's value -----------------------------------------------------------------


class _Refused(Exception):
    """A value of the wrong type; the message says what was expected."""

    def __init__(self, message: str, node: yaml.Node) -> None:
        super().__init__(message)
        self.message = message
        self.node = node


def _value(node: yaml.Node) -> Any:
    """What a node stands for, built by PyYAML's safe constructor (no arbitrary objects)."""
    return yaml.constructor.SafeConstructor().construct_document(node)


def _kind(node: yaml.Node) -> str:
    if isinstance(node, yaml.MappingNode):
        return "a mapping"
    if isinstance(node, yaml.SequenceNode):
        return "a list"
    return repr(node.value)


def _text(node: yaml.Node) -> str:
    """Any scalar as the text written in the file (``name: 2024`` is the name "2024")."""
    if not isinstance(node, yaml.ScalarNode):
        raise _Refused(f"must be text, not {_kind(node)}", node)
    value = _value(node)
    if value is None:
        raise _Refused("must be text, not empty", node)
    return value if isinstance(value, str) else str(node.value)


def _whole(node: yaml.Node) -> int:
    value = _value(node)
    if isinstance(value, bool) or not isinstance(value, int):
        raise _Refused(f"must be a whole number, not {_kind(node)}", node)
    return value


def _number(node: yaml.Node) -> float | int:
    value = _value(node)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise _Refused(f"must be a number, not {_kind(node)}", node)
    return value


def _flag(node: yaml.Node) -> bool:
    value = _value(node)
    if not isinstance(value, bool):
        raise _Refused(f"must be true or false, not {_kind(node)}", node)
    return value


def _env(node: yaml.Node) -> dict[str, str]:
    """``NAME: value`` pairs; numbers and flags keep the text written (``LR: 3e-4``)."""
    if not isinstance(node, yaml.MappingNode):
        raise _Refused(f"must be a mapping of NAME: value, not {_kind(node)}", node)
    env = {}
    for key_node, value_node in node.value:
        name = str(key_node.value)
        if not isinstance(value_node, yaml.ScalarNode) or _value(value_node) is None:
            raise _Refused(f"the value of {name} must be text", value_node)
        env[name] = str(value_node.value)
    return env


def _names(node: yaml.Node) -> list[str]:
    """A list of texts: ``datasets: [imagenet, "tokens@3"]``."""
    if not isinstance(node, yaml.SequenceNode):
        raise _Refused(f'must be a list such as ["name", "name@version"], not {_kind(node)}', node)
    return [_text(item) for item in node.value]


def _workspace(node: yaml.Node) -> str | int:
    """A workspace's name or id."""
    value = _value(node)
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    return _text(node)


Reader = Callable[[yaml.Node], Any]

# The fields a job file may hold: ``POST /api/jobs``'s, with the workspace by name or id.
# Those marked optional may be left empty to take the console's default.
FIELDS: dict[str, tuple[Reader, bool]] = {
    "workspace": (_workspace, False),
    "name": (_text, False),
    "command": (_text, False),
    "kind": (_text, False),
    "nodes": (_whole, False),
    "gpus_per_node": (_whole, False),
    "procs_per_node": (_whole, True),
    "pool": (_text, False),
    "priority": (_text, False),
    "max_restarts": (_whole, True),
    "env": (_env, False),
    "workdir": (_text, False),
    "cpus": (_number, True),
    "memory_mb": (_whole, True),
    "grace_seconds": (_number, True),
    "max_duration": (_number, True),
    "hang_timeout": (_number, True),
    "resume": (_flag, False),
    "checkpoint_keep": (_whole, True),
    "datasets": (_names, False),
}
REQUIRED = ("name", "command")
# Where the console names a field differently from the file.
FIELD_ALIASES = {"workspace_id": "workspace"}
# Names people write for a field, and the field they mean.
MISNAMED = {
    "workspace_id": "workspace",
    "gpus": "gpus_per_node",
    "gpu": "gpus_per_node",
    "nproc_per_node": "procs_per_node",
    "memory": "memory_mb",
    "restarts": "max_restarts",
    "dataset": "datasets",
    "cmd": "command",
}


# The file ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class JobFile:
    """A parsed job file: the job's fields and, for each, where it was written."""

    source: str
    fields: dict[str, Any]
    root: yaml.MappingNode

    @property
    def workspace(self) -> str | int | None:
        """The workspace the file names, by name or id, if it names one."""
        return self.fields.get("workspace")

    def payload(self, workspace_id: int) -> dict[str, Any]:
        """The body of ``POST /api/jobs``."""
        body = {k: v for k, v in self.fields.items() if k != "workspace"}
        return {"workspace_id": workspace_id, **body}

    def error(self, message: str, field: str | None = None) -> SpecError:
        """An error about ``field`` (``env.NAME`` and ``datasets.1`` too), placed at its line.

        A message that starts with one item of a listed field (``tokens@2: no such
        version``) is placed at that item's line.
        """
        if field is not None:
            first, _, rest = field.partition(".")
            field = ".".join(filter(None, (FIELD_ALIASES.get(first, first), rest)))
        found = self._node(field) if field else None
        line = None
        if found is not None:
            where, value = found
            items = value.value if isinstance(value, yaml.SequenceNode) else []
            named = [i for i in items if isinstance(i, yaml.ScalarNode) and i.value]
            where = next((i for i in named if message.startswith(f"{i.value}:")), where)
            line = where.start_mark.line + 1
        return SpecError(message, source=self.source, line=line, field=field)

    def _node(self, field: str) -> tuple[yaml.Node, yaml.Node] | None:
        """Where the dotted ``field`` was written (its key, or its item in a list) and its
        value, as deep as the file goes."""
        found: tuple[yaml.Node, yaml.Node] | None = None
        node: yaml.Node = self.root
        for part in field.split("."):
            if isinstance(node, yaml.MappingNode):
                pair = next((p for p in node.value if str(p[0].value) == part), None)
                if pair is None:
                    break
                found, node = pair, pair[1]
            elif isinstance(node, yaml.SequenceNode) and part.isdigit():
                if int(part) >= len(node.value):
                    break
                node = node.value[int(part)]
                found = (node, node)
            else:
                break
        return found


def _syntax_error(exc: yaml.YAMLError, source: str) -> SpecError:
    if isinstance(exc, yaml.MarkedYAMLError) and exc.problem_mark is not None:
        mark = exc.problem_mark
        problem = (exc.problem or "invalid YAML").removeprefix("but ")
        if exc.context and exc.context_mark is not None:
            problem = f"{problem} ({exc.context}, line {exc.context_mark.line + 1})"
        elif exc.context:
            problem = f"{problem} ({exc.context})"
        return SpecError(problem, source=source, line=mark.line + 1, column=mark.column + 1)
    return SpecError(f"invalid YAML: {exc}", source=source)


def _compose(text: str, source: str) -> yaml.Node:
    """The document's node tree, each node with its place in the file."""
    loader = yaml.SafeLoader(text)
    try:
        root = loader.get_single_node()
    except yaml.YAMLError as exc:
        raise _syntax_error(exc, source) from None
    finally:
        loader.dispose()
    if root is None:
        raise SpecError(
            "the file is empty; write the job's fields as `name: value` lines", source=source
        )
    return root


def _unknown(name: str) -> str:
    meant = MISNAMED.get(name) or next(iter(difflib.get_close_matches(name, FIELDS, n=1)), None)
    if meant:
        return f"unknown field {name!r}; did you mean {meant}?"
    return f"unknown field {name!r}; the fields are: {', '.join(FIELDS)}"


def _field_read(name: str, key: yaml.Node, node: yaml.Node, *, source: str) -> Any:
    """The value of one field, or None for an optional field left empty."""
    read, optional = FIELDS[name]
    line = key.start_mark.line + 1
    try:
        if _value(node) is None:
            if optional:
                return None
            raise SpecError("must not be empty", source=source, line=line, field=name)
        return read(node)
    except _Refused as exc:
        where = line if exc.node is node else exc.node.start_mark.line + 1
        raise SpecError(exc.message, source=source, line=where, field=name) from None
    except yaml.YAMLError as exc:
        raise _syntax_error(exc, source) from None


def job_file_parse(text: str, *, source: str) -> JobFile:
    """Read a job file's text; ``source`` names the file in errors."""
    root = _compose(text, source)
    if not isinstance(root, yaml.MappingNode):
        raise SpecError(
            f"a job file is a mapping of `field: value` lines, not {_kind(root)}",
            source=source,
            line=root.start_mark.line + 1,
        )
    seen: dict[str, int] = {}
    fields: dict[str, Any] = {}
    for key_node, value_node in root.value:
        name = str(key_node.value)
        line = key_node.start_mark.line + 1
        if name not in FIELDS:
            raise SpecError(_unknown(name), source=source, line=line)
        if name in seen:
            raise SpecError(
                f"given twice (first on line {seen[name]})", source=source, line=line, field=name
            )
        seen[name] = line
        value = _field_read(name, key_node, value_node, source=source)
        if value is not None:
            fields[name] = value
    job_file = JobFile(source=source, fields=fields, root=root)
    for name in REQUIRED:
        if name not in fields:
            raise job_file.error(f"{name} is required", name)
    return job_file


def job_file_read(path: str | Path) -> JobFile:
    """Read and parse the job file at ``path``."""
    source = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise SpecError(f"cannot read the file: {exc}", source=source) from None
    return job_file_parse(text, source=source)
