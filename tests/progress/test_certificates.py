"""Completion and certificates: the pass rule, one signed certificate per learner and track,
verification of the record and of the PDF, and who sees what of it.
"""

from __future__ import annotations

import os
import random
import re

import pytest
import sqlalchemy as sa

from assessments.progress import certificates, completion, db, events as ev
from assessments.progress.models import certificates as certificates_table, learner_courses, track_completions

from .eventgen import T0
from .pagesupport import PREFIX, PROGRAMME, PUBLIC_URL, Service, graded, released, track_passed


def ingest(engine, events, signer=None, batch=500):
    """What the service does with a batch: record it, then what it completed, then the certificates."""
    for i in range(0, len(events), batch):
        good, bad = ev.validate_batch(events[i:i + batch])
        assert not bad, bad
        with db.write_transaction(engine) as conn:
            ev.ingest(conn, good, source="test")
            completion.record(conn, PROGRAMME, good, T0 + 86400)
    if signer is not None:
        with db.write_transaction(engine) as conn:
            return certificates.issue_missing(conn, signer, PROGRAMME, "/services/academy-progress/", now=T0 + 86400)
    return []


def state(engine):
    with engine.connect() as conn:
        courses = sorted(conn.execute(sa.select(learner_courses.c.user, learner_courses.c.course,
                                                learner_courses.c.completed_at)
                                      .where(learner_courses.c.completed_at.is_not(None))).all())
        tracks = sorted(conn.execute(sa.select(track_completions)).all())
        certs = sorted(conn.execute(sa.select(certificates_table.c.id, certificates_table.c.user,
                                              certificates_table.c.track)).all())
    return courses, tracks, certs


@pytest.fixture
def signer(tmp_path):
    return certificates.Signer.load_or_create(tmp_path / certificates.KEY_FILE)


def test_the_pass_rule_is_half_the_points_on_every_assignment():
    assert completion.PASS_FRACTION == 0.5
    rule = ("tokenization", "attention")
    assert completion.passed({"tokenization": (5, 10), "attention": (10, 10)}, rule)        # exactly half passes
    assert not completion.passed({"tokenization": (4.99, 10), "attention": (10, 10)}, rule)
    assert not completion.passed({"tokenization": (10, 10)}, rule)                          # one not graded
    assert not completion.passed({}, ())


def test_a_learner_who_has_not_passed_gets_no_certificate_until_they_do(engine, signer):
    # llm-101 passed, llm-201's only assignment below half: the course and so the track are not.
    assert ingest(engine, track_passed("learner1", {"finetune": 4.9}), signer) == []
    courses, tracks, certs = state(engine)
    assert [(u, c) for u, c, _ in courses] == [("learner1", "llm-101")] and tracks == [] and certs == []
    # A trainer's regrade lifts it to 6: the track completes at that grade's time, and the certificate follows.
    regrade = {"id": "1b0c9e52-9f3e-4a55-8d2e-0c1d2e3f4a5b", "type": "score_recorded", "user": "learner1",
               "course": "llm-201", "assignment": "finetune", "occurred_at": T0 + 9000,
               "payload": {"score": 6.0, "max_score": 10.0, "grader": "trainer1"}}
    issued = ingest(engine, [regrade], signer)
    assert [(c["user"], c["track"], c["completed_at"]) for c in issued] == [("learner1", "llm-engineering", T0 + 9000)]
    # A later, lower grade takes nothing back.
    ingest(engine, [{**regrade, "id": "2b0c9e52-9f3e-4a55-8d2e-0c1d2e3f4a5b", "occurred_at": T0 + 9999,
                     "payload": {"score": 1.0, "max_score": 10.0}}], signer)
    assert len(state(engine)[2]) == 1


def test_completion_is_the_same_in_any_order_once_and_survives_a_rebuild(engine, signer):
    events = track_passed("learner1") + track_passed("learner2", {"attention": 2.0})
    shuffled = events[:]
    random.Random(6).shuffle(shuffled)
    ingest(engine, shuffled, signer, batch=3)
    ingest(engine, events, signer)                     # replayed: nothing new
    first = state(engine)
    assert [(u, c) for u, c, _ in first[0]] == [("learner1", "llm-101"), ("learner1", "llm-201"),
                                                ("learner2", "llm-201")]
    assert first[1] == [("learner1", "llm-engineering", T0 + 7200)] and len(first[2]) == 1
    with db.write_transaction(engine) as conn:        # the derived tables again, from `events` alone
        ev.rebuild(conn)
    assert state(engine) == first                     # certificates are kept: they are not derived


def test_issuing_twice_gives_the_same_certificate_and_the_database_refuses_a_second(engine, signer):
    ingest(engine, track_passed("learner1"), signer)
    with db.write_transaction(engine) as conn:
        again = certificates.issue(conn, signer, PROGRAMME, "learner1", "llm-engineering", T0, "/p/")
        first = certificates.of_user(conn, "learner1")
        assert [c["id"] for c in first] == [again["id"]] and again["completed_at"] == T0 + 7200
    with pytest.raises(sa.exc.IntegrityError):
        with db.write_transaction(engine) as conn:
            conn.execute(sa.insert(certificates_table).values(**{**again, "id": "f" * 32}))


def test_the_signature_verifies_and_any_change_to_the_record_or_the_pdf_fails(engine, signer, tmp_path):
    [cert] = ingest(engine, track_passed("learner1"), signer)
    with engine.connect() as conn:
        record = certificates.by_id(conn, cert["id"])
    assert certificates.verify(record, signer.public) == (True, "")
    assert certificates.verify_pdf(record, record["pdf"], signer.public) == (True, "")
    assert record["pdf"].startswith(b"%PDF-") and record["pdf_sha256"] == cert["pdf_sha256"]
    for field, value in (("name", "Mallory"), ("track", "hpc-engineering"), ("completed_at", T0 - 86400),
                         ("user", "learner2"), ("pdf_sha256", "0" * 64)):
        ok, why = certificates.verify({**record, field: value}, signer.public)
        assert not ok and why, field
    # A PDF with one byte changed (or someone else's) is not the document issued.
    tampered = bytearray(record["pdf"])
    tampered[len(tampered) // 2] ^= 1
    ok, why = certificates.verify_pdf(record, bytes(tampered), signer.public)
    assert not ok and "not the document issued" in why
    # Made with another key (someone who can write the database, without the key file): refused.
    other = certificates.Signer.load_or_create(tmp_path / "other-key.pem")
    forged = {**record, "name": "Mallory", "key_id": other.key_id}
    forged["signature"] = other.sign(certificates.statement(forged))
    assert certificates.verify(forged, signer.public) == \
        (False, "the record names a signing key this service does not hold")
    forged["key_id"] = signer.key_id
    assert not certificates.verify(forged, signer.public)[0]


def test_the_signing_key_is_made_once_and_readable_by_its_owner_only(tmp_path):
    path = tmp_path / certificates.KEY_FILE
    first = certificates.Signer.load_or_create(path)
    assert os.stat(path).st_mode & 0o777 == 0o600
    assert certificates.Signer.load_or_create(path).key_id == first.key_id
    os.chmod(path, 0o644)
    with pytest.raises(PermissionError, match="readable by its owner only"):
        certificates.Signer.load_or_create(path)


def test_the_learner_sees_the_certificate_and_anyone_can_verify_name_track_and_date_only(svc, monkeypatch):
    monkeypatch.setattr(certificates, "display_name", lambda user: "Ada Lovelace" if user == "learner1" else user)
    svc.send(track_passed("learner1"))
    svc.send(track_passed("learner1"))          # replayed: still one
    page = svc.get("me", "t-learner1").text
    links = re.findall(r'href="/services/academy-progress/certificates/([0-9a-f]{32})"', page)
    assert len(links) == 1 and "passed" in page
    cert_id = links[0]
    public = svc.get(f"certificates/{cert_id}")        # no token: an employer's browser
    assert public.status_code == 200 and public.headers["X-Robots-Tag"] == "noindex"
    text = re.sub(r"<[^>]+>", " ", public.text.split("<body>")[1])
    assert "Valid." in text and "Ada Lovelace" in text and "LLM engineering" in text and "1 January 2026" in text
    for private in ("learner1", "llm-101", "tokenization", "8 / 10", "score"):
        assert private not in text, private
    pdf = svc.get(f"certificates/{cert_id}.pdf")
    assert pdf.status_code == 200 and pdf.headers["Content-Type"] == "application/pdf"
    # The PDF links to its verification page at the hub's public address (hub.public_url).
    assert f"/URI ({PUBLIC_URL.rstrip('/')}{PREFIX}certificates/{cert_id})".encode() in pdf.content
    assert "original" in svc.post(f"certificates/{cert_id}", files={"pdf": ("c.pdf", pdf.content)}).text
    edited = bytearray(pdf.content)
    edited[len(edited) // 2] ^= 1
    bad = svc.post(f"certificates/{cert_id}", files={"pdf": ("c.pdf", bytes(edited))})
    assert bad.status_code == 200 and "This PDF does not match" in bad.text
    # The record altered in the database (no key to sign it again): the page says so.
    with db.write_transaction(svc.engine) as conn:
        conn.execute(sa.update(certificates_table).values(name="Eve"))
    altered = svc.get(f"certificates/{cert_id}").text
    assert "Not valid:" in altered and "altered after issue" in altered and "Eve" not in altered


@pytest.mark.parametrize("path, status, says", [
    ("certificates/" + "0" * 32, 404, "no certificate " + "0" * 32 + " was issued here"),
    ("certificates/not-an-id", 404, "a certificate id is 32 hexadecimal digits"),
    ("certificates/XYZ.pdf", 404, "a certificate id is 32 hexadecimal digits"),
])
def test_unknown_or_malformed_certificate_ids_are_404_pages(svc, path, status, says):
    r = svc.get(path)
    assert r.status_code == status and says in r.text and "Traceback" not in r.text


def test_a_pdf_check_without_a_file_says_what_to_send(svc):
    svc.send(track_passed("learner1"))
    cert_id = re.search(r"certificates/([0-9a-f]{32})", svc.get("me", "t-learner1").text).group(1)
    r = svc.post(f"certificates/{cert_id}", data={})
    assert r.status_code == 400 and "choose the certificate&#39;s PDF file" in r.text


def test_a_track_completed_event_from_elsewhere_gets_its_certificate(engine, signer):
    # Another part (or an earlier version) recorded the completion: issued on the next pass, once.
    event = {"id": "3c0c9e52-9f3e-4a55-8d2e-0c1d2e3f4a5b", "type": "track_completed", "user": "learner2",
             "occurred_at": T0, "payload": {"track": "hpc-engineering"}}
    assert [c["track"] for c in ingest(engine, [event], signer)] == ["hpc-engineering"]
    assert ingest(engine, [event], signer) == []


def test_grades_of_courses_outside_the_programme_complete_nothing(engine, signer):
    events = [released("gpu-999", "x"), *graded("learner1", "gpu-999", "x", 10.0)]
    assert ingest(engine, events, signer) == [] and state(engine) == ([], [], [])
