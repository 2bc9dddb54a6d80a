"""Per-user quotas: anyone may read their own, admins anyone's; only admins change them."""

from __future__ import annotations

from dataclasses import asdict

from fastapi import APIRouter, Request

from vmhost.core.quotas import UserQuota
from vmhost.daemon.deps import CallerDep, OrchestratorDep, in_read_pool
from vmhost.daemon.routes.common import API, errors
from vmhost.daemon.schemas import QuotaLimits, QuotaOut, QuotaOverrides, QuotaUsage

router = APIRouter(prefix=f"{API}/quotas", tags=["quotas"])


def quota_out(quota: UserQuota) -> QuotaOut:
    return QuotaOut(user=quota.user, exempt=quota.exempt, limits=QuotaLimits(**asdict(quota.limits)),
                    overrides=QuotaOverrides(**quota.overrides), usage=QuotaUsage(**asdict(quota.usage)))


@router.get("/{user}", response_model=QuotaOut, summary="A user's quota and use", responses=errors(403))
async def get_quota(user: str, request: Request, caller: CallerDep, orchestrator: OrchestratorDep) -> QuotaOut:
    """The limits that apply to `user` (overrides over the configured defaults) and what they use now.
    Users may read their own; admins anyone's."""
    return await in_read_pool(request, lambda: quota_out(orchestrator.quotas.show(caller, user)))


@router.put("/{user}", response_model=QuotaOut, summary="Set a user's quota (admins)", responses=errors(403))
def set_quota(user: str, body: QuotaOverrides, caller: CallerDep, orchestrator: OrchestratorDep) -> QuotaOut:
    """Replace the user's overrides: each limit given applies to them, each one left out (or null) goes back
    to the configured default. An empty body removes every override. Existing workspaces are kept even
    when they are now over the quota; new ones are refused."""
    return quota_out(orchestrator.quotas.set(caller, user, body.model_dump(exclude_none=True)))
