//! Registry auth on the wire: the challenge learnt from `GET /v2/`, basic credentials for
//! the registry's own origin, and the bearer flow (basic credentials to the token realm the
//! challenge names, the token to the registry), tokens cached per scope. The state lock is
//! never held across network I/O or a credential helper run: a lookup (ping, credentials,
//! one scope's token) runs under its own flight lock, so threads needing the same answer
//! wait for the first one's instead of asking again, and the others are not blocked.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ureq::http::Response;

use crate::auth::{Challenge, Credentials, IDENTITY_TOKEN_USER};
use crate::error::is_transient_status;
use crate::Error;

use super::transport::{error_from_status, header, query_escape, with_query, Req};
use super::Client;

/// What the client knows of one registry's auth.
#[derive(Default)]
pub(crate) struct HostAuth {
    /// Looked up once per registry (a credential helper runs once).
    creds: Option<Option<Credentials>>,
    /// Learnt from `GET /v2/` (inner `None`: the registry wants no auth).
    challenge: Option<Option<Challenge>>,
    tokens: HashMap<String, (String, Option<Instant>)>,
    /// One lock per lookup in flight (`ping`, `creds`, `token <scope>`).
    flights: HashMap<String, Arc<Mutex<()>>>,
}

impl Client {
    fn host_state<T>(&self, registry: &str, f: impl FnOnce(&mut HostAuth) -> T) -> T {
        let mut hosts = self.hosts.lock().expect("auth state poisoned");
        f(hosts.entry(registry.to_owned()).or_default())
    }

    /// The lock of one lookup for `registry`.
    fn flight(&self, registry: &str, what: &str) -> Arc<Mutex<()>> {
        self.host_state(registry, |st| st.flights.entry(what.to_owned()).or_default().clone())
    }

    /// The registry's credentials, looked up (outside the state lock) on first need.
    fn credentials_for(&self, registry: &str) -> Result<Option<Credentials>, Error> {
        if let Some(c) = self.host_state(registry, |st| st.creds.clone()) {
            return Ok(c);
        }
        let flight = self.flight(registry, "creds");
        let _one = flight.lock().expect("flight lock");
        if let Some(c) = self.host_state(registry, |st| st.creds.clone()) {
            return Ok(c);
        }
        let found = self.credentials.lookup(registry)?;
        Ok(self.host_state(registry, |st| st.creds.get_or_insert(found).clone()))
    }

    /// The `Authorization` header for `req` (a request to the registry's own origin): learns
    /// the registry's scheme on first contact (`GET /v2/`), then sends basic credentials or
    /// a bearer token cached per scope.
    pub(crate) fn authorization(&self, req: &Req) -> Result<Option<String>, Error> {
        let known = self.host_state(req.registry, |st| st.challenge.clone());
        let challenge = match known {
            Some(c) => c,
            None => {
                let flight = self.flight(req.registry, "ping");
                let _one = flight.lock().expect("flight lock");
                match self.host_state(req.registry, |st| st.challenge.clone()) {
                    Some(c) => c,
                    None => {
                        let c = self.ping(req)?;
                        self.host_state(req.registry, |st| st.challenge.get_or_insert(c).clone())
                    }
                }
            }
        };
        let Some(challenge) = challenge else { return Ok(None) };
        // Only a registry that asks is given (or costs a helper run for) credentials.
        let creds = self.credentials_for(req.registry)?;
        match challenge {
            Challenge::Basic => Ok(creds.map(|c| c.basic_header())),
            Challenge::Bearer { realm, service, .. } => {
                let cached = || {
                    self.host_state(req.registry, |st| st.tokens.get(&req.scope).cloned())
                        .filter(|(_, expiry)| expiry.is_none_or(|e| Instant::now() < e))
                };
                if let Some((token, _)) = cached() {
                    return Ok(Some(format!("Bearer {token}")));
                }
                let flight = self.flight(req.registry, &format!("token {}", req.scope));
                let _one = flight.lock().expect("flight lock");
                if let Some((token, _)) = cached() {
                    return Ok(Some(format!("Bearer {token}")));
                }
                let (token, expiry) = self.fetch_token(req, &realm, service.as_deref(), creds.as_ref())?;
                self.host_state(req.registry, |st| {
                    st.tokens.insert(req.scope.clone(), (token.clone(), expiry))
                });
                Ok(Some(format!("Bearer {token}")))
            }
        }
    }

    /// `GET /v2/` without credentials: 200 means open, 401 names the scheme.
    fn ping(&self, req: &Req) -> Result<Option<Challenge>, Error> {
        let v2 = req.url.find("/v2/").map_or(req.url.as_str(), |i| &req.url[..i + 4]);
        let ping = Req {
            method: "GET",
            url: v2.to_owned(),
            registry: req.registry,
            scope: String::new(),
            headers: vec![],
        };
        // Not retried here: the request that needs it is.
        let resp = self.call(req.registry, "GET", &ping.url, || self.agent.get(&ping.url).call())?;
        if is_transient_status(resp.status().as_u16()) {
            return Err(error_from_status(&ping, "the API version check", resp, None));
        }
        self.health.answered(req.registry);
        Ok(match resp.status().as_u16() {
            401 => header(&resp, "WWW-Authenticate").and_then(|h| Challenge::parse(&h)),
            _ => None,
        })
    }

    /// The token endpoint of the bearer flow (`realm?service=…&scope=…`), with basic
    /// credentials when there are any (anonymous pulls get a token without). The realm is
    /// the one the registry's challenge named: the standard flow sends the login there.
    fn fetch_token(
        &self,
        req: &Req,
        realm: &str,
        service: Option<&str>,
        creds: Option<&Credentials>,
    ) -> Result<(String, Option<Instant>), Error> {
        let mut url = realm.to_owned();
        if let Some(s) = service {
            url = with_query(&url, "service", s);
        }
        for s in req.scope.split(' ').filter(|s| !s.is_empty()) {
            url = with_query(&url, "scope", s);
        }
        // An identity token (Docker's `identitytoken`, a helper's `<token>` user) is an
        // OAuth2 refresh token, exchanged by POST; a password goes as basic auth on GET.
        let refresh = creds.filter(|c| c.username == IDENTITY_TOKEN_USER);
        let token_req = Req {
            method: if refresh.is_some() { "POST" } else { "GET" },
            url: if refresh.is_some() { realm.to_owned() } else { url.clone() },
            registry: req.registry,
            scope: req.scope.clone(),
            headers: vec![],
        };
        // Not retried here: the request that needs the token is.
        let resp = self.call(req.registry, token_req.method, &token_req.url, || match refresh {
            Some(c) => {
                let mut form = format!(
                    "grant_type=refresh_token&client_id=nix-layer&refresh_token={}",
                    query_escape(&c.password)
                );
                if let Some((_, service_and_scopes)) = url.split_once('?') {
                    form = format!("{form}&{service_and_scopes}");
                }
                self.agent
                    .post(realm)
                    .header("Content-Type", "application/x-www-form-urlencoded")
                    .send(form.as_bytes())
            }
            None => {
                let mut r = self.agent.get(&url);
                if let Some(c) = creds {
                    r = r.header("Authorization", c.basic_header());
                }
                r.call()
            }
        })?;
        if resp.status() != 200 {
            let user = creds.map(|c| c.username.clone());
            return Err(error_from_status(&token_req, "the token request", resp, user));
        }
        #[derive(serde::Deserialize)]
        struct TokenAnswer {
            token: Option<String>,
            access_token: Option<String>,
            expires_in: Option<u64>,
        }
        let protocol = |reason: String| Error::Protocol {
            registry: req.registry.to_owned(),
            what: format!("{} {}", token_req.method, token_req.url),
            reason,
        };
        let body = self.body_reader(&token_req, resp, 1 << 20).read_all()?;
        let answer: TokenAnswer = serde_json::from_slice(&body).map_err(|e| protocol(e.to_string()))?;
        let token =
            answer.token.or(answer.access_token).ok_or_else(|| protocol("no token in the answer".into()))?;
        // Renew a little early; the spec's default lifetime is 60 s.
        let expiry =
            Instant::now() + Duration::from_secs(answer.expires_in.unwrap_or(60).saturating_sub(10).max(1));
        Ok((token, Some(expiry)))
    }

    /// After a 401: adopt the challenge and drop the rejected token, or fail if trying again
    /// cannot help (no credentials for basic auth, or basic credentials just refused).
    pub(crate) fn learn_challenge(&self, req: &Req, resp: &Response<ureq::Body>) -> Result<(), Error> {
        let challenge = header(resp, "WWW-Authenticate").and_then(|h| Challenge::parse(&h));
        let creds = self.credentials_for(req.registry)?;
        let refused = |message: &str| Error::Unauthorized {
            registry: req.registry.to_owned(),
            scope: req.scope.clone(),
            status: 401,
            user: creds.as_ref().map(|c| c.username.clone()),
            message: message.to_owned(),
        };
        self.host_state(req.registry, |st| {
            match &challenge {
                None => return Err(refused("the registry sent no usable WWW-Authenticate challenge")),
                Some(Challenge::Basic) if creds.is_none() => {
                    return Err(refused(
                        "the registry requires a login (docker login, --creds or an auth file)",
                    ))
                }
                Some(Challenge::Basic) if st.challenge == Some(Some(Challenge::Basic)) => {
                    return Err(refused("wrong user name or password"))
                }
                _ => {}
            }
            st.tokens.remove(&req.scope);
            st.challenge = Some(challenge.clone());
            Ok(())
        })
    }

    /// The error for an unexpected status, with the registry's own error text.
    pub(crate) fn status_error(&self, req: &Req, what: &str, resp: Response<ureq::Body>) -> Error {
        let user = if matches!(resp.status().as_u16(), 401 | 403) {
            self.host_state(req.registry, |st| st.creds.clone().flatten().map(|c| c.username))
        } else {
            None
        };
        error_from_status(req, what, resp, user)
    }
}
