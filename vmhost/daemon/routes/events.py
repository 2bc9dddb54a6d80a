"""Events: polling over REST, and WebSocket streams that replay what a client missed, then go live.

Frames (JSON text): an event `{"id", "type", "time", "workspace_id", "owner", "payload"}`; a heartbeat
`{"type": "heartbeat", "time", "last_id"}` once the replay is done and after every idle interval; a gap
`{"type": "gap", "from", "to", "detail"}` when events the client asked for were pruned.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request, WebSocket

from vmhost.core import paging
from vmhost.core.events import EventBus, EventFilter, event_message, gap_message, parse_types
from vmhost.core.models import Caller
from vmhost.core.orchestrator import Orchestrator
from vmhost.core.sessions import SessionKind
from vmhost.core.store import EVENT_ORDER
from vmhost.daemon.deps import CallerDep, EventsDep, OrchestratorDep, SettingsDep, in_read_pool
from vmhost.daemon.routes.common import API, CursorQuery, LimitQuery, errors
from vmhost.daemon.schemas import EventGap, EventOut, EventPage
from vmhost.daemon.websockets import MAX_INT, accepted_as, int_param, send_until_disconnect
from vmhost.errors import WorkspaceNotFound

router = APIRouter(tags=["events"])

TypesQuery = Annotated[str | None, Query(description="comma-separated types; 'workspace.*' for a family")]


def _workspace_id(orchestrator: Orchestrator, caller: Caller, ref: str) -> str:
    """An existing workspace of the caller's (by id or name), or the id of a deleted one whose events the
    caller owned; anything else is not found."""
    try:
        return orchestrator.get(caller, ref).id
    except WorkspaceNotFound:
        owned = orchestrator.store.list_events(owner=caller.owner_filter, workspace_id=ref, limit=1)
        if owned:
            return ref
        raise


@router.get(f"{API}/events", response_model=EventPage, summary="Poll events", responses=errors(404))
async def list_events(request: Request, caller: CallerDep, orchestrator: OrchestratorDep,
                      since: Annotated[int, Query(ge=0, le=MAX_INT,
                                                  description="answer events after this id; 0: the oldest kept")] = 0,
                      types: TypesQuery = None,
                      workspace_id: Annotated[str | None, Query(description="workspace id or name")] = None,
                      limit: LimitQuery = paging.DEFAULT_LIMIT, cursor: CursorQuery = None) -> EventPage:
    """The caller's events after `since` (everyone's for admins), oldest first. Follow `next_cursor`
    while it is set; then pass the answer's `last_id` as the next poll's `since`. `gap` says which
    events were pruned before you asked for them."""
    after = since if cursor is None else max(since, int(EVENT_ORDER.decode(cursor)[0]))

    def read() -> EventPage:
        store = orchestrator.store
        newest = store.last_event_id()  # read before the page: nothing committed later is skipped
        pruned = store.pruned_through()
        event_filter = EventFilter.for_caller(
            caller, workspace_id and _workspace_id(orchestrator, caller, workspace_id), parse_types(types))
        page = store.page_events(max(after, pruned), event_filter.owner, event_filter.workspace_id,
                                 event_filter.types, limit=limit)
        ids = [e.id for e in page.items]
        gap = gap_message(after + 1, pruned) if 0 < after < pruned else None
        return EventPage(items=[EventOut.model_validate(event_message(e)) for e in page.items],
                         next_cursor=page.next_cursor,
                         last_id=ids[-1] if page.next_cursor else max([newest, after, *ids]),
                         gap=EventGap.model_validate(gap) if gap is not None else None)
    return await in_read_pool(request, read)


async def _stream(websocket: WebSocket, ref: str | None, orchestrator: Orchestrator, bus: EventBus,
                  heartbeat: float) -> None:

    def resolve(caller: Caller) -> tuple[EventFilter, int | None]:
        since = int_param(websocket, "since")
        types = parse_types(websocket.query_params.get("types"))
        workspace_id = _workspace_id(orchestrator, caller, ref) if ref is not None else None
        return EventFilter.for_caller(caller, workspace_id, types), since

    async with accepted_as(websocket, resolve, SessionKind.EVENT_STREAM) as resolved:
        if resolved is None:
            return
        event_filter, since = resolved
        await send_until_disconnect(websocket, bus.stream(event_filter, since, heartbeat))


@router.websocket("/ws/events")
async def events_socket(websocket: WebSocket, orchestrator: OrchestratorDep, events: EventsDep,
                        settings: SettingsDep) -> None:
    """All of the caller's events (everyone's for admins). Query: `since`, `types`, and on TCP `token`."""
    await _stream(websocket, None, orchestrator, events, settings.event_heartbeat)


@router.websocket("/ws/workspaces/{ref}/events")
async def workspace_events_socket(websocket: WebSocket, ref: str, orchestrator: OrchestratorDep, events: EventsDep,
                                  settings: SettingsDep) -> None:
    """One workspace's events. Another user's or an unknown workspace closes with 4404."""
    await _stream(websocket, ref, orchestrator, events, settings.event_heartbeat)
