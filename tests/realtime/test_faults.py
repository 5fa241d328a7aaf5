"""A fault in any stage fails only the sessions it involves; the engine goes on serving the others."""
from __future__ import annotations

import copy
import threading

import pytest

import musetalk.realtime.engine.engine as engine_module
from musetalk.realtime.engine.engine import Engine
from musetalk.realtime.engine.session import SessionError

from .conftest import fake_models


class Injected(Exception):
    pass


def run_pair(engine, store, speech, victim_avatar=None):
    """Open a victim and a bystander, feed both 0.5 s and end; (victim error or None, bystander indices)."""
    avatar = store.load("photo")
    victim = engine.open(victim_avatar or avatar)
    bystander = engine.open(avatar)
    results: dict = {}

    def read(session) -> None:
        try:
            results[session.id] = [i.index for i in session.frames(timeout=60)]
        except SessionError as exc:
            results[session.id] = exc

    readers = [threading.Thread(target=read, args=(s,)) for s in (victim, bystander)]
    for r in readers:
        r.start()
    for s in (victim, bystander):
        s.feed(speech[:8000])
        s.end()
    for r in readers:
        r.join()
    return victim, results[victim.id], results[bystander.id]


@pytest.mark.parametrize("stage, message", [("encode", "audio encoding failed: injected"),
                                            ("generate", "generation failed: injected")])
def test_batched_stage_fault_fails_only_its_session(tiny_musetalk, store, speech, stage, message):
    def fault(where, sessions):
        if where == stage and 1 in {s.id for s in sessions}:  # the victim: the first session opened
            raise Injected("injected")

    with Engine(tiny_musetalk, batch_size=8) as engine:
        fake_models(engine, fault=fault)
        _, error, bystander = run_pair(engine, store, speech)
        assert isinstance(error, SessionError) and str(error) == message
        assert bystander == list(range(12))
        assert engine.open(store.load("photo")) is not None  # the engine still serves


def test_planning_fault_fails_only_its_session(tiny_musetalk, store, speech, monkeypatch):
    with Engine(tiny_musetalk, batch_size=8) as engine:
        fake_models(engine)
        original = engine_module.Session.plan

        def plan(session):
            if session.id == 1:
                raise Injected("injected")
            return original(session)

        monkeypatch.setattr(engine_module.Session, "plan", plan)
        _, error, bystander = run_pair(engine, store, speech)
    assert str(error) == "planning failed: injected" and bystander == list(range(12))


def test_compositing_fault_fails_only_its_session(tiny_musetalk, store, speech, monkeypatch):
    victim_avatar = copy.copy(store.load("photo"))
    original = engine_module.composite

    def composite(avatar, source, face):
        if avatar is victim_avatar:
            raise Injected("injected")
        return original(avatar, source, face)

    monkeypatch.setattr(engine_module, "composite", composite)
    with Engine(tiny_musetalk, batch_size=8) as engine:
        fake_models(engine)
        _, error, bystander = run_pair(engine, store, speech, victim_avatar)
    assert str(error) == "compositing failed: injected" and bystander == list(range(12))


def test_a_bug_in_the_loop_fails_its_sessions_loudly_and_the_loop_goes_on(tiny_musetalk, store, speech):
    with Engine(tiny_musetalk, batch_size=8) as engine:
        fake_models(engine)
        original, calls = engine._pick, []

        def pick(sessions):
            calls.append(1)
            if len(calls) == 1:
                raise Injected("injected")
            return original(sessions)

        engine._pick = pick
        _, error, bystander = run_pair(engine, store, speech)
        for result in (error, bystander):  # the step served both: both fail, with the reason
            assert isinstance(result, SessionError) and str(result) == "internal error of the engine: injected"
        after = engine.open(store.load("photo"))
        after.feed(speech[:4000])
        after.end()
        assert [i.index for i in after.frames(timeout=60)] == list(range(6))
