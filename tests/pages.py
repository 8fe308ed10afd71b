"""What page tests read from a response (its HTML, one table row, one form field's label
with its error) and the smallest input the job submit form accepts."""

from typing import Any

from apps.accounts.models import Workspace


def html(response: Any) -> str:
    """The response's body as text."""
    return response.content.decode()


def row_of(page: str, row_id: str) -> str:
    """The table row whose ``id`` is ``row_id``, up to its closing tag."""
    row = page[page.index(f'id="{row_id}"') :]
    return row[: row.index("</tr>")]


def field_label(page: str, field: str) -> str:
    """The label holding the form field named ``field``, with its error, from the field on."""
    label = page[page.index(f'name="{field}"') :]
    return label[: label.index("</label>")]


def job_form(workspace: Workspace, **change: Any) -> dict[str, Any]:
    """A one-GPU job of ``workspace`` as the submit form posts it, with ``change`` applied."""
    return {
        "workspace": workspace.pk,
        "name": "x",
        "command": "true",
        "nodes": 1,
        "gpus_per_node": 1,
        "priority": "normal",
        **change,
    }
