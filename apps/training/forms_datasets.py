"""Page forms of datasets. They parse input only; the services decide."""

from typing import Any

from django import forms


class DatasetFilterForm(forms.Form):
    q = forms.CharField(max_length=128, required=False, label="Name or description")
    workspace = forms.TypedChoiceField(coerce=int, required=False, empty_value=None)

    def __init__(self, *args: Any, workspaces: list[tuple[int, str]], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fields["workspace"].choices = [("", "All"), *workspaces]  # type: ignore[attr-defined]


class VersionForm(forms.Form):
    """A version's data: a path on shared storage, or a file to upload."""

    path = forms.CharField(
        max_length=1024,
        required=False,
        label="Path on shared storage",
        widget=forms.TextInput(attrs={"spellcheck": "false", "placeholder": "/data/..."}),
    )
    file = forms.FileField(required=False, label="Or upload a file")
    note = forms.CharField(max_length=300, required=False, help_text="What this version holds.")

    def __init__(self, *args: Any, roots: str, max_mb: int, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fields["path"].help_text = f"A file or directory under {roots}."
        self.fields["file"].help_text = f"Up to {max_mb} MB; stored in Podium's upload area."

    def clean(self) -> dict[str, Any]:
        data = super().clean() or {}
        if bool((data.get("path") or "").strip()) == bool(data.get("file")):
            self.add_error("path", "Give either a path or a file to upload.")
        return data


class DatasetForm(VersionForm):
    workspace = forms.TypedChoiceField(coerce=int)
    name = forms.CharField(
        max_length=64, help_text="Letters, digits, '.', '_' or '-'; jobs refer to it by name."
    )
    description = forms.CharField(
        required=False, max_length=2000, widget=forms.Textarea(attrs={"rows": 3})
    )

    field_order = ("workspace", "name", "description", "path", "file", "note")

    def __init__(self, *args: Any, workspaces: list[tuple[int, str]], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fields["workspace"].choices = workspaces  # type: ignore[attr-defined]
        self.fields["note"].help_text = "What version 1 holds."


class DescriptionForm(forms.Form):
    description = forms.CharField(
        required=False, max_length=2000, widget=forms.Textarea(attrs={"rows": 3})
    )
