"""The seeded default templates of the event-driven messages. Operators replace them with
UpdateTemplate (a new version); the consumers always render the latest version."""

from __future__ import annotations

from gatehouse.notifications.domain.addresses import Channel
from gatehouse.notifications.domain.templates import (
    Localization,
    TemplateContent,
    TemplateVariable,
)

WELCOME = "welcome-email"
LOCKOUT = "account-locked-email"
PASSWORD_RESET = "password-reset-email"  # noqa: S105 - a template id, not a secret
RECEIPT = "payment-receipt-email"
PAYMENT_FAILED = "payment-failed-email"
REFUND = "payment-refunded-email"
VISITOR = "visitor-arrived-email"
ALERT = "alert-oncall-email"
EMERGENCY = "emergency-broadcast-email"


def _v(
    name: str, description: str, *, required: bool = True, sensitive: bool = False
) -> TemplateVariable:
    return TemplateVariable(name, description, required=required, sensitive=sensitive)


def _email(
    display_name: str,
    description: str,
    variables: tuple[TemplateVariable, ...],
    subject: str,
    text: str,
    html: str,
) -> TemplateContent:
    return TemplateContent(
        display_name=display_name,
        description=description,
        channel=Channel.EMAIL,
        default_locale="en",
        localizations=(Localization("en", subject, text, html),),
        variables=variables,
    )


_NAME = _v("display_name", "How to greet the user", required=False)

DEFAULT_TEMPLATES: tuple[tuple[str, TemplateContent], ...] = (
    (
        WELCOME,
        _email(
            "Welcome",
            "Sent on user.registered.",
            (_NAME, _v("email", "The address the account was registered with")),
            "Welcome to Gatehouse",
            "Hello {{ display_name or email }},\n\nyour Gatehouse account ({{ email }}) is "
            "ready. Welcome!\n",
            "<p>Hello {{ display_name or email }},</p><p>your Gatehouse account "
            "(<b>{{ email }}</b>) is ready. Welcome!</p>",
        ),
    ),
    (
        LOCKOUT,
        _email(
            "Account locked",
            "Sent on user.locked.",
            (
                _NAME,
                _v("failed_attempts", "Failed sign-ins that led to the lock"),
                _v("lock_expire_time", "When the lock lifts (UTC)"),
                _v("client_address", "Where the last attempt came from", required=False),
            ),
            "Your Gatehouse account is locked",
            "Hello {{ display_name }},\n\nafter {{ failed_attempts }} failed sign-ins your "
            "account is locked until {{ lock_expire_time }}.{% if client_address %} The last "
            "attempt came from {{ client_address }}.{% endif %}\nIf this was not you, reset "
            "your password.\n",
            "<p>Hello {{ display_name }},</p><p>after {{ failed_attempts }} failed sign-ins "
            "your account is locked until {{ lock_expire_time }}.</p><p>If this was not you, "
            "reset your password.</p>",
        ),
    ),
    (
        PASSWORD_RESET,
        _email(
            "Password reset",
            "Sent on password_reset.requested; the link holds the single-use token.",
            (
                _NAME,
                _v("reset_link", "The reset link with its token", sensitive=True),
                _v("expire_time", "When the link expires (UTC)"),
                _v("client_address", "Where the request came from", required=False),
            ),
            "Reset your Gatehouse password",
            "Hello {{ display_name }},\n\nreset your password here: {{ reset_link }}\nThe "
            "link works once, until {{ expire_time }}. If you did not ask for it, ignore "
            "this message.\n",
            '<p>Hello {{ display_name }},</p><p><a href="{{ reset_link }}">Reset your '
            "password</a>. The link works once, until {{ expire_time }}.</p>",
        ),
    ),
    (
        RECEIPT,
        _email(
            "Payment receipt",
            "Sent on payment.processed.",
            (
                _NAME,
                _v("payment", "The payment, payments/{payment}"),
                _v("amount", "Amount and currency, e.g. 12.50 EUR"),
                _v("description", "What was paid for", required=False),
                _v("card_last4", "Last four card digits", required=False),
                _v("date", "When it completed (UTC)"),
            ),
            "Payment receipt: {{ amount }}",
            "Hello {{ display_name }},\n\nwe received your payment of {{ amount }}"
            "{% if description %} for {{ description }}{% endif %} on {{ date }}"
            "{% if card_last4 %} (card ending {{ card_last4 }}){% endif %}.\n"
            "Reference: {{ payment }}\n",
            "<p>Hello {{ display_name }},</p><p>we received your payment of "
            "<b>{{ amount }}</b>{% if description %} for {{ description }}{% endif %} on "
            "{{ date }}.</p><p>Reference: {{ payment }}</p>",
        ),
    ),
    (
        PAYMENT_FAILED,
        _email(
            "Payment failed",
            "Sent on payment.failed.",
            (
                _NAME,
                _v("payment", "The payment, payments/{payment}"),
                _v("amount", "Amount and currency"),
                _v("failure_reason", "Why it failed", required=False),
            ),
            "Payment failed - action required",
            "Hello {{ display_name }},\n\nyour payment of {{ amount }} failed"
            "{% if failure_reason %}: {{ failure_reason }}{% endif %}. Please try again "
            "with another payment method.\nReference: {{ payment }}\n",
            "<p>Hello {{ display_name }},</p><p>your payment of <b>{{ amount }}</b> failed"
            "{% if failure_reason %}: {{ failure_reason }}{% endif %}.</p>",
        ),
    ),
    (
        REFUND,
        _email(
            "Refund issued",
            "Sent on payment.refunded.",
            (
                _NAME,
                _v("payment", "The payment, payments/{payment}"),
                _v("refund_amount", "What was refunded"),
                _v("remaining_amount", "What remains paid"),
                _v("reason", "Why", required=False),
            ),
            "Refund of {{ refund_amount }}",
            "Hello {{ display_name }},\n\nwe refunded {{ refund_amount }} of payment "
            "{{ payment }}{% if reason %} ({{ reason }}){% endif %}. Remaining: "
            "{{ remaining_amount }}.\n",
            "<p>Hello {{ display_name }},</p><p>we refunded <b>{{ refund_amount }}</b> of "
            "payment {{ payment }}.</p>",
        ),
    ),
    (
        VISITOR,
        _email(
            "Visitor arrived",
            "Sent to the host on visitor.checked_in.",
            (
                _NAME,
                _v("visitor_name", "The visitor's name"),
                _v("company", "The visitor's company", required=False),
                _v("building", "The building, buildings/{building}"),
            ),
            "{{ visitor_name }} has arrived",
            "Hello {{ display_name }},\n\n{{ visitor_name }}{% if company %} "
            "({{ company }}){% endif %} has checked in at {{ building }} to see you.\n",
            "<p>Hello {{ display_name }},</p><p><b>{{ visitor_name }}</b>"
            "{% if company %} ({{ company }}){% endif %} has checked in at {{ building }}.</p>",
        ),
    ),
    (
        ALERT,
        _email(
            "Alert for on-call staff",
            "Sent to the on-call role on alert.triggered.",
            (
                _NAME,
                _v("alert", "The alert, buildings/{b}/alerts/{a}"),
                _v("severity", "INFO, LOW, MEDIUM, HIGH or CRITICAL"),
                _v("summary", "One line"),
                _v("description", "Details", required=False),
                _v("building", "The building"),
            ),
            "[{{ severity }}] {{ summary }}",
            "{{ severity }} alert at {{ building }}: {{ summary }}\n"
            "{% if description %}\n{{ description }}\n{% endif %}\nAlert: {{ alert }}\n",
            "<p><b>{{ severity }}</b> alert at {{ building }}: {{ summary }}</p>"
            "{% if description %}<p>{{ description }}</p>{% endif %}<p>{{ alert }}</p>",
        ),
    ),
    (
        EMERGENCY,
        _email(
            "Emergency broadcast",
            "Sent to everyone concerned on emergency.triggered.",
            (
                _NAME,
                _v("building", "The building"),
                _v("mode", "What the doors do: all unlocked, or locked down"),
                _v("reason", "The stated reason", required=False),
            ),
            "EMERGENCY at {{ building }}",
            "Emergency at {{ building }}: {{ mode }}.{% if reason %} {{ reason }}.{% endif %}"
            "\nFollow the instructions of building staff.\n",
            "<p><b>Emergency at {{ building }}</b>: {{ mode }}."
            "{% if reason %} {{ reason }}.{% endif %}</p>"
            "<p>Follow the instructions of building staff.</p>",
        ),
    ),
)
