"""Login through the centre's OpenID Connect provider: oauthenticator's GenericOAuthenticator, with
what an AI Factory needs around it.

- The username is a claim (``auth.oidc.username_claim``) that must already be a Unix account name:
  sessions run as that account on the cluster (sbatch through sudo). With ``unix_accounts:
  existing`` a login whose account does not exist on the hub host is refused with a message that
  says so; with ``create`` the account is made on first login (``useradd``).
- The provider's groups (``groups_claim``) decide who may log in (``allowed_groups``), who is an
  administrator (``admin_groups``), which hub groups a user is in (``group_map``: the groups
  profiles are offered to) and which courses they are enrolled in (``course_roles``: enrolled in
  the gradebook at login, so the exchange, the progress pages and the course's hub groups all
  follow).
- The hub's groups are managed by this authenticator (JupyterHub's ``manage_groups``): at each
  login and token refresh a user's groups become the mapped provider groups plus their course
  groups from the gradebook's enrolment (between logins the exchange keeps course groups in step
  with enrolment, as with PAM).
- Tokens are kept (encrypted auth state) and checked with the provider every ``refresh_s``: a login
  the provider no longer honours (expired, revoked) must sign in again.
"""

from __future__ import annotations

import json
import os
import pwd
import re
import stat
import subprocess
import urllib.request
from urllib.error import URLError

from oauthenticator.generic import GenericOAuthenticator
from tornado import web
from traitlets import Dict, Set, Unicode

from courses.groups import group_name

UNIX_NAME = re.compile(r"^[a-z_][a-z0-9_-]{0,31}$")


class OIDCSetupError(RuntimeError):
    """The provider or the client secret is not usable: the hub cannot offer its login."""


class AcademyOIDCAuthenticator(GenericOAuthenticator):
    idp_groups_claim = Unicode("groups", config=True, help="the claim that lists the user's provider groups")
    idp_allowed_groups = Set(Unicode(), config=True, help="provider groups that may log in (empty: any)")
    idp_admin_groups = Set(Unicode(), config=True, help="provider groups of hub administrators")
    group_map = Dict(config=True, help="provider group -> list of hub groups")
    course_roles = Dict(config=True, help="provider group -> {'course', 'role'}")
    unix_accounts = Unicode("existing", config=True, help="'existing' or 'create'")
    gradebook_url = Unicode("", config=True, help="the gradebook's database (enrolment)")

    _enrolment = None

    @property
    def enrolment(self):
        if self._enrolment is None and self.gradebook_url:
            from assessments.gradebook.db import open_gradebook
            from assessments.gradebook.enrolment import Enrolment

            self._enrolment = Enrolment(open_gradebook(self.gradebook_url))
        return self._enrolment

    def provider_groups(self, auth_state: dict) -> set[str]:
        claims = auth_state.get(self.user_auth_state_key) or {}
        groups = claims.get(self.idp_groups_claim) or []
        return {groups} if isinstance(groups, str) else {str(g) for g in groups}

    def course_groups(self, username: str, provider_groups: set[str]) -> set[str]:
        """<course>-learners/-trainers: the gradebook's enrolment and the roles the provider grants now."""
        roles = dict(self.enrolment.find_courses(username)) if self.enrolment and UNIX_NAME.match(username) else {}
        for group in provider_groups:
            if group in self.course_roles:
                spec = self.course_roles[group]
                if roles.get(spec["course"]) != "trainer":     # a trainer stays a trainer
                    roles[spec["course"]] = spec["role"]
        return {group_name(course, role) for course, role in roles.items()}

    async def update_auth_model(self, auth_model):
        username, state = auth_model["name"], auth_model["auth_state"]
        provider = self.provider_groups(state)
        state["provider_groups"] = sorted(provider)
        hub_groups = {g for p in provider for g in self.group_map.get(p, [])} | self.course_groups(username, provider)
        state["hub_groups"] = sorted(hub_groups)
        if self.idp_admin_groups and not auth_model["admin"]:
            auth_model["admin"] = bool(provider & self.idp_admin_groups)
        return auth_model

    async def refresh_user(self, user, handler=None, **kwargs):
        """The provider is asked again whether it still honours the user's token (auth_refresh_age)."""
        refreshed = await super().refresh_user(user, handler, **kwargs)
        if refreshed is False:
            self.log.info("The provider no longer honours the login of %s: they must sign in again", user.name)
        return refreshed

    async def get_user_groups(self, auth_state: dict):
        return set(auth_state.get("hub_groups", []))

    async def check_allowed(self, username, auth_model):
        if auth_model is None:
            return True
        provider = set(auth_model["auth_state"].get("provider_groups", []))
        if self.idp_allowed_groups and not (provider & self.idp_allowed_groups) and not auth_model["admin"]:
            self.log.warning("OIDC login of %s refused: in none of the allowed groups (%s)", username,
                             ", ".join(sorted(provider)) or "no groups")
            return False
        if not UNIX_NAME.match(username):
            raise web.HTTPError(403, f"Your login name '{username}' is not a Unix account name, so no session could "
                                     "run as you on the cluster; ask the centre's support desk.")
        self.ensure_unix_account(username)
        self.enrol(username, provider)
        return True

    def ensure_unix_account(self, username: str) -> None:
        try:
            pwd.getpwnam(username)
            return
        except KeyError:
            pass
        if self.unix_accounts != "create":
            self.log.warning("OIDC login of %s refused: no Unix account of that name", username)
            raise web.HTTPError(403, f"There is no account '{username}' on the cluster yet, so no session could "
                                     "run as you. Ask the centre's support desk to create it, then sign in again.")
        self.log.info("Creating the Unix account %s (first login)", username)
        subprocess.run(["useradd", "--create-home", "--shell", "/bin/bash", username], check=True,
                       capture_output=True)

    def enrol(self, username: str, provider: set[str]) -> None:
        for group in sorted(provider & set(self.course_roles)):
            spec = self.course_roles[group]
            if self.enrolment and self.enrolment.find_role(spec["course"], username) != "trainer":
                if self.enrolment.add(spec["course"], username, spec["role"]):
                    self.log.info("Enrolled %s in %s as %s (provider group %s)", username, spec["course"],
                                  spec["role"], group)


def discover(issuer: str, timeout: float = 10) -> dict:
    """The provider's endpoints from its discovery document."""
    url = issuer.rstrip("/") + "/.well-known/openid-configuration"
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            document = json.load(r)
    except (URLError, OSError, ValueError) as e:
        raise OIDCSetupError(f"the OpenID provider's discovery document {url} could not be read ({e}); "
                             "check auth.oidc.issuer and that the hub host can reach the provider") from None
    missing = [k for k in ("authorization_endpoint", "token_endpoint", "userinfo_endpoint") if k not in document]
    if missing:
        raise OIDCSetupError(f"the OpenID provider's discovery document {url} has no {', '.join(missing)}")
    return document


def read_secret(path: str) -> str:
    try:
        st = os.stat(path)
        with open(path) as f:
            secret = f.read().strip()
    except OSError as e:
        raise OIDCSetupError(f"auth.oidc.client_secret_file {path}: {e.strerror}") from None
    if st.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise OIDCSetupError(f"auth.oidc.client_secret_file {path} may be read by others (mode "
                             f"{stat.S_IMODE(st.st_mode):o}); make it root's only: chmod 600 {path}")
    if not secret:
        raise OIDCSetupError(f"auth.oidc.client_secret_file {path} is empty")
    return secret


def configure(c, cfg: dict, public_url: str, gradebook_url: str, crypt_key: bytes) -> None:
    """The hub's config for auth.type oidc."""
    oidc = cfg["auth"]["oidc"]
    endpoints = discover(oidc["issuer"])
    c.JupyterHub.authenticator_class = AcademyOIDCAuthenticator
    a = c.AcademyOIDCAuthenticator
    a.client_id = oidc["client_id"]
    a.client_secret = read_secret(oidc["client_secret_file"])
    a.authorize_url = endpoints["authorization_endpoint"]
    a.token_url = endpoints["token_endpoint"]
    a.userdata_url = endpoints["userinfo_endpoint"]
    a.scope = list(oidc["scopes"])
    a.username_claim = oidc["username_claim"]
    a.login_service = oidc["login_service"]
    a.oauth_callback_url = public_url.rstrip("/") + "/hub/oauth_callback"
    a.idp_groups_claim = oidc["groups_claim"]
    a.idp_allowed_groups = set(oidc["allowed_groups"])
    a.idp_admin_groups = set(oidc["admin_groups"])
    a.group_map = dict(oidc["group_map"])
    a.course_roles = dict(oidc["course_roles"])
    a.unix_accounts = oidc["unix_accounts"]
    a.gradebook_url = gradebook_url
    a.manage_groups = True
    a.enable_auth_state = True                    # the tokens, to check them with the provider again
    a.auth_refresh_age = oidc["refresh_s"]
    a.refresh_pre_spawn = True                    # never start a session on a login the provider dropped
    a.allow_all = False                           # check_allowed decides (allowed_groups, Unix account)
    c.CryptKeeper.keys = [crypt_key]
