"""Templates over gRPC: versions, locales, the sandbox, variables, and sending from them."""

from __future__ import annotations

import grpc
from google.protobuf import field_mask_pb2

from gatehouse.notifications.v1 import notifications_pb2 as pb
from tests.integration.notifications.harness import (
    ALICE,
    NotificationsHarness,
    bad_request,
    email,
    refused,
    request_id,
)


def receipt_template(**overrides: object) -> pb.Template:
    fields: dict[str, object] = {
        "display_name": "Receipt",
        "channel": pb.CHANNEL_EMAIL,
        "default_locale": "en",
        "localizations": [
            pb.TemplateLocalization(
                locale="en",
                subject="Receipt for {{ amount }}",
                text_body="Hi {{ name }}, you paid {{ amount }}.",
                html_body="<p>Hi {{ name }}, you paid {{ amount }}.</p>",
            ),
            pb.TemplateLocalization(
                locale="es",
                subject="Recibo de {{ amount }}",
                text_body="Hola {{ name }}, pagaste {{ amount }}.",
            ),
        ],
        "variables": [
            pb.TemplateVariable(name="name", required=True),
            pb.TemplateVariable(name="amount", required=True),
        ],
    }
    fields.update(overrides)
    return pb.Template(**fields)  # type: ignore[arg-type]


async def create(
    harness: NotificationsHarness, template_id: str, template: pb.Template
) -> pb.Template:
    response = await harness.stub().CreateTemplate(
        pb.CreateTemplateRequest(
            template_id=template_id, template=template, request_id=request_id()
        ),
        metadata=harness.staff(),
    )
    return response.template


async def test_create_get_update_keeps_old_versions(notifications: NotificationsHarness) -> None:
    created = await create(notifications, "receipt", receipt_template())
    assert created.name == "templates/receipt"
    assert created.version == 1
    changed = receipt_template()
    changed.localizations[0].subject = "Your receipt: {{ amount }}"
    response = await notifications.stub().UpdateTemplate(
        pb.UpdateTemplateRequest(
            template=pb.Template(
                name="templates/receipt",
                localizations=changed.localizations,
                etag=created.etag,
            ),
            update_mask=field_mask_pb2.FieldMask(paths=["localizations"]),
            request_id=request_id(),
        ),
        metadata=notifications.staff(),
    )
    assert response.template.version == 2
    old = await notifications.stub().GetTemplate(
        pb.GetTemplateRequest(name="templates/receipt", version=1), metadata=notifications.staff()
    )
    assert old.template.localizations[0].subject == "Receipt for {{ amount }}"
    latest = await notifications.stub().GetTemplate(
        pb.GetTemplateRequest(name="templates/receipt"), metadata=notifications.staff()
    )
    assert latest.template.version == 2
    # A stale etag is refused.
    await refused(
        notifications.stub().UpdateTemplate(
            pb.UpdateTemplateRequest(
                template=pb.Template(name="templates/receipt", display_name="x", etag=created.etag),
                update_mask=field_mask_pb2.FieldMask(paths=["display_name"]),
                request_id=request_id(),
            ),
            metadata=notifications.staff(),
        ),
        grpc.StatusCode.ABORTED,
        "ETAG_MISMATCH",
    )
    await refused(
        notifications.stub().GetTemplate(
            pb.GetTemplateRequest(name="templates/receipt", version=9),
            metadata=notifications.staff(),
        ),
        grpc.StatusCode.NOT_FOUND,
        "TEMPLATE_VERSION_NOT_FOUND",
    )


async def test_sending_renders_the_latest_version_in_the_right_locale_with_escaping(
    notifications: NotificationsHarness,
) -> None:
    await create(notifications, "receipt", receipt_template())
    [first] = await notifications.send(
        recipient=pb.Recipient(address=email("x@example.com")),
        template=pb.TemplateReference(
            name="templates/receipt",
            locale="es-AR",
            variables={"name": "<Ana>", "amount": "10 EUR", "ignored": "x"},
        ),
    )
    assert first.template.version == 1
    assert first.template.locale == "es"
    assert first.subject == "Recibo de 10 EUR"
    assert first.text_body == "Hola <Ana>, pagaste 10 EUR."
    # The cached latest version is replaced on update.
    await notifications.stub().UpdateTemplate(
        pb.UpdateTemplateRequest(
            template=pb.Template(name="templates/receipt", default_locale="es"),
            update_mask=field_mask_pb2.FieldMask(paths=["default_locale"]),
            request_id=request_id(),
        ),
        metadata=notifications.staff(),
    )
    [second] = await notifications.send(
        recipient=pb.Recipient(address=email("y@example.com")),
        template=pb.TemplateReference(
            name="templates/receipt", variables={"name": "<Ana>", "amount": "5 EUR"}
        ),
    )
    assert second.template.version == 2
    assert second.template.locale == "es"
    [in_english] = await notifications.send(
        recipient=pb.Recipient(address=email("z@example.com")),
        template=pb.TemplateReference(
            name="templates/receipt", locale="en", variables={"name": "<Ana>", "amount": "1 EUR"}
        ),
    )
    await notifications.deliver_until_idle()
    mails = await notifications.sink.wait_for(3)
    english = next(m for m in mails if m.recipients == ("z@example.com",))
    assert "<p>Hi &lt;Ana&gt;, you paid 1 EUR.</p>" in english.part("text/html")
    assert english.part("text/plain").strip() == "Hi <Ana>, you paid 1 EUR."
    assert in_english.template.locale == "en"


async def test_sandbox_escapes_and_bad_templates_are_refused_at_save_time(
    notifications: NotificationsHarness,
) -> None:
    cases = [
        ("{{ ''.__class__ }}", "TEMPLATE_UNSAFE"),
        ("{{ name.__class__.__mro__ }}", "TEMPLATE_UNSAFE"),
        ("{{ name['__class__'] }}", "TEMPLATE_UNSAFE"),
        ("{% include 'x' %}", "TEMPLATE_UNSAFE"),
        ("{{ name.format.__globals__ }}", "TEMPLATE_UNSAFE"),
        ("Hello {{ name ", "TEMPLATE_SYNTAX_ERROR"),
        ("Hello {{ nobody }}", "TEMPLATE_VARIABLE_UNDECLARED"),
    ]
    for index, (body, reason) in enumerate(cases):
        template = receipt_template(
            localizations=[pb.TemplateLocalization(locale="en", subject="s", text_body=body)]
        )
        status = await refused(
            notifications.stub().CreateTemplate(
                pb.CreateTemplateRequest(
                    template_id=f"bad-{index}", template=template, request_id=request_id()
                ),
                metadata=notifications.staff(),
            ),
            grpc.StatusCode.INVALID_ARGUMENT,
            reason,
        )
        [violation] = bad_request(status).field_violations
        assert violation.field == "template.localizations[0].text_body"
    syntax = await refused(
        notifications.stub().CreateTemplate(
            pb.CreateTemplateRequest(
                template_id="bad-syntax",
                template=receipt_template(
                    localizations=[
                        pb.TemplateLocalization(
                            locale="en", subject="s", text_body="line one\n{% if name %}"
                        )
                    ]
                ),
                request_id=request_id(),
            ),
            metadata=notifications.staff(),
        ),
        grpc.StatusCode.INVALID_ARGUMENT,
        "TEMPLATE_SYNTAX_ERROR",
    )
    assert "line 2" in bad_request(syntax).field_violations[0].description
    await refused(
        notifications.stub().CreateTemplate(
            pb.CreateTemplateRequest(
                template_id="sms-html",
                template=receipt_template(
                    channel=pb.CHANNEL_SMS,
                    localizations=[
                        pb.TemplateLocalization(locale="en", text_body="t", html_body="<p>")
                    ],
                ),
                request_id=request_id(),
            ),
            metadata=notifications.staff(),
        ),
        grpc.StatusCode.INVALID_ARGUMENT,
        "CONTENT_CHANNEL_MISMATCH",
    )
    listed = await notifications.stub().ListTemplates(
        pb.ListTemplatesRequest(), metadata=notifications.staff()
    )
    assert not any(t.name.startswith("templates/bad") for t in listed.templates)


async def test_missing_variables_and_wrong_channels_are_refused_at_send_time(
    notifications: NotificationsHarness,
) -> None:
    await create(notifications, "receipt", receipt_template())
    status = await refused(
        notifications.send(
            recipient=pb.Recipient(address=email("x@example.com")),
            template=pb.TemplateReference(name="templates/receipt", variables={"name": "A"}),
        ),
        grpc.StatusCode.INVALID_ARGUMENT,
        "TEMPLATE_VARIABLE_MISSING",
    )
    assert bad_request(status).field_violations[0].field == "template.variables[amount]"
    await refused(
        notifications.send(
            channel=pb.CHANNEL_SMS,
            recipient=pb.Recipient(address=pb.Address(phone_number="+34600123456")),
            template=pb.TemplateReference(
                name="templates/receipt", variables={"name": "A", "amount": "1"}
            ),
        ),
        grpc.StatusCode.INVALID_ARGUMENT,
        "TEMPLATE_CHANNEL_MISMATCH",
    )
    await refused(
        notifications.send(
            recipient=pb.Recipient(user=ALICE),
            template=pb.TemplateReference(name="templates/nope"),
        ),
        grpc.StatusCode.NOT_FOUND,
        "TEMPLATE_NOT_FOUND",
    )


async def test_sensitive_variables_are_delivered_but_redacted_in_the_stored_copy(
    notifications: NotificationsHarness,
) -> None:
    await create(
        notifications,
        "reset",
        pb.Template(
            channel=pb.CHANNEL_EMAIL,
            default_locale="en",
            localizations=[
                pb.TemplateLocalization(
                    locale="en", subject="Reset", text_body="Use {{ link }} soon."
                )
            ],
            variables=[pb.TemplateVariable(name="link", required=True, sensitive=True)],
        ),
    )
    [queued] = await notifications.send(
        recipient=pb.Recipient(address=email("x@example.com")),
        template=pb.TemplateReference(
            name="templates/reset", variables={"link": "https://x/reset?t=SECRET123"}
        ),
        category=pb.CATEGORY_SECURITY,
    )
    assert "SECRET123" not in str(queued)
    assert queued.text_body == "Use [redacted] soon."
    assert queued.template.variables["link"] == "[redacted]"
    await notifications.deliver()
    [mail] = await notifications.sink.wait_for(1)
    assert "SECRET123" in mail.part("text/plain")
    assert "SECRET123" not in str(await notifications.get(queued.name))


async def test_template_management_needs_its_permission(
    notifications: NotificationsHarness,
) -> None:
    await refused(
        notifications.stub().CreateTemplate(
            pb.CreateTemplateRequest(
                template_id="x", template=receipt_template(), request_id=request_id()
            ),
            metadata=notifications.sender(),
        ),
        grpc.StatusCode.PERMISSION_DENIED,
        "PERMISSION_MISSING",
    )
    await refused(
        notifications.stub().ListTemplates(
            pb.ListTemplatesRequest(), metadata=notifications.user(ALICE)
        ),
        grpc.StatusCode.PERMISSION_DENIED,
        "PERMISSION_MISSING",
    )


async def test_default_templates_are_seeded(notifications: NotificationsHarness) -> None:
    listed = await notifications.stub().ListTemplates(
        pb.ListTemplatesRequest(page_size=5), metadata=notifications.staff()
    )
    assert len(listed.templates) == 5
    assert listed.next_page_token
    rest = await notifications.stub().ListTemplates(
        pb.ListTemplatesRequest(page_size=50, page_token=listed.next_page_token),
        metadata=notifications.staff(),
    )
    names = {t.name for t in [*listed.templates, *rest.templates]}
    assert "templates/welcome-email" in names
    assert "templates/emergency-broadcast-email" in names


async def test_concurrent_creates_with_one_request_id_create_one_template(
    notifications: NotificationsHarness,
) -> None:
    import asyncio  # noqa: PLC0415

    rid = request_id()
    request = pb.CreateTemplateRequest(
        template_id="twin", template=receipt_template(), request_id=rid
    )
    results = await asyncio.gather(
        *(
            notifications.stub().CreateTemplate(request, metadata=notifications.staff())
            for _ in range(4)
        )
    )
    assert {r.template.version for r in results} == {1}
    await refused(
        notifications.stub().CreateTemplate(
            pb.CreateTemplateRequest(
                template_id="twin", template=receipt_template(), request_id=request_id()
            ),
            metadata=notifications.staff(),
        ),
        grpc.StatusCode.ALREADY_EXISTS,
        "TEMPLATE_ALREADY_EXISTS",
    )
