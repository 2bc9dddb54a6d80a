"""The in-memory engine keeps the promises of the Docker adapter that the other unit tests rely on."""

from __future__ import annotations

import io
import tarfile
import threading

import pytest

from unit.conftest import IMAGE
from vmhost.config import Settings
from vmhost.core.build import make_engine
from vmhost.core.engines import ContainerSpec, NetworkSpec
from vmhost.core.engines.fake import FakeEngine
from vmhost.errors import ContainerNotRunning, DockerUnavailable, ProviderError

LABELS = {"vmhost.instance": "unit", "vmhost.workspace": "ws_1"}


def running_container(engine: FakeEngine, name: str = "box") -> str:
    engine.ensure_network(NetworkSpec("net", {}))
    container_id = engine.create_container(ContainerSpec(
        name=name, image=IMAGE, command=["sleep", "infinity"], labels=LABELS, volume=f"{name}-volume", cpus=1,
        memory_mb=256, pids_limit=64, publish_address="127.0.0.1", network="net"))
    engine.start(container_id)
    return container_id


def test_an_engine_away_fails_every_call_as_the_docker_adapter_does(engine: FakeEngine) -> None:
    container_id = running_container(engine)
    with pytest.raises(DockerUnavailable) as docker_error:
        make_engine(Settings.defaults(docker_host="unix:///nonexistent/docker.sock")).ping()
    engine.go_away()
    for call in (engine.ping, lambda: engine.inspect(container_id), lambda: engine.list_managed(LABELS)):
        with pytest.raises(DockerUnavailable) as fake_error:
            call()
        assert fake_error.value.detail.startswith("Docker engine at fake://engine does not answer (")
    assert docker_error.value.detail.startswith(
        "Docker engine at unix:///nonexistent/docker.sock does not answer (")
    engine.come_back()
    assert engine.inspect(container_id).running


def test_a_hung_call_waits_for_its_release_or_fails_after_its_timeout(engine: FakeEngine) -> None:
    hang = engine.hang("ping")
    pinged = threading.Event()
    caller = threading.Thread(target=lambda: (engine.ping(), pinged.set()))
    caller.start()
    assert hang.entered.wait(5)
    assert not pinged.is_set()
    hang.release()
    caller.join(5)
    assert pinged.is_set()

    engine.hang("ping", timeout=0.01)
    with pytest.raises(DockerUnavailable, match=r"does not answer \(ping Docker\): timed out after 0.01 s"):
        engine.ping()


def test_lifecycle_changes_arrive_as_events_and_a_dead_container_is_exited(engine: FakeEngine) -> None:
    stream = engine.container_events({"vmhost.workspace": "ws_1"})
    other = engine.container_events({"vmhost.workspace": "ws_2"})
    container_id = running_container(engine)
    engine.die(container_id, exit_code=1)
    engine.remove_container(container_id)
    stream.close()
    other.close()
    assert [(e.action, e.container_id) for e in stream] == [
        ("start", container_id), ("die", container_id), ("destroy", container_id)]
    assert list(other) == []
    assert (engine.container(container_id).status, engine.container(container_id).exit_code) == ("removed", 1)
    assert not engine.inspect(container_id).exists


def test_commands_answer_from_the_table_and_are_killed_by_timeout_cancel_or_a_stop(engine: FakeEngine) -> None:
    container_id = running_container(engine)
    engine.on_exec("git *", exit_code=128, stderr="fatal: not a git repository\n")
    output: list[tuple[str, bytes]] = []
    outcome = engine.run_command(container_id, ["git", "status"], on_output=lambda *chunk: output.append(chunk))
    assert (outcome.exit_code, output) == (128, [("stderr", b"fatal: not a git repository\n")])
    assert engine.run_command(container_id, ["true"], on_output=lambda *_: None).exit_code == 0

    timed_out = engine.run_command(container_id, ["sleep", "60"], on_output=lambda *_: None, timeout=0.01)
    assert (timed_out.exit_code, timed_out.timed_out) == (137, True)
    cancel = threading.Event()
    cancel.set()
    cancelled = engine.run_command(container_id, ["sleep", "60"], on_output=lambda *_: None, cancel=cancel)
    assert (cancelled.exit_code, cancelled.cancelled) == (137, True)

    outcomes = []
    command = threading.Thread(target=lambda: outcomes.append(
        engine.run_command(container_id, ["/bin/sh", "-c", "sleep infinity"], on_output=lambda *_: None)))
    command.start()
    engine.wait_for(engine.running_commands)
    engine.stop(container_id, timeout=1)
    command.join(5)
    assert [o.exit_code for o in outcomes] == [137]
    with pytest.raises(ContainerNotRunning, match="is not running"):
        engine.run_command(container_id, ["true"], on_output=lambda *_: None)


def test_files_live_in_the_container_or_its_volume_and_a_commit_keeps_only_the_container(engine: FakeEngine) -> None:
    container_id = running_container(engine)
    archive = io.BytesIO()
    with tarfile.open(fileobj=archive, mode="w") as tar:
        for name, data in (("etc/motd", b"hello"), ("workspace/app.py", b"print()")):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    archive.seek(0)
    engine.put_archive(container_id, "/", archive)

    chunks, stat = engine.get_archive(container_id, "/workspace")
    with tarfile.open(fileobj=io.BytesIO(b"".join(chunks))) as tar:
        assert tar.getnames() == ["workspace", "workspace/app.py"]
    assert stat.kind == "directory"
    assert engine.stat_path(container_id, "/nowhere") is None
    with pytest.raises(ProviderError) as missing:
        engine.get_archive(container_id, "/nowhere")
    assert missing.value.extra == {"missing": True}

    committed = engine.commit(container_id, "snap", "one", {"vmhost.snapshot": "s1"})
    assert committed.added_bytes == len(b"hello")  # the volume is not in the image
    assert "snap:one" in engine.images()
    engine.remove_container(container_id)
    copy = engine.create_container(ContainerSpec(name="copy", image="snap:one", command=[], labels={},
                                                 volume="fresh", cpus=1, memory_mb=256, pids_limit=64,
                                                 publish_address="127.0.0.1"))
    assert engine.stat_path(copy, "/etc/motd") is not None
    assert engine.stat_path(copy, "/workspace/app.py") is None
    assert engine.remove_image("snap:one") is False  # in use
    engine.remove_container(copy)
    assert engine.remove_image("snap:one") is True
    assert engine.images() == {IMAGE}


def test_logs_give_the_tail_and_a_follow_ends_when_the_container_stops(engine: FakeEngine) -> None:
    container_id = running_container(engine)
    engine.write_log(container_id, "one\ntwo\nthree\n")
    assert b"".join(engine.logs(container_id, tail=2)) == b"two\nthree\n"

    followed: list[bytes] = []
    first_read = threading.Event()

    def follow() -> None:
        for chunk in engine.logs(container_id, follow=True):
            followed.append(chunk)
            first_read.set()

    follower = threading.Thread(target=follow)
    follower.start()
    assert first_read.wait(5)
    engine.write_log(container_id, "four\n")
    assert follower.is_alive()
    engine.stop(container_id, timeout=1)
    follower.join(5)
    assert not follower.is_alive()
    assert b"".join(followed) == b"one\ntwo\nthree\nfour\n"
