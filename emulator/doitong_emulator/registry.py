"""The accounts the emulator serves, by key and by name: who a request is."""

from __future__ import annotations

from doitong_emulator.accounts import AccountState, EmulatorAccount, resolve_limits
from doitong_emulator.config import EmulatorConfig


class AccountRegistry:
    """Accounts by API key and by name. Not thread-safe by itself; the state's lock guards it.

    :param config: the emulator's configuration (limit overrides, time scale).
    """

    def __init__(self, *, config: EmulatorConfig) -> None:
        self.config = config
        self._by_key: dict[str, AccountState] = {}
        self._by_name: dict[str, AccountState] = {}

    def add(self, account: EmulatorAccount) -> AccountState:
        """Register an account; it gets a name (``default``, ``account-2``, ...) if it has none.

        :raises ValueError: if its key or name is already taken.
        """
        if account.name is None:
            account.name = "default" if not self._by_name else f"account-{len(self._by_name) + 1}"
        if account.api_key in self._by_key:
            raise ValueError(f"an account with this API key already exists ({account.name})")
        if account.name in self._by_name:
            raise ValueError(f"an account named {account.name!r} already exists")
        state = AccountState(
            config=account,
            limits=resolve_limits(account, self.config.limits),
            time_scale=self.config.time_scale,
        )
        self._by_key[account.api_key] = state
        self._by_name[account.name] = state
        return state

    @property
    def accounts(self) -> list[AccountState]:
        """The accounts in the order they were added."""
        return list(self._by_name.values())

    def by_name(self, name: str) -> AccountState:
        """An account by its name.

        :raises KeyError: if there is none.
        """
        return self._by_name[name]

    def get(self, name: str) -> AccountState | None:
        """An account by its name, or ``None``."""
        return self._by_name.get(name)

    def authenticate(self, api_key: str | None) -> AccountState | None:
        """The account of a key, or ``None`` (also for an empty key)."""
        if not api_key:
            return None
        return self._by_key.get(api_key)
