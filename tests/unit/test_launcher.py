"""Launcher helpers that need no running service."""

from __future__ import annotations

import socket

import psutil

from stack.launcher import port_is_free, port_owner
from stack.parts import jvm_options_file


def test_a_listening_port_is_busy_and_its_owner_is_named() -> None:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        assert not port_is_free(port)
        assert port_owner(port).startswith(f"pid {psutil.Process().pid} (")
    assert port_is_free(port)


def test_jvm_options_become_single_arguments() -> None:
    options = jvm_options_file("cassandra-jvm17.options")
    assert "--add-exports=java.base/jdk.internal.misc=ALL-UNNAMED" in options
    assert all(" " not in o for o in options)
    assert not any(o.startswith("#") for o in options)
