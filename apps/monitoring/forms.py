"""Page forms. They parse input only; the selectors and services decide."""

from django import forms

from apps.monitoring.models import Health, HealthEvent, Node
from apps.monitoring.selectors import EVENT_STATUSES
from podium.agent.protocol import FAULTS

SHARED = "shared"


class NodeFilterForm(forms.Form):
    search = forms.CharField(max_length=128, required=False, label="Name")
    state = forms.ChoiceField(choices=[("", "Live nodes"), *Node.State.choices], required=False)
    health = forms.ChoiceField(choices=[("", "Any"), *Health.choices], required=False)
    workspace = forms.ChoiceField(required=False)

    def __init__(self, *args: object, workspaces: list[tuple[int, str]], **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.fields["workspace"].choices = [  # type: ignore[attr-defined]
            ("", "All"),
            (SHARED, "Shared"),
            *((str(pk), name) for pk, name in workspaces),
        ]


class EventFilterForm(forms.Form):
    node = forms.TypedChoiceField(coerce=int, required=False, empty_value=None)
    gpu = forms.IntegerField(min_value=0, max_value=255, required=False, label="GPU")
    severity = forms.ChoiceField(
        choices=[("", "Any"), *HealthEvent.Severity.choices], required=False
    )
    status = forms.ChoiceField(
        choices=[("", "Any"), *((s, s.capitalize()) for s in EVENT_STATUSES)], required=False
    )
    source = forms.ChoiceField(required=False)
    since = forms.DateTimeField(
        required=False, widget=forms.DateTimeInput(attrs={"type": "datetime-local"})
    )

    def __init__(
        self,
        *args: object,
        nodes: list[tuple[int, str]],
        sources: list[str],
        **kwargs: object,
    ) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.fields["node"].choices = [("", "All nodes"), *nodes]  # type: ignore[attr-defined]
        self.fields["source"].choices = [("", "Any"), *((s, s) for s in sources)]  # type: ignore[attr-defined]


class JoinTokenForm(forms.Form):
    name = forms.CharField(max_length=100)
    workspace = forms.ChoiceField(
        help_text="Nodes joining with this token are dedicated to this workspace."
    )
    expires_in_hours = forms.IntegerField(
        min_value=1,
        max_value=24 * 365,
        required=False,
        initial=24,
        label="Expires in (hours)",
        help_text="Leave empty for a token that does not expire.",
    )
    max_uses = forms.IntegerField(
        min_value=1, required=False, label="Maximum uses", help_text="Empty: any number of nodes."
    )

    def __init__(
        self, *args: object, workspaces: list[tuple[int, str]], shared: bool, **kwargs: object
    ) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        choices = [(SHARED, "Shared (whole cluster)")] if shared else []
        choices += [(str(pk), name) for pk, name in workspaces]
        self.fields["workspace"].choices = choices  # type: ignore[attr-defined]


class AlertChannelForm(forms.Form):
    name = forms.CharField(max_length=100)
    url = forms.CharField(max_length=500, label="Webhook URL")
    secret = forms.CharField(
        max_length=200,
        required=False,
        widget=forms.PasswordInput,
        label="Signing secret",
        help_text="Optional: requests are signed with HMAC-SHA256 of the body.",
    )
    min_severity = forms.ChoiceField(
        choices=HealthEvent.Severity.choices,
        initial=HealthEvent.Severity.WARNING,
        label="Minimum severity",
    )
    enabled = forms.BooleanField(required=False, initial=True)


class FaultForm(forms.Form):
    fault = forms.ChoiceField(choices=[(f, f.replace("_", " ")) for f in FAULTS])
    code = forms.IntegerField(required=False, min_value=1, max_value=999, label="XID")
