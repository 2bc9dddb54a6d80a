"""API tokens: made, listed and revoked by their users (admins: anyone's), and checked on every TCP
request. Only a token's hash is stored; its secret is shown once, when it is made."""

from __future__ import annotations

import hashlib
import secrets
from datetime import timedelta

from vmhost.core import validation
from vmhost.core.models import Caller, Door, Scope, Token, new_id, utcnow
from vmhost.core.paging import DEFAULT_LIMIT, Page
from vmhost.core.store import Store
from vmhost.core.tokencache import TokenCache
from vmhost.errors import TokenNotFound, Unauthenticated


def hash_token(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


class Tokens:
    def __init__(self, store: Store) -> None:
        self.store = store
        self.cache = TokenCache(store)

    def create(self, caller: Caller, user: str | None = None, name: str = "", scope: Scope = Scope.WRITE,
               admin: bool = False, ttl_seconds: int | None = None) -> tuple[Token, str]:
        """A new token and its secret."""
        caller.require_write()
        user = user or caller.user
        if user != caller.user or admin:
            caller.require_admin("create tokens for other users or admin tokens")
        validation.check_user(user)
        if ttl_seconds is not None:
            validation.check_ttl(ttl_seconds)
        now = utcnow()
        token = Token(id=new_id("tok"), user=user, name=name[:128], scope=Scope(scope), admin=admin,
                      created_at=now, expires_at=now + timedelta(seconds=ttl_seconds) if ttl_seconds else None)
        secret = "vmh_" + secrets.token_urlsafe(32)
        self.store.insert_token(token, hash_token(secret))
        return token, secret

    def list(self, caller: Caller, limit: int = DEFAULT_LIMIT, cursor: str | None = None) -> Page[Token]:
        return self.store.page_tokens(user=caller.owner_filter, limit=limit, cursor=cursor)

    def revoke(self, caller: Caller, token_id: str) -> Token:
        caller.require_write()
        self._visible(caller, token_id)
        self.store.revoke_token(token_id)
        return self._visible(caller, token_id)

    def _visible(self, caller: Caller, token_id: str) -> Token:
        token = self.store.get_token(token_id)
        if token is None or not caller.can_see(token.user):
            raise TokenNotFound(f"no token {token_id!r}")
        return token

    def authenticate(self, secret: str, address: str | None = None) -> Caller:
        """The caller a token's secret stands for; Unauthenticated for an unknown, revoked or expired one."""
        token = self.cache.find(hash_token(secret))
        if token is None:
            raise Unauthenticated("invalid API token")
        if token.revoked_at is not None:
            raise Unauthenticated("this API token was revoked")
        if token.expires_at is not None and token.expires_at <= utcnow():
            raise Unauthenticated("this API token has expired")
        return Caller(user=token.user, admin=token.admin, door=Door.TOKEN, address=address, scope=token.scope,
                      token_id=token.id)
