from __future__ import annotations

from typing import Annotated, Any

import msgspec
from fastapi import APIRouter, Header, Path, Query, Request, Response, status

from reservations.auth import ADMIN_RESPONSES, AdminDep, is_admin
from reservations.camel import MAX_ID, IdPath
from reservations.channels import JOB_NAME, QUEUE_NAME, RESERVATION_MAX_ATTEMPTS
from reservations.deps import ResourcesDep, SessionDep
from reservations.errors import TooManyRequests
from reservations.middleware.rate_limit import RateLimiter
from reservations.resources import Resources

from .accept import Accepted, accept
from .models import ReservationStatus
from .schemas import (
    JOB_ACCEPTED_SCHEMA,
    EventOutcomes,
    JobAccepted,
    JobData,
    QuantityField,
    RequestLostBody,
    RequestOutcome,
    ReservationCreate,
    ReservationPage,
    ReservationRead,
)
from .service import RequestLost, ReservationService

router = APIRouter(tags=["reservation"])

_JOB_OPTS: dict[str, Any] = {
    "attempts": RESERVATION_MAX_ATTEMPTS,
    "removeOnComplete": True,
    # Failed jobs go to the dead letters, where they can be inspected and re-driven.
    "removeOnFail": False,
}
_QUEUE_QUALIFIED_NAME = f"brokerq:{QUEUE_NAME}"
_encode = msgspec.json.Encoder().encode
_ACCEPTED_DOC: dict[int | str, dict[str, Any]] = {
    202: {
        "content": {"application/json": {"schema": JOB_ACCEPTED_SCHEMA}},
        "description": "Queued; poll the Location for the outcome.",
    },
    404: {"description": "Unknown user or event"},
    422: {"description": "Invalid ids"},
    429: {"description": "Over the per-client rate limit; see Retry-After"},
    503: {"description": "Queue unavailable; the request was not accepted"},
}


def _accepted(job: Accepted, hold_token: str) -> Response:
    status_url = f"/reservation/requests/{job.request_id}"
    body = JobAccepted(
        name=JOB_NAME, data=JobData(job.user_id, job.event_id), opts=_JOB_OPTS,
        id=job.request_id, timestamp=job.accepted_at_ms,
        queue_qualified_name=_QUEUE_QUALIFIED_NAME, message_id=job.message_id,
        status_url=status_url, hold_token=hold_token,
    )  # fmt: skip
    return Response(
        content=_encode(body),
        status_code=status.HTTP_202_ACCEPTED,
        media_type="application/json",
        headers={"Location": status_url},
    )


async def accept_reservation(
    event_id: int, user_id: int, res: Resources, client: str | None, quantity: int = 1
) -> Response:
    """Queue one request and answer 202 (shared by the routes below and the fast lane)."""
    if res.limiter is not None:
        # Keyed by peer address; a request without one (a test transport) shares one bucket.
        wait = await res.limiter.acquire(client or "")
        if wait is not None:
            raise TooManyRequests(
                f"too many reservation requests from this client: the limit is "
                f"{res.limiter.limit}; retry after the Retry-After header's seconds",
                RateLimiter.retry_after(wait),
            )
    request_ids = await res.request_ids()
    job = await accept(
        res.session_factory, res.gate, res.channel, request_ids, event_id=event_id,
        user_id=user_id, quantity=quantity,
    )  # fmt: skip
    return _accepted(job, request_ids.hold_token(job.request_id))


# Declared before /reservation/{eventId}/{userId} so that ".../cancel" is not read as a user id.
@router.post(
    "/reservation/{reservation_id}/cancel",
    response_model=ReservationRead,
    responses=ADMIN_RESPONSES,
)
async def cancel_reservation(
    reservation_id: IdPath, session: SessionDep, res: ResourcesDep, _: AdminDep
) -> ReservationRead:
    """Cancel a reservation; its ticket goes back on sale (admin token required).

    Users do not authenticate (as in the seed), so a reservation id alone must not let anyone
    free someone else's ticket: cancelling is an operator's act.
    """
    service = ReservationService(session, res.gate, timers=res.holds)
    reservation, back = await service.cancel(reservation_id)
    await session.commit()
    await service.handed_back(reservation, back)
    return ReservationRead.model_validate(reservation)


_HOLD_RESPONSES: dict[int | str, dict[str, Any]] = {
    401: {"description": "Neither a Hold-Token nor the admin token"},
    403: {"description": "A Hold-Token that is not this reservation's"},
    404: {"description": "No such reservation"},
    409: {"description": "Not HELD any more (expired, released, cancelled)"},
}
HoldTokenHeader = Annotated[
    str | None,
    Header(
        alias="Hold-Token",
        max_length=64,
        description="the `holdToken` of the 202 answer to the request that won the hold",
    ),
]


@router.post(
    "/reservation/{reservation_id}/confirm",
    response_model=ReservationRead,
    responses=_HOLD_RESPONSES,
)
async def confirm_reservation(
    reservation_id: IdPath,
    session: SessionDep,
    res: ResourcesDep,
    request: Request,
    hold_token: HoldTokenHeader = None,
) -> ReservationRead:
    """Confirm a HELD reservation before its hold ends: it becomes RESERVED and keeps its seat.

    Only its holder may (the `Hold-Token` header: the `holdToken` of the winning request's 202
    answer), or an operator with the admin token. Confirming it again answers the same."""
    service = ReservationService(session, res.gate, await res.request_ids())
    reservation = await service.confirm(reservation_id, token=hold_token, admin=is_admin(request))
    await session.commit()
    return ReservationRead.model_validate(reservation)


@router.post(
    "/reservation/{reservation_id}/release",
    response_model=ReservationRead,
    responses=_HOLD_RESPONSES,
)
async def release_reservation(
    reservation_id: IdPath,
    session: SessionDep,
    res: ResourcesDep,
    request: Request,
    hold_token: HoldTokenHeader = None,
) -> ReservationRead:
    """Give a HELD reservation's seat back before its hold ends: it becomes RELEASED.

    Only its holder (the `Hold-Token` header) or an operator with the admin token may."""
    service = ReservationService(session, res.gate, await res.request_ids(), timers=res.holds)
    reservation, back = await service.release(
        reservation_id, token=hold_token, admin=is_admin(request)
    )
    await session.commit()
    await service.handed_back(reservation, back)
    return ReservationRead.model_validate(reservation)


@router.delete(
    "/reservation/{reservation_id}",
    response_model=ReservationRead,
    responses=ADMIN_RESPONSES,
)
async def delete_reservation(
    reservation_id: IdPath, session: SessionDep, res: ResourcesDep, _: AdminDep
) -> ReservationRead:
    """Cancels the reservation (kept, with status CANCELLED); its ticket goes back on sale."""
    return await cancel_reservation(reservation_id, session, res, None)


@router.post(
    "/reservation/{event_id}/{user_id}",
    status_code=status.HTTP_202_ACCEPTED,
    response_class=Response,
    responses=_ACCEPTED_DOC,
)
async def request_reservation(
    event_id: IdPath,
    user_id: IdPath,
    res: ResourcesDep,
    request: Request,
    quantity: Annotated[QuantityField, Query()] = 1,
) -> Response:
    """Queue a reservation request (the seed's `reserveEvent` job), for `quantity` seats."""
    return await accept_reservation(event_id, user_id, res, _client(request), quantity)


@router.post(
    "/reservation",
    status_code=status.HTTP_202_ACCEPTED,
    response_class=Response,
    responses=_ACCEPTED_DOC,
)
async def request_reservation_body(
    body: ReservationCreate, res: ResourcesDep, request: Request
) -> Response:
    """Queue a reservation request given as `{userId, eventId, quantity}`."""
    return await accept_reservation(
        body.event_id, body.user_id, res, _client(request), body.quantity
    )


def _client(request: Request) -> str | None:
    return request.client.host if request.client else None


@router.get("/reservation", response_model=ReservationRead)
async def find_reservation(
    event_id: Annotated[int, Query(alias="eventId", ge=1, le=MAX_ID)],
    user_id: Annotated[int, Query(alias="userId", ge=1, le=MAX_ID)],
    session: SessionDep,
    res: ResourcesDep,
) -> ReservationRead:
    service = ReservationService(session, res.gate)
    return ReservationRead.model_validate(
        await service.find_for(event_id=event_id, user_id=user_id)
    )


@router.get(
    "/reservation/requests/{job_id}",
    response_model=RequestOutcome,
    responses={
        404: {"description": "No request with this job id was ever accepted"},
        410: {
            "model": RequestLostBody,
            "description": "Accepted, then lost with the queue's Redis data before it was "
            "processed: it holds no place; send the request again (`REQUEST_LOST`). Or its "
            "event took place longer ago than outcomes are kept, and its outcome was deleted "
            "(`OUTCOME_DELETED`)",
        },
    },
)
async def request_outcome(
    job_id: Annotated[str, Path(min_length=1, max_length=64)],
    session: SessionDep,
    res: ResourcesDep,
) -> RequestOutcome:
    """The outcome of one accepted request: PENDING while queued, then RESERVED or REJECTED;
    410 if it was lost, or if its event took place longer ago than RESERVATION_RETENTION_DAYS
    (its outcome was deleted). A request whose processing fails on every attempt the queue gives
    it is REJECTED with reason FAILED and `error`, the class of the error; it holds no place."""
    service = ReservationService(
        session, res.gate, await res.request_ids(), retention=res.settings.retention
    )
    try:
        return await service.outcome(job_id)
    except RequestLost:
        await session.commit()  # the loss, recorded on first sight
        raise


@router.delete(
    "/reservation/requests/{job_id}",
    response_model=RequestOutcome,
    responses={
        404: {"description": "No request with this job id was ever accepted"},
        409: {"description": "The request is not WAITING (it got a seat, or is final)"},
    },
)
async def leave_line(
    job_id: Annotated[str, Path(min_length=1, max_length=64)],
    session: SessionDep,
    res: ResourcesDep,
) -> RequestOutcome:
    """Take a WAITING request out of its event's waitlist: it ends REJECTED with reason
    LEFT_LINE. The job id, given only to its sender, is the proof of being them."""
    service = ReservationService(session, res.gate, await res.request_ids())
    outcome = await service.leave_line(job_id)
    await session.commit()
    return outcome


@router.post(
    "/event/{event_id}/close",
    response_model=EventOutcomes,
    responses={**ADMIN_RESPONSES, 404: {"description": "No such event"}},
)
async def close_event(
    event_id: IdPath, session: SessionDep, res: ResourcesDep, _: AdminDep
) -> EventOutcomes:
    """Close an event's sale (admin token required): requests from now on are REJECTED with
    reason EVENT_CLOSED, and so are those waiting in its waitlist. Holds and reservations made
    stay. Closing a closed event changes nothing."""
    service = ReservationService(session, res.gate)
    await service.close(event_id)
    await session.commit()
    return await service.outcomes(event_id)


@router.get("/reservation/{reservation_id}", response_model=ReservationRead)
async def get_reservation(
    reservation_id: IdPath, session: SessionDep, res: ResourcesDep
) -> ReservationRead:
    return ReservationRead.model_validate(
        await ReservationService(session, res.gate).get(reservation_id)
    )


@router.get("/event/{event_id}/reservations", response_model=ReservationPage)
async def list_event_reservations(
    event_id: IdPath,
    session: SessionDep,
    res: ResourcesDep,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    # PostgreSQL's OFFSET is a bigint.
    offset: Annotated[int, Query(ge=0, le=2**63 - 1)] = 0,
    status_: Annotated[ReservationStatus | None, Query(alias="status")] = None,
) -> ReservationPage:
    service = ReservationService(session, res.gate)
    items, total = await service.list_for_event(
        event_id, limit=limit, offset=offset, status=status_
    )
    return ReservationPage(
        items=[ReservationRead.model_validate(r) for r in items],
        total=total,
        limit=limit,
        offset=offset,
    )


@router.get("/event/{event_id}/outcomes", response_model=EventOutcomes)
async def event_outcomes(event_id: IdPath, session: SessionDep, res: ResourcesDep) -> EventOutcomes:
    """Counts of the event's request outcomes; `pending` is 0 once every request is final."""
    return await ReservationService(session, res.gate).outcomes(event_id)
