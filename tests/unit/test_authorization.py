"""What each kind of caller may do, as the Caller value says (no daemon, no Docker)."""

from __future__ import annotations

import pytest

from vmhost.core.models import Caller, Door, Scope
from vmhost.errors import Forbidden

ADMIN = Caller(user="root", admin=True, door=Door.SOCKET)
USER = Caller(user="alice", door=Door.SOCKET)
READER = Caller(user="alice", door=Door.TOKEN, scope=Scope.READ, token_id="tok_1")
ADMIN_READER = Caller(user="prometheus", admin=True, door=Door.TOKEN, scope=Scope.READ, token_id="tok_2")


def test_admins_see_everyone_users_only_themselves() -> None:
    assert ADMIN.sees_everyone and ADMIN.can_see("alice") and ADMIN.can_see("bob")
    assert ADMIN.owner_filter is None
    for caller in (USER, READER):
        assert not caller.sees_everyone
        assert caller.can_see("alice") and not caller.can_see("bob")
        assert caller.owner_filter == "alice"


def test_only_admins_are_exempt_from_quotas_and_clone_from_the_host() -> None:
    assert ADMIN.exempt_from_quotas and ADMIN.may_clone_from_host
    for caller in (USER, READER):
        assert not caller.exempt_from_quotas and not caller.may_clone_from_host


@pytest.mark.parametrize("caller", [ADMIN, USER])
def test_write_scope_may_write(caller: Caller) -> None:
    caller.require_write()
    caller.require_write("POST /api/v1/workspaces")


@pytest.mark.parametrize("caller", [READER, ADMIN_READER])
def test_read_only_tokens_are_refused_writes(caller: Caller) -> None:
    with pytest.raises(Forbidden) as refused:
        caller.require_write()
    assert refused.value.detail == "this token is read-only" and refused.value.code == "forbidden"
    with pytest.raises(Forbidden, match=r"^this token is read-only: it may not POST /api/v1/workspaces$"):
        caller.require_write("POST /api/v1/workspaces")


@pytest.mark.parametrize("caller", [ADMIN, ADMIN_READER])
def test_admins_pass_require_admin(caller: Caller) -> None:
    caller.require_admin("set quotas")


@pytest.mark.parametrize("caller", [USER, READER])
def test_others_are_refused_what_only_admins_may_do(caller: Caller) -> None:
    with pytest.raises(Forbidden) as refused:
        caller.require_admin("set quotas")
    assert refused.value.detail == "only admins set quotas" and refused.value.http_status == 403
