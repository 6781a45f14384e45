"""Certificates of completed tracks: a PDF, a signed record, and how both are verified.

A certificate is issued once per learner and track (a unique constraint; issuing again returns
the first) when the track's completion is recorded (completion.py). Its record holds the PDF as
issued and an Ed25519 signature over a canonical statement of every field that matters (id,
learner, printed name, track, dates, the PDF's SHA-256). The private key lives in a file only
root can read, beside the hub's own state (`<hub.state_dir>/progress-certificate-key.pem`), never
in the database: whoever can write the database (a shared PostgreSQL, a backup restored by
hand) still cannot make or alter a certificate that verifies. Ed25519 rather than an HMAC
because verifying needs only the public key: no verifier ever holds what it takes to sign.
Losing the key file makes existing certificates unverifiable: back it up with the database.

    verify(record, public_key)             the record is as issued
    verify_pdf(record, pdf, public_key)    and this PDF is the document issued with it
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import io
import json
import os
import pwd
import secrets
import time
from dataclasses import dataclass
from pathlib import Path

import sqlalchemy as sa
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from reportlab.lib.colors import HexColor
from reportlab.lib.pagesizes import A4, landscape
from reportlab.pdfbase import pdfmetrics
from reportlab.pdfbase.ttfonts import TTFont
from reportlab.pdfgen import canvas

from .completion import Programme
from .models import certificates, track_completions

KEY_FILE = "progress-certificate-key.pem"
ISSUER = "AI Factory Academy"
ID_LENGTH = 32                      # hex characters: 128 random bits


@dataclass(frozen=True)
class Signer:
    """The service's signing key (private part in memory only) and its public half."""
    private: Ed25519PrivateKey

    @property
    def public(self) -> Ed25519PublicKey:
        return self.private.public_key()

    @property
    def key_id(self) -> str:
        return key_id(self.public)

    def sign(self, data: bytes) -> str:
        return base64.b64encode(self.private.sign(data)).decode()

    @classmethod
    def load_or_create(cls, path: str | os.PathLike) -> "Signer":
        """The key in `path`, made once (mode 0600, created exclusively so two starts agree)."""
        path = Path(path)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            data = path.read_bytes()
        else:
            key = Ed25519PrivateKey.generate()
            data = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                     serialization.NoEncryption())
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
        if path.stat().st_mode & 0o077:
            raise PermissionError(f"{path}: the certificate signing key must be readable by its owner only "
                                  f"(chmod 600 {path})")
        key = serialization.load_pem_private_key(data, password=None)
        if not isinstance(key, Ed25519PrivateKey):
            raise ValueError(f"{path} does not hold an Ed25519 private key")
        return cls(key)


def key_id(public: Ed25519PublicKey) -> str:
    raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


def statement(record: dict) -> bytes:
    """What is signed: every field of the record but the PDF itself (its digest stands for it)."""
    fields = {k: record[k] for k in ("id", "user", "name", "track", "track_title", "completed_at", "issued_at",
                                     "pdf_sha256", "key_id")}
    return json.dumps({"v": 1, **fields}, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def verify(record: dict | None, public: Ed25519PublicKey) -> tuple[bool, str]:
    """(valid, why not): the record's signature checks out with this key."""
    if record is None:
        return False, "no certificate with this id was issued here"
    if record["key_id"] != key_id(public):
        return False, "the record names a signing key this service does not hold"
    try:
        public.verify(base64.b64decode(record["signature"], validate=True), statement(record))
    except (InvalidSignature, binascii.Error, ValueError):
        return False, "the record's signature does not match its contents: it was altered after issue"
    if hashlib.sha256(record["pdf"]).hexdigest() != record["pdf_sha256"]:
        return False, "the stored PDF is not the one issued"
    return True, ""


def verify_pdf(record: dict | None, pdf: bytes, public: Ed25519PublicKey) -> tuple[bool, str]:
    """(valid, why not): the record is valid and `pdf` is, byte for byte, the document issued."""
    ok, why = verify(record, public)
    if not ok:
        return ok, why
    if hashlib.sha256(pdf).hexdigest() != record["pdf_sha256"]:
        return False, "this PDF is not the document issued with the certificate (it was altered, or is another)"
    return True, ""


def display_name(user: str) -> str:
    """The name to print: the account's full name (GECOS), else the user name."""
    try:
        gecos = pwd.getpwnam(user).pw_gecos.split(",")[0].strip()
    except KeyError:
        gecos = ""
    return gecos[:200] or user


def day(ts: float) -> str:
    return time.strftime("%d %B %Y", time.gmtime(ts)).lstrip("0")


def _fonts(texts: list[str]) -> tuple[str, str]:
    """PDF's standard Helvetica (nothing embedded: a 2 KB file) when every text is in its encoding;
    otherwise DejaVu Sans (shipped with matplotlib), embedded, so any name prints."""
    try:
        for text in texts:
            text.encode("cp1252")
        return "Helvetica", "Helvetica-Bold"
    except UnicodeEncodeError:
        pass
    if "AcademySans" not in pdfmetrics.getRegisteredFontNames():
        import matplotlib
        folder = Path(matplotlib.get_data_path()) / "fonts" / "ttf"
        pdfmetrics.registerFont(TTFont("AcademySans", str(folder / "DejaVuSans.ttf")))
        pdfmetrics.registerFont(TTFont("AcademySans-Bold", str(folder / "DejaVuSans-Bold.ttf")))
    return "AcademySans", "AcademySans-Bold"


def render_pdf(record: dict, verify_url: str, courses: list[str]) -> bytes:
    """The certificate as a one-page PDF (A4 landscape), the same bytes for the same record."""
    regular, bold = _fonts([record["name"], record["track_title"], *courses])
    out = io.BytesIO()
    width, height = landscape(A4)
    c = canvas.Canvas(out, pagesize=(width, height), invariant=1, pageCompression=1)
    c.setTitle(f"{ISSUER}: certificate {record['id']}")
    c.setAuthor(ISSUER)
    c.setSubject(f"{record['track_title']} track completed")
    navy, grey = HexColor("#1f3a5f"), HexColor("#57606a")
    c.setStrokeColor(navy)
    c.setLineWidth(3)
    c.rect(28, 28, width - 56, height - 56)

    def centred(colour, font: str, size: int, y: float, text: str) -> None:
        c.setFillColor(colour)
        c.setFont(font, size)
        c.drawCentredString(width / 2, y, text)

    centred(navy, bold, 16, height - 90, ISSUER.upper())
    centred(navy, regular, 30, height - 150, "Certificate of completion")
    centred(grey, regular, 14, height - 200, "This certifies that")
    centred(navy, bold, 28, height - 245, record["name"])
    centred(grey, regular, 14, height - 285, "has passed every course of the programme track")
    centred(navy, bold, 22, height - 322, record["track_title"])
    for i, line in enumerate(courses[:4]):
        centred(grey, regular, 11, height - 350 - 15 * i, line)
    centred(grey, regular, 14, 150, f"completed on {day(record['completed_at'])}")
    c.setFont(regular, 9)
    c.drawString(56, 72, f"Certificate {record['id']}, issued {day(record['issued_at'])}.")
    c.drawString(56, 58, f"Verify it at {verify_url}")
    # ... and the line is a link, so a reader of the PDF can click through to the verification page.
    c.linkURL(verify_url, (56, 54, width - 56, 68), relative=0)
    c.showPage()
    c.save()
    return out.getvalue()


def issue(conn: sa.Connection, signer: Signer, programme: Programme, user: str, track: str, completed_at: float,
          verify_prefix: str, now: float | None = None) -> dict:
    """The learner's certificate for `track`: the one issued before, or a new one (in conn's transaction)."""
    c = certificates.c
    existing = conn.execute(sa.select(certificates).where(c.user == user, c.track == track)).mappings().first()
    if existing is not None:
        return dict(existing)
    cert_id = secrets.token_hex(ID_LENGTH // 2)
    record = {"id": cert_id, "user": user, "track": track, "name": display_name(user),
              "track_title": programme.track_title(track), "completed_at": int(completed_at),
              "issued_at": int(time.time() if now is None else now), "key_id": signer.key_id}
    courses = [f"{cid}: {programme.course_titles.get(cid, cid)}" for cid in programme.tracks.get(track, ())]
    record["pdf"] = render_pdf(record, f"{verify_prefix}certificates/{cert_id}", courses)
    record["pdf_sha256"] = hashlib.sha256(record["pdf"]).hexdigest()
    record["signature"] = signer.sign(statement(record))
    # The single writer holds the write lock, so nothing can come between the check and this.
    conn.execute(sa.insert(certificates).values(**record))
    return record


def issue_missing(conn: sa.Connection, signer: Signer, programme: Programme, verify_prefix: str,
                  now: float | None = None) -> list[dict]:
    """A certificate for every recorded track completion that has none (after a restart, or a
    track_completed event that another part sent); only tracks the programme knows."""
    tc, c = track_completions.c, certificates.c
    rows = conn.execute(sa.select(tc.user, tc.track, tc.completed_at).select_from(
        track_completions.outerjoin(certificates, sa.and_(c.user == tc.user, c.track == tc.track)))
        .where(c.id.is_(None), tc.track.in_(list(programme.tracks)))).all()
    return [issue(conn, signer, programme, r.user, r.track, r.completed_at, verify_prefix, now) for r in rows]


def of_user(conn: sa.Connection, user: str) -> list[dict]:
    """A learner's certificates (without the PDFs), by track."""
    c = certificates.c
    return [dict(r) for r in conn.execute(
        sa.select(c.id, c.track, c.track_title, c.completed_at, c.issued_at).where(c.user == user)
        .order_by(c.track)).mappings()]


def by_id(conn: sa.Connection, cert_id: str) -> dict | None:
    row = conn.execute(sa.select(certificates).where(certificates.c.id == cert_id)).mappings().first()
    return dict(row) if row else None
