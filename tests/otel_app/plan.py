"""What the test application does for each request, and so exactly which spans N requests make.

Request ``i`` to the frontend is ``GET /hello?user=USERS[i % 4]``. The frontend calls the
backend once for each of BACKEND_CALLS, then the greeter's ``SayHello`` over gRPC; the greeter
answers NOT_FOUND for a user it does not know (``ghost``), and the frontend then answers 404.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

import grpc

FRONTEND, BACKEND, GREETER = "frontend", "backend", "greeter"
ROLES = (FRONTEND, BACKEND, GREETER)

USERS = ("alice", "bob", "carol", "ghost")
KNOWN_USERS = frozenset(USERS[:3])
# (path with query, the status the backend answers it with): 11 calls per frontend request.
BACKEND_CALLS = (
    *((f"/items?id={i}", 200) for i in range(1, 9)),
    ("/items", 200),
    ("/missing", 404),
    ("/fail?mode=boom", 500),
)
GREETER_SERVICE = "clover.test.Greeter"
GREETER_METHOD = "SayHello"
GRPC_NOT_FOUND = grpc.StatusCode.NOT_FOUND.value[0]


def frontend_target(index: int) -> str:
    """Path and query of the frontend request number ``index``."""
    return f"/hello?user={USERS[index % len(USERS)]}"


def known(user: str) -> bool:
    return user in KNOWN_USERS


@dataclass
class SideCounts:
    """The spans of one kind (server or client) that one service emits."""

    spans: int = 0
    http_status: Counter[int] = field(default_factory=Counter)  # HTTP status -> spans (HTTP spans only)
    grpc_status: Counter[int] = field(default_factory=Counter)  # gRPC status code -> spans (gRPC spans only)
    urls: Counter[str] = field(default_factory=Counter)  # path?query -> spans (HTTP spans only)

    @property
    def http_spans(self) -> int:
        return sum(self.http_status.values())

    @property
    def grpc_spans(self) -> int:
        return sum(self.grpc_status.values())

    @property
    def errors_4xx(self) -> int:
        return sum(n for code, n in self.http_status.items() if 400 <= code < 500)

    @property
    def errors_5xx(self) -> int:
        return sum(n for code, n in self.http_status.items() if code >= 500)

    @property
    def grpc_errors(self) -> int:
        return sum(n for code, n in self.grpc_status.items() if code != 0)

    @property
    def errors(self) -> int:
        return self.errors_4xx + self.errors_5xx + self.grpc_errors

    def add_http(self, target: str, status: int) -> None:
        self.spans += 1
        self.http_status[status] += 1
        self.urls[target] += 1

    def add_grpc(self, code: int) -> None:
        self.spans += 1
        self.grpc_status[code] += 1


@dataclass
class Expected:
    """Every span the requests sent so far make, per service (its real name) and kind.

    ``server[s]`` are the requests service ``s`` answered, ``client[s]`` its calls to others;
    ``addresses[s]`` is the ``host:port`` it listens on (the host of its callers' client spans).
    """

    names: dict[str, str]  # role (frontend, backend, greeter) -> service name
    addresses: dict[str, str]  # service name -> host:port
    requests: int = 0
    server: dict[str, SideCounts] = field(default_factory=dict)
    client: dict[str, SideCounts] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for name in self.names.values():
            self.server.setdefault(name, SideCounts())
            self.client.setdefault(name, SideCounts())

    @property
    def total_spans(self) -> int:
        return sum(c.spans for c in (*self.server.values(), *self.client.values()))

    def add_request(self, index: int) -> int:
        """Count the spans of frontend request ``index``; returns the status the frontend answers."""
        frontend, backend, greeter = (self.names[role] for role in ROLES)
        user = USERS[index % len(USERS)]
        code = 0 if known(user) else GRPC_NOT_FOUND
        status = 200 if code == 0 else 404
        self.requests += 1
        self.server[frontend].add_http(frontend_target(index), status)
        for target, backend_status in BACKEND_CALLS:
            self.client[frontend].add_http(target, backend_status)
            self.server[backend].add_http(target, backend_status)
        self.client[frontend].add_grpc(code)
        self.server[greeter].add_grpc(code)
        return status
