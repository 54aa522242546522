"""Templates: validation at save time, the sandbox, strict variables, escaping, locales,
sensitive values."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from gatehouse.notifications.domain.addresses import Channel
from gatehouse.notifications.domain.templates import (
    Localization,
    RenderError,
    Template,
    TemplateContent,
    TemplateVariable,
    check_inline,
    render,
    resolve_values,
    validate_content,
    validate_template_id,
)
from gatehouse.runtime.errors import InvalidArgument

NOW = datetime(2026, 1, 1, tzinfo=UTC)


def content(
    text: str = "Hi {{ name }}",
    *,
    html: str = "",
    subject: str = "Hello {{ name }}",
    channel: Channel = Channel.EMAIL,
    variables: tuple[TemplateVariable, ...] = (TemplateVariable("name", required=True),),
    localizations: tuple[Localization, ...] | None = None,
    default_locale: str = "en",
) -> TemplateContent:
    return TemplateContent(
        display_name="t",
        description="",
        channel=channel,
        default_locale=default_locale,
        localizations=localizations or (Localization("en", subject, text, html),),
        variables=variables,
    )


def template(c: TemplateContent) -> Template:
    return Template("t", c, 1, NOW, NOW)


def reason_of(c: TemplateContent) -> str:
    with pytest.raises(InvalidArgument) as refused:
        validate_content(c)
    return refused.value.reason


@pytest.mark.parametrize(
    "body",
    [
        "{{ ''.__class__ }}",
        "{{ ''.__class__.__mro__[1].__subclasses__() }}",
        "{{ name.__init__.__globals__ }}",
        "{{ name['__class__'] }}",
        "{{ name|attr('__class__') }}",
        "{% include 'other' %}",
        "{% import 'x' as y %}",
        "{% extends 'base' %}",
        "{{ name.format.__self__ }}",
    ],
)
def test_sandbox_escapes_are_refused_at_save_time(body: str) -> None:
    assert reason_of(content(body)) == "TEMPLATE_UNSAFE"


def test_the_sandbox_also_refuses_at_render_time() -> None:
    # A dynamic attribute the save-time check cannot see: the sandbox itself refuses it.
    c = content(
        "{{ name|attr(key) }}",
        variables=(TemplateVariable("name", required=True), TemplateVariable("key", required=True)),
    )
    t = template(c)
    with pytest.raises(RenderError) as refused:
        render(t, c.localizations[0], {"name": "x", "key": "__class__"})
    assert refused.value.reason in ("TEMPLATE_UNSAFE", "TEMPLATE_RENDER_ERROR")
    assert "class" not in render(t, c.localizations[0], {"name": "x", "key": "upper"}).text_body


def test_syntax_errors_name_the_line() -> None:
    with pytest.raises(InvalidArgument) as refused:
        validate_content(content("ok\n{% for x in %}"))
    assert refused.value.reason == "TEMPLATE_SYNTAX_ERROR"
    [violation] = refused.value.violations
    assert violation.field == "template.localizations[0].text_body"
    assert "line 2" in violation.description


def test_undeclared_variables_and_bad_names() -> None:
    assert reason_of(content("{{ other }}")) == "TEMPLATE_VARIABLE_UNDECLARED"
    assert reason_of(content(variables=(TemplateVariable("Name"),))) == "INVALID_VARIABLE_NAME"
    assert reason_of(content(variables=(TemplateVariable("range"),))) == "INVALID_VARIABLE_NAME"


def test_locales_and_channel_rules() -> None:
    two = (Localization("en", "s", "t"), Localization("EN", "s", "t"))
    assert reason_of(content(localizations=two)) == "DUPLICATE_LOCALE"
    assert reason_of(content(default_locale="es")) == "DEFAULT_LOCALE_MISSING"
    assert reason_of(content(default_locale="not a locale")) == "INVALID_LOCALE"
    assert reason_of(content(subject="")) == "CONTENT_CHANNEL_MISMATCH"
    assert reason_of(content(channel=Channel.SMS)) == "CONTENT_CHANNEL_MISMATCH"
    assert reason_of(content(channel=Channel.PUSH, html="<p>x</p>")) == "CONTENT_CHANNEL_MISMATCH"
    too_large = content("x" * (64 * 1024 + 1), subject="s", variables=())
    assert reason_of(too_large) == "TEMPLATE_TOO_LARGE"


def test_template_ids() -> None:
    validate_template_id("payment-receipt-email")
    for bad in ("", "Receipt", "1st", "a" * 64, "with_underscore"):
        with pytest.raises(InvalidArgument):
            validate_template_id(bad)


def test_rendering_escapes_html_but_not_text() -> None:
    c = content("Hi {{ name }}", html="<p>Hi {{ name }}</p>")
    message = render(template(c), c.localizations[0], {"name": "<script>x</script>"})
    assert message.text_body == "Hi <script>x</script>"
    assert message.html_body == "<p>Hi &lt;script&gt;x&lt;/script&gt;</p>"
    assert message.subject == "Hello <script>x</script>"


def test_values_required_defaults_and_undeclared_keys() -> None:
    c = content(
        "{{ a }} {{ b }}",
        subject="s",
        variables=(TemplateVariable("a", required=True), TemplateVariable("b", default_value="B")),
    )
    t = template(c)
    assert resolve_values(t, {"a": "A", "zzz": "ignored"}) == {"a": "A", "b": "B"}
    with pytest.raises(RenderError) as missing:
        resolve_values(t, {"b": "x"})
    assert missing.value.reason == "TEMPLATE_VARIABLE_MISSING"
    assert missing.value.field_path == "template.variables[a]"


def test_sensitive_values_are_redacted_in_the_stored_copy_only() -> None:
    c = content(
        "Link: {{ link }}",
        subject="Reset",
        variables=(TemplateVariable("link", required=True, sensitive=True),),
    )
    message = render(template(c), c.localizations[0], {"link": "https://x/?t=SECRET"})
    assert "SECRET" in message.text_body
    assert message.stored_text_body == "Link: [redacted]"


def test_locale_resolution_falls_back_to_language_then_default() -> None:
    c = content(
        localizations=(
            Localization("en", "s", "english"),
            Localization("es", "s", "spanish"),
            Localization("pt-BR", "s", "brazilian"),
        ),
        variables=(),
    )
    t = template(c)
    assert t.localization(["es-AR"]).text_body == "spanish"
    assert t.localization(["", "pt-br"]).text_body == "brazilian"
    assert t.localization(["fr"]).text_body == "english"


def test_inline_content_rules() -> None:
    check_inline(Channel.EMAIL, "s", "t", "<p>h</p>")
    for args, reason in (
        ((Channel.EMAIL, "s", "", ""), "CONTENT_REQUIRED"),
        ((Channel.SMS, "", "t", "<p>"), "CONTENT_CHANNEL_MISMATCH"),
        ((Channel.WHATSAPP, "subject", "t", ""), "CONTENT_CHANNEL_MISMATCH"),
        ((Channel.SMS, "", "x" * 1601, ""), "INVALID_FIELD"),
        ((Channel.EMAIL, "two\nlines", "t", ""), "INVALID_FIELD"),
    ):
        with pytest.raises(InvalidArgument) as refused:
            check_inline(*args)
        assert refused.value.reason == reason
