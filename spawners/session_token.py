"""A session's hub API token lives exactly as long as its Slurm job.

JupyterHub revokes a server's token in ``User.stop()``, by the value in ``spawner.api_token``.
A job that ends by itself (walltime, ``scancel``, preemption, a crash) is first seen by the
hub's periodic poll, and a poll that finds the job gone clears the spawner's state, token
included, before ``User.stop()`` reads it; after a hub restart the spawner never had the value
(JupyterHub keeps no token in the spawner's state). The token then answered for ever: server
tokens have no expiry.

So the spawner keeps the token's row id (a number, not a secret) in its state
(``session_token_id``) and revokes by id the moment it learns the session ended, however it
ended; the OAuth tokens the hub issued to the server's client (the browser's cookie for
/user/<name>/) go with it. And the token expires with the job's walltime plus
``token_expiry_margin``, should any path still miss it.
"""

from __future__ import annotations

from datetime import timedelta

from jupyterhub import orm

SERVER_TOKEN_NOTE = "Server at "  # JupyterHub's note on the token it makes in User.spawn()


def expire_in(spawner, seconds: float) -> None:
    """Make the session's token expire ``seconds`` (plus the spawner's margin) from now, and remember its id."""
    row = orm.APIToken.find(spawner.db, spawner.api_token) if spawner.api_token else None
    if row is None:
        return
    row.expires_at = orm.APIToken.now() + timedelta(seconds=int(seconds + spawner.token_expiry_margin))
    spawner.db.commit()
    spawner.session_token_id = row.id


def revoke(spawner) -> None:
    """Delete the session's token and its server's OAuth tokens; never raises (a stop must go on)."""
    try:
        gone = _revoke(spawner.db, spawner)
    except Exception:  # the token still expires with the walltime
        spawner.log.exception("Revoking the hub token of %s's session failed", spawner.user.name)
        return
    if gone:
        spawner.log.info("Revoked %d hub token(s) of %s's session (job %s)", gone, spawner.user.name,
                         spawner.job_id or "none")


def _revoke(db, spawner) -> int:
    rows = []
    row = db.get(orm.APIToken, spawner.session_token_id) if spawner.session_token_id else None
    # The id comes from the spawner's saved state: make sure it still names this server's token.
    if row is not None and row.user_id == spawner.user.id and (row.note or "").startswith(SERVER_TOKEN_NOTE):
        rows.append(row)
    if spawner.oauth_client_id:
        rows += db.query(orm.APIToken).filter_by(client_id=spawner.oauth_client_id).all()
    for row in rows:
        db.delete(row)
    if rows:
        db.commit()
    return len(rows)
