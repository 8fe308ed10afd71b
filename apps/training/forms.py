"""Forms of the training pages. They parse input only; selectors and services decide."""

from typing import Any

from django import forms

from apps.training.selectors.recent import LOG_TAIL_MAX

LINE_KEY = r"^\d{1,9}:\d{1,5}:\d{1,9}$"


class LogFilterForm(forms.Form):
    """Which output lines the job page's log panel reads."""

    rank = forms.IntegerField(required=False, min_value=0, max_value=65535)
    attempt = forms.IntegerField(required=False, min_value=1)
    q = forms.CharField(required=False, max_length=200, strip=False)
    before = forms.IntegerField(required=False, min_value=1)
    before_key = forms.RegexField(
        LINE_KEY,
        required=False,
        help_text="attempt:rank:seq of a line shown live, whose row id the page lacks.",
    )
    limit = forms.IntegerField(required=False, min_value=1, max_value=LOG_TAIL_MAX)

    def line_key(self) -> tuple[int, int, int] | None:
        """``before_key`` as (attempt, rank, seq), when given."""
        key = self.cleaned_data.get("before_key")
        if not key:
            return None
        attempt, rank, seq = (int(part) for part in key.split(":"))
        return attempt, rank, seq


class ExampleRunForm(forms.Form):
    """Which example to run, and in which workspace (``workspace_get`` decides whether
    the user may see it)."""

    example = forms.ChoiceField()
    workspace = forms.IntegerField(min_value=1)

    def __init__(self, *args: Any, examples: list[tuple[str, str]], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fields["example"].choices = examples  # type: ignore[attr-defined]
