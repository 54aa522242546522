"""ListPayments: scoping, typed filters, ordering, keyset pagination that stays stable under
concurrent inserts, and page tokens bound to their query."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import grpc
import pytest
from google.protobuf import timestamp_pb2
from google.rpc import error_details_pb2

from gatehouse.common.v1 import common_pb2
from gatehouse.payments.v1 import payments_pb2
from tests.integration.payments.harness import (
    ALICE,
    BOB,
    DECLINE,
    Metadata,
    PaymentsHarness,
    card_payment,
    money,
    refused,
)
from tests.support.grpc_calls import detail

P = payments_pb2


async def list_all(
    payments: PaymentsHarness, metadata: Metadata, page_size: int = 0, **filters: Any
) -> list[payments_pb2.Payment]:
    found: list[payments_pb2.Payment] = []
    token = ""
    stub = payments.stub()
    while True:
        response = await stub.ListPayments(
            P.ListPaymentsRequest(page_size=page_size, page_token=token, **filters),
            metadata=metadata,
        )
        found.extend(response.payments)
        token = response.next_page_token
        if not token:
            return found


def names(items: list[payments_pb2.Payment]) -> list[str]:
    return [item.name for item in items]


async def test_users_see_their_own_and_staff_see_all(payments: PaymentsHarness) -> None:
    alices = [await payments.create(user=ALICE) for _ in range(3)]
    bobs = [await payments.create(user=BOB) for _ in range(2)]
    for_bob = await payments.create(
        card_payment(payer=BOB),
        metadata=payments.user(ALICE, ("payments.create", "payments.manage")),
    )
    mine = await list_all(payments, payments.user(ALICE))
    assert set(names(mine)) == set(names([*alices, for_bob]))  # payer or creator
    assert set(names(await list_all(payments, payments.user(BOB)))) == set(names([*bobs, for_bob]))
    everything = await list_all(payments, payments.staff("payments.read_all"))
    assert len(everything) == 6
    await refused(
        payments.stub().ListPayments(P.ListPaymentsRequest(payer=BOB), metadata=payments.user()),
        grpc.StatusCode.PERMISSION_DENIED,
        "PERMISSION_MISSING",
    )
    own = await list_all(payments, payments.user(ALICE), payer=ALICE)
    assert set(names(own)) == set(names(alices))
    bobs_as_staff = await list_all(payments, payments.staff("payments.read_all"), payer=BOB)
    assert set(names(bobs_as_staff)) == set(names([*bobs, for_bob]))


async def test_typed_filters(payments: PaymentsHarness) -> None:
    small = await payments.create(card_payment("5.00"))
    large = await payments.create(card_payment("500.00"))
    yen = await payments.create(card_payment("1000", "JPY"))
    failed = await payments.process((await payments.create(card_payment(card=DECLINE))).name)
    done = await payments.process((await payments.create(card_payment("50.00"))).name)
    bank = await payments.create(
        P.Payment(amount=money("20.00"), method=P.PAYMENT_METHOD_BANK_TRANSFER)
    )
    who = payments.user()

    async def query(**filters: Any) -> set[str]:
        return set(names(await list_all(payments, who, **filters)))

    assert await query(statuses=[P.PAYMENT_STATUS_FAILED, P.PAYMENT_STATUS_COMPLETED]) == {
        failed.name,
        done.name,
    }
    assert await query(methods=[P.PAYMENT_METHOD_BANK_TRANSFER]) == {bank.name}
    assert await query(currency_code="JPY") == {yen.name}
    assert await query(min_amount=money("20.00"), max_amount=money("100.00")) == {
        done.name,
        bank.name,
    }
    assert await query(min_amount=money("100.00")) == {large.name}
    assert await query(max_amount=money("5.00")) == {small.name}
    assert await query(max_amount=money("5.00"), statuses=[P.PAYMENT_STATUS_COMPLETED]) == set()
    start = datetime.now(UTC) + timedelta(seconds=1)
    later = await payments.create(card_payment("1.00"))
    assert later.create_time.ToDatetime(tzinfo=UTC) < start  # created just now
    window = common_pb2.TimeRange(
        start_time=timestamp_pb2.Timestamp(seconds=int(start.timestamp()) - 3600),
        end_time=later.create_time,  # exclusive
    )
    assert later.name not in await query(create_time_range=window)
    assert len(await query(create_time_range=window)) == 6


async def test_ordering_by_creation_time(payments: PaymentsHarness) -> None:
    created = [await payments.create() for _ in range(4)]
    who = payments.user()
    assert names(await list_all(payments, who)) == names(created)[::-1]
    assert names(await list_all(payments, who, order_by="create_time desc")) == names(created)[::-1]
    assert names(await list_all(payments, who, order_by="create_time")) == names(created)
    assert names(await list_all(payments, who, order_by=" create_time  ASC ")) == names(created)


async def test_pages_cover_everything_once(payments: PaymentsHarness) -> None:
    created = [await payments.create() for _ in range(7)]
    response = await payments.stub().ListPayments(
        P.ListPaymentsRequest(page_size=3), metadata=payments.user()
    )
    assert len(response.payments) == 3
    assert response.next_page_token
    paged = await list_all(payments, payments.user(), page_size=3)
    assert names(paged) == names(created)[::-1]
    exact = await payments.stub().ListPayments(
        P.ListPaymentsRequest(page_size=7), metadata=payments.user()
    )
    assert exact.next_page_token == ""


@pytest.mark.parametrize("order_by", ["create_time desc", "create_time asc"])
async def test_pagination_is_stable_under_concurrent_inserts(
    payments: PaymentsHarness, order_by: str
) -> None:
    before = [await payments.create() for _ in range(12)]
    stub = payments.stub()
    who = payments.user()
    inserting = True

    async def insert_meanwhile() -> list[payments_pb2.Payment]:
        added = []
        while inserting:
            added.append(await payments.create())
        return added

    inserter = asyncio.create_task(insert_meanwhile())
    seen: list[str] = []
    token = ""
    pages = 0
    while True:
        response = await stub.ListPayments(
            P.ListPaymentsRequest(page_size=2, page_token=token, order_by=order_by), metadata=who
        )
        seen.extend(names(list(response.payments)))
        token = response.next_page_token
        pages += 1
        if not token or (order_by.endswith("asc") and pages > 40):
            break
        await asyncio.sleep(0.01)  # let inserts land between pages
    inserting = False
    added = await inserter
    assert added, "no payment was inserted during the listing"
    assert len(seen) == len(set(seen)), "a payment was listed twice"
    originals = names(before)
    expected = originals[::-1] if order_by.endswith("desc") else originals
    # Every payment that existed when the listing began comes exactly once, in order; the
    # only others are ones inserted meanwhile (newest first: only before the first page was
    # read; oldest first: after the originals).
    assert [name for name in seen if name in set(originals)] == expected
    extras = [name for name in seen if name not in set(originals)]
    assert set(extras) <= set(names(added))
    if order_by.endswith("desc"):
        assert seen[len(extras) :] == expected
    else:
        assert seen[: len(originals)] == expected


async def test_a_page_token_from_another_query_is_refused(payments: PaymentsHarness) -> None:
    for _ in range(3):
        await payments.create(user=ALICE)
        await payments.create(user=BOB)
    stub = payments.stub()
    first = await stub.ListPayments(P.ListPaymentsRequest(page_size=1), metadata=payments.user())
    token = first.next_page_token
    for request, who in (
        (
            P.ListPaymentsRequest(page_size=1, page_token=token, currency_code="USD"),
            payments.user(),
        ),
        (P.ListPaymentsRequest(page_token=token, order_by="create_time asc"), payments.user()),
        (P.ListPaymentsRequest(page_size=1, page_token=token), payments.user(BOB)),
        (P.ListPaymentsRequest(page_token="garbage"), payments.user()),
        (P.ListPaymentsRequest(page_token=token[:-4]), payments.user()),
    ):
        status = await refused(
            stub.ListPayments(request, metadata=who),
            grpc.StatusCode.INVALID_ARGUMENT,
            "INVALID_PAGE_TOKEN",
        )
        violations = detail(status, error_details_pb2.BadRequest).field_violations
        assert [v.field for v in violations] == ["page_token"]
    # Only page_size may change between pages.
    second = await stub.ListPayments(
        P.ListPaymentsRequest(page_size=5, page_token=token), metadata=payments.user()
    )
    assert len(second.payments) == 2


@pytest.mark.parametrize(
    ("request_", "reason", "field"),
    [
        (P.ListPaymentsRequest(order_by="amount"), "INVALID_ORDER_BY", "order_by"),
        (
            P.ListPaymentsRequest(
                create_time_range=common_pb2.TimeRange(
                    start_time=timestamp_pb2.Timestamp(seconds=200),
                    end_time=timestamp_pb2.Timestamp(seconds=100),
                )
            ),
            "INVALID_TIME_RANGE",
            "create_time_range",
        ),
        (
            P.ListPaymentsRequest(min_amount=money("5.00"), max_amount=money("1.00")),
            "INVALID_AMOUNT_RANGE",
            "min_amount",
        ),
        (
            P.ListPaymentsRequest(min_amount=money("1.00"), max_amount=money("5.00", "EUR")),
            "INVALID_AMOUNT_RANGE",
            "max_amount",
        ),
        (
            P.ListPaymentsRequest(min_amount=money("1.00"), currency_code="EUR"),
            "INVALID_AMOUNT_RANGE",
            "min_amount",
        ),
        (P.ListPaymentsRequest(currency_code="XXX"), "UNSUPPORTED_CURRENCY", "currency_code"),
        (
            P.ListPaymentsRequest(min_amount=money("1", "XXX")),
            "UNSUPPORTED_CURRENCY",
            "min_amount.currency_code",
        ),
        (
            P.ListPaymentsRequest(statuses=[P.PAYMENT_STATUS_UNSPECIFIED]),
            "INVALID_FIELD",
            "statuses",
        ),
        (P.ListPaymentsRequest(methods=[99]), "INVALID_FIELD", "methods"),  # type: ignore[list-item]
        (P.ListPaymentsRequest(payer="bob"), "INVALID_RESOURCE_NAME", "payer"),
        # The runtime checks page_size before the handler (reason INVALID_FIELD).
        (P.ListPaymentsRequest(page_size=-1), "INVALID_FIELD", "page_size"),
    ],
)
async def test_bad_list_requests(
    payments: PaymentsHarness, request_: payments_pb2.ListPaymentsRequest, reason: str, field: str
) -> None:
    status = await refused(
        payments.stub().ListPayments(request_, metadata=payments.staff()),
        grpc.StatusCode.INVALID_ARGUMENT,
        reason,
    )
    violations = detail(status, error_details_pb2.BadRequest).field_violations
    assert [v.field for v in violations] == [field]
