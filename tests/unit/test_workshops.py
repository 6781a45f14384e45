"""Workshops without services: the checks of a new workshop, seats taken at once, the code limiter,
the profile a seat's spawner is granted."""

from __future__ import annotations

import threading

import pytest

from hub import config as academy_config
from hub.workshops.handlers import JoinLimiter
from hub.workshops.model import Workshop, WorkshopError, check_new, new_code, normalise_code, CODE_RE
from hub.workshops.profiles import ProfileGrants
from hub.workshops.store import Store

NOW = 1_800_000_000.0


@pytest.fixture(scope="module")
def cfg():
    return academy_config.validate(academy_config._read_yaml(academy_config.DEFAULTS_FILE))  # the defaults alone


def workshop(**changes) -> Workshop:
    base = dict(name="llm-day", title="LLM day", course="llm-101", assignment="tokenization",
                notebook="tokenization.ipynb", profile="cpu-small", seats=10, starts_at=NOW + 600,
                ends_at=NOW + 600 + 3 * 3600, trainers=["trainer1"])
    return Workshop(**{**base, **changes})


@pytest.mark.parametrize("changes, message", [
    ({"name": "LLM Day"}, "workshop name 'LLM Day' is not accepted: 2 to 20 characters"),
    ({"name": "a-very-long-workshop-name"}, "is not accepted: 2 to 20 characters"),
    ({"title": " "}, "the title must be 1 to 120 characters"),
    ({"join": "open"}, "join policy 'open' is not accepted; choose one of: code, account"),
    ({"files": "keep"}, "files policy 'keep' is not accepted; choose one of: export, purge"),
    ({"seats": 0}, "0 seats is not accepted: 1 to 200 (workshops.max_seats)"),
    ({"seats": 201}, "201 seats is not accepted"),
    ({"starts_at": NOW - 7200, "ends_at": NOW - 3600}, "the window ends in the past"),
    ({"ends_at": NOW + 300}, "the window ends before it starts"),
    ({"ends_at": NOW + 600 + 25 * 3600}, "the window is longer than 24 hours"),
    ({"profile": "gpu-h200-2"}, "profile 'gpu-h200-2' may not be used by a workshop; accepted: cpu-small, gpu-h200-1"),
    ({"profile": "gpu-h200-1"}, "profile 'gpu-h200-1' allows sessions of at most 02:00:00, shorter than the "
                                "workshop's window (3:00)"),
    ({"trainers": ["ws-llm-day-01"]}, "trainer 'ws-llm-day-01' is not a user name"),
    ({"notebook": "../../etc/passwd.ipynb"}, "notebook '../../etc/passwd.ipynb' is not accepted"),
])
def test_a_bad_workshop_is_refused_with_what_is_accepted(cfg, changes, message):
    with pytest.raises(WorkshopError) as e:
        check_new(workshop(**changes), cfg, NOW)
    assert message in str(e.value)


def test_a_good_workshop_passes_and_names_its_pooled_accounts(cfg):
    w = workshop()
    check_new(w, cfg, NOW)
    assert w.accounts[0] == "ws-llm-day-01" and w.accounts[-1] == "ws-llm-day-10" and len(w.accounts) == 10
    assert workshop(seats=150).accounts[0] == "ws-llm-day-001"
    assert workshop(join="account").accounts == []
    assert w.group == "workshop-llm-day"


def test_codes_are_typed_forgivingly():
    code = new_code()
    assert CODE_RE.match(code)
    assert normalise_code(f" {code[:4].lower()}-{code[4:]} ") == code


def test_thirty_attendees_at_once_get_thirty_different_seats_and_the_next_one_none(tmp_path):
    store = Store(f"sqlite:///{tmp_path}/ws.sqlite")
    store.add(workshop(seats=30, code="ABCDEFGH"))
    taken, barrier = [], threading.Barrier(31)

    def join(i):
        barrier.wait()
        taken.append((i, store.take_seat("llm-day", f"key-{i}", NOW)))

    threads = [threading.Thread(target=join, args=(i,)) for i in range(31)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    seats = {i: s for i, s in taken if s is not None}
    assert len(seats) == 30 and len(taken) == 31
    assert len({s["number"] for s in seats.values()}) == 30
    # the same key finds the same seat again
    i, seat = next(iter(seats.items()))
    assert store.seat_of_key("llm-day", f"key-{i}")["number"] == seat["number"]
    assert store.by_code("ABCDEFGH").name == "llm-day"


def test_a_warm_seat_is_handed_out_first(tmp_path):
    store = Store(f"sqlite:///{tmp_path}/ws.sqlite")
    store.add(workshop(seats=5, code="ABCDEFGH"))
    store.mark("llm-day", 4, warmed_at=NOW)
    assert store.take_seat("llm-day", "first", NOW)["account"] == "ws-llm-day-04"
    assert store.take_seat("llm-day", "second", NOW)["account"] == "ws-llm-day-01"


def test_an_account_workshop_starts_with_no_seats_and_gives_each_account_one(tmp_path):
    store = Store(f"sqlite:///{tmp_path}/ws.sqlite")
    store.add(workshop(join="account", seats=2, code="ABCDEFGH"))
    assert store.seats("llm-day") == []
    first = store.add_account_seat("llm-day", "learner1", "k1", 2, NOW)
    assert first["account"] == "learner1"
    assert store.add_account_seat("llm-day", "learner1", "k1-again", 2, NOW)["number"] == first["number"]
    assert store.add_account_seat("llm-day", "learner2", "k2", 2, NOW)["number"] == 2
    assert store.add_account_seat("llm-day", "trainer1", "k3", 2, NOW) is None   # full


def test_the_code_limiter_blocks_an_address_for_the_rest_of_the_minute():
    limiter = JoinLimiter(3)
    for i in range(3):
        assert limiter.wait_s("10.0.0.1", now=100.0 + i) == 0
        limiter.fail("10.0.0.1", now=100.0 + i)
    assert 55 <= limiter.wait_s("10.0.0.1", now=103.0) <= 58
    assert limiter.wait_s("10.0.0.2", now=103.0) == 0          # another address is not blocked
    assert limiter.wait_s("10.0.0.1", now=161.0) == 0          # the minute has passed


def test_a_seat_is_granted_its_workshops_profile_until_the_window_ends(cfg, tmp_path):
    url = f"sqlite:///{tmp_path}/ws.sqlite"
    store = Store.shared(url)
    store.add(workshop(code="ABCDEFGH", reservation="academy-ws-llm-day", starts_at=NOW, ends_at=NOW + 3 * 3600))
    grants = ProfileGrants(url, cfg["profiles"])
    (profile,), exclusive, _ = grants("ws-llm-day-03", [], now=NOW + 3600)
    assert exclusive and profile.key == "cpu-small" and profile.reservation == "academy-ws-llm-day"
    assert profile.walltime_max_s == profile.walltime_default_s == 2 * 3600   # to the window's end
    assert grants("ws-llm-day-03", [], now=NOW + 3 * 3600 + 1) == ([], True, "The workshop 'LLM day' has ended; "
                                                                     "its sessions are closed.")
    assert grants("ws-llm-day-99", [], now=NOW)[0] == []            # no such seat
    assert grants("learner1", ["learners"], now=NOW) is None        # not in a workshop: their own profiles


def test_a_join_code_never_reaches_a_log_line():
    from assessments.service.security import redact

    line = "302 GET /hub/workshop/join/QVKBGEHA -> /user/ws-a-01/academy/open?course=llm-101 (@10.0.0.7) 15.1ms"
    assert redact(line) == "302 GET /hub/workshop/join/[secret] -> /user/ws-a-01/academy/open?course=llm-101 " \
                           "(@10.0.0.7) 15.1ms"


def test_a_join_ticket_is_good_once_for_its_own_account_and_only_until_it_expires():
    from hub.workshops.tickets import Tickets

    tickets = Tickets(ttl_s=120)
    t = tickets.issue("ws-day-01", "token-1", now=0)
    assert tickets.redeem(t, "ws-day-02", now=1) is None   # another seat's server cannot take it...
    assert tickets.redeem(t, "ws-day-01", now=1) == "token-1"   # ...and it stays good for its own
    assert tickets.redeem(t, "ws-day-01", now=2) is None   # once
    late = tickets.issue("ws-day-01", "token-2", now=0)
    assert tickets.redeem(late, "ws-day-01", now=121) is None
    assert tickets.redeem("made-up", "ws-day-01", now=1) is None
    assert len({tickets.issue("ws-day-01", "t", now=0) for _ in range(100)}) == 100


@pytest.mark.parametrize("shown, message", [
    ({"Nodes": "(null)", "NodeCnt": "0", "StartTime": "2026-01-01T08:00:00", "EndTime": "2026-01-01T18:00:00"},
     "reservation 'site-day' has no nodes; ask the site to give it nodes"),
    (None, "Slurm has no reservation 'site-day' (scontrol show reservation); ask the site for one"),
])
def test_a_site_reservation_without_nodes_or_at_all_is_refused(monkeypatch, shown, message):
    # A reservation of licences only has no nodes; the one-node test cluster has no licences to
    # make one, so scontrol's answer is scripted here. (tests/e2e/test_workshops.py refuses a real
    # reservation of the wrong window, and a missing one.)
    from hub.workshops import reservation

    monkeypatch.setattr(reservation, "show", lambda bin_dir, name: shown)
    with pytest.raises(WorkshopError) as e:
        reservation.check_existing("", "site-day", workshop())
    assert message in str(e.value)
