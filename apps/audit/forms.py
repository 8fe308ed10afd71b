"""The audit page's filters."""

from django import forms


class AuditFilterForm(forms.Form):
    actor = forms.CharField(max_length=150, required=False)
    action = forms.CharField(max_length=64, required=False)
    workspace = forms.TypedChoiceField(coerce=int, required=False, empty_value=None)
    since = forms.DateTimeField(
        required=False, widget=forms.DateTimeInput(attrs={"type": "datetime-local"})
    )
    until = forms.DateTimeField(
        required=False, widget=forms.DateTimeInput(attrs={"type": "datetime-local"})
    )

    def __init__(self, *args: object, workspaces: list[tuple[int, str]], **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.fields["workspace"].choices = [("", "All workspaces"), *workspaces]  # type: ignore[attr-defined]
