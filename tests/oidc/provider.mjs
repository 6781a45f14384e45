// A real OpenID Connect provider for the tests: panva's oidc-provider (OpenID certified), with its
// development login form (any listed login, no password) and consent page, one client (the hub),
// and the accounts and groups the test hands in. Never for production: it keeps everything in memory.
//
//   node provider.mjs PORT CONFIG.json
//   CONFIG: {"client_id", "client_secret", "redirect_uri", "access_token_ttl",
//            "accounts": {"login": {"preferred_username": ..., "email": ..., "groups": [...]}}}
import { readFileSync } from "node:fs";
import Provider from "oidc-provider";

const [port, configFile] = process.argv.slice(2);
const config = JSON.parse(readFileSync(configFile, "utf8"));
const issuer = `http://127.0.0.1:${port}`;

const provider = new Provider(issuer, {
  clients: [{
    client_id: config.client_id,
    client_secret: config.client_secret,
    redirect_uris: [config.redirect_uri],
    grant_types: ["authorization_code"],
    response_types: ["code"],
    token_endpoint_auth_method: "client_secret_basic",
  }],
  claims: {
    openid: ["sub"],
    profile: ["preferred_username", "name"],
    email: ["email"],
    groups: ["groups"],
  },
  scopes: ["openid", "profile", "email", "groups"],
  ttl: { AccessToken: config.access_token_ttl || 3600 },
  clockTolerance: 0,    // (default 15 s) an expired token is refused at once, as the tests expect
  features: { devInteractions: { enabled: true } },
  pkce: { required: () => false },
  cookies: { keys: ["academy-test-only-cookie-key"] },
  async findAccount(ctx, id) {
    const account = config.accounts[id];
    if (!account) return undefined;
    return { accountId: id, async claims() { return { sub: id, ...account }; } };
  },
});
provider.listen(Number(port), "127.0.0.1", () => console.log(`oidc-provider ${issuer} ready`));
