//! Who may call which route: the API's role table and the one middleware that enforces it on
//! every resource, before a handler reads or validates the body.
//!
//! Kazoo's `cb_simple_authz` rule comes first: a token acts on its own account and its
//! descendants (a superduper account's token on every account), else 403. Inside that tree
//! faxd separates account administrators from plain users, as `cb_accounts` and `cb_users`
//! do for the actions they reserve to admins, and goes further where Kazoo 4.3 left a user
//! able to take the account over:
//!
//! | caller | may |
//! |---|---|
//! | no token | only the public routes (`about`, `healthz`, `metrics` (to `[api] metrics_allow` addresses), `openapi.json`, logins, `tokeninfo`; `GET /v2/accounts` is a 405 for everyone) |
//! | any valid token | describe or revoke itself (`token_auth`) |
//! | admin of the account or of an ancestor (a user with `priv_level: admin`, or an API-key token, which only admins can read) | everything under `/v2/accounts/{A}`: the account, child accounts, users, `api_key`, faxboxes, callflows, faxes |
//! | admin of a superduper account | also `system_configs` |
//! | plain user (`priv_level: user`), in their own account only | read the account document, its faxboxes, `apps_store`, `ledgers/total` and `limits`; read and change their own user document except `priv_level` and `enabled`; every fax route of the account (see below) |
//!
//! Faxes are the account's shared work, as in Kazoo's fax app (any token of the account may
//! use every `cb_faxes` route): a plain user may submit faxes, list and read the account's
//! queue, outbox, inbox and SMTP logs, download documents, resubmit or forward, cancel and
//! delete faxes. A fax a plain user submits is theirs (`owner_id` is set to them, whatever
//! the request says). The routes under `/users/{user_id}/faxes` belong to that user: another
//! plain user gets 403 there. A plain user of an ancestor account gets nothing in a
//! descendant (403): only admins act down the tree.
//!
//! The token is read from `X-Auth-Token`, then `?auth_token=`, then the `auth_token` of a
//! JSON envelope body; multipart and raw document uploads carry it in the header or the
//! query string.
//!
//! Once the token is verified, the request is charged to its account's rate-limit bucket
//! ([`super::rate_limit`]): 429 when it is empty.
//!
//! The role is computed once per request and left in the request's extensions, with the
//! verified [`Caller`] and the resolved account, so handlers do not repeat the store reads.

use std::sync::Arc;

use actix_web::body::BoxBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::Method;
use actix_web::middleware::Next;
use actix_web::{HttpMessage, HttpRequest, web};
use serde_json::Value;

use super::auth_cache::Reads;
use super::request::{self, Caller};
use super::{ApiError, ApiState};
use crate::ids::AccountId;

/// What a route requires of its caller.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    /// No token needed (the handler may check one itself, as `tokeninfo` does).
    Public,
    /// Any valid token.
    AnyToken,
    /// An admin of the caller's own account (`PUT /v2/accounts` creates a child of it).
    OwnAccountAdmin,
    /// An admin of a superduper account.
    SystemAdmin,
    /// Admin or plain user of the path's account.
    Member,
    /// An admin of the path's account, or the user named by `{user_id}` themselves.
    SelfOrAdmin,
    /// An admin of the path's account or of one of its ancestors.
    Admin,
}

impl Access {
    /// The name shown in the OpenAPI document (`x-faxd-access`).
    pub fn name(self) -> &'static str {
        match self {
            Access::Public => "public",
            Access::AnyToken => "any_token",
            Access::OwnAccountAdmin => "own_account_admin",
            Access::SystemAdmin => "system_admin",
            Access::Member => "member",
            Access::SelfOrAdmin => "self_or_admin",
            Access::Admin => "admin",
        }
    }
}

/// The caller's role in the account of the path.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    Admin,
    User,
}

/// The role table: what `method` on the route `pattern` (as mounted, e.g.
/// `/v2/accounts/{account_id}/users/{user_id}`) requires. A route this table does not name
/// needs an admin of the path's account, and is refused to everyone when its path names no
/// account (fail closed).
pub fn access(method: &Method, pattern: &str) -> Access {
    let read = *method == Method::GET;
    let segs: Vec<&str> = pattern.trim_matches('/').split('/').collect();
    match segs.as_slice() {
        ["healthz" | "metrics"]
        | ["v2", "about" | "openapi.json" | "user_auth" | "api_auth"]
        | ["v2", "auth", "tokeninfo"] => Access::Public,
        ["v2", "token_auth"] => Access::AnyToken,
        ["v2", "system_configs", ..] => Access::SystemAdmin,
        // GET answers 405 to everyone, as in Kazoo (the verb check comes before
        // authentication there).
        ["v2", "accounts"] if read => Access::Public,
        ["v2", "accounts"] => Access::OwnAccountAdmin,
        ["v2", "accounts", _] if read => Access::Member,
        ["v2", "accounts", _, "apps_store", ..] => Access::Member,
        // Monster's first-use walkthrough reads these for whoever logs in.
        ["v2", "accounts", _, "ledgers", "total"] | ["v2", "accounts", _, "limits"] if read => {
            Access::Member
        }
        ["v2", "accounts", _, "faxboxes"] | ["v2", "accounts", _, "faxboxes", _] if read => {
            Access::Member
        }
        ["v2", "accounts", _, "faxes", ..] | ["v2", "accounts", _, "faxboxes", _, "faxes", ..] => {
            Access::Member
        }
        ["v2", "accounts", _, "users", _, "faxes", ..] => Access::SelfOrAdmin,
        ["v2", "accounts", _, "users", _] if *method != Method::DELETE => Access::SelfOrAdmin,
        _ => Access::Admin,
    }
}

/// What [`guard`] checks on one resource, decided when the resource is mounted: for each verb
/// it serves, the access the role table requires and how authentication reads. A verb it
/// does not serve is left to the resource's 405.
#[derive(Debug)]
pub struct Rules {
    verbs: Vec<(Method, Access, Reads)>,
}

impl Rules {
    /// The rules of the resource mounted at `pattern` serving `methods`.
    pub fn new<'m>(pattern: &str, methods: impl IntoIterator<Item = &'m Method>) -> Self {
        Self {
            verbs: methods
                .into_iter()
                .map(|m| (m.clone(), access(m, pattern), reads_for(m, pattern)))
                .collect(),
        }
    }

    fn of(&self, method: &Method) -> Option<(Access, Reads)> {
        self.verbs
            .iter()
            .find(|(m, _, _)| m == method)
            .map(|&(_, access, reads)| (access, reads))
    }
}

/// The account of the path, resolved and checked by [`guard`].
#[derive(Clone, Debug)]
pub struct Target {
    pub id: AccountId,
    pub doc: Arc<Value>,
    pub role: Role,
}

/// The caller's role in the path's account, when [`guard`] resolved one.
pub fn role(req: &HttpRequest) -> Option<Role> {
    req.extensions().get::<Target>().map(|t| t.role)
}

/// The caller's role in `target` (already known to be inside the caller's reach): admins act
/// on their account and its descendants, plain users on their own account only.
pub fn role_in(caller: &Caller, target: &AccountId) -> Option<Role> {
    match (caller.admin, &caller.account == target) {
        (true, _) => Some(Role::Admin),
        (false, true) => Some(Role::User),
        (false, false) => None,
    }
}

/// Whether `caller`, with `role` in the path's account, passes `access`. `user_id` is the
/// path's `{user_id}`, if any.
pub fn allows(access: Access, caller: &Caller, role: Option<Role>, user_id: Option<&str>) -> bool {
    match access {
        Access::Public | Access::AnyToken => true,
        Access::OwnAccountAdmin => caller.admin,
        Access::SystemAdmin => caller.superduper && caller.admin,
        Access::Member => role.is_some(),
        Access::Admin => role == Some(Role::Admin),
        Access::SelfOrAdmin => match role {
            Some(Role::Admin) => true,
            Some(Role::User) => user_id.is_some() && caller.owner_id() == user_id,
            None => false,
        },
    }
}

/// The middleware on every resource: authenticates (401), resolves the path's account (404
/// for a malformed or missing one, 403 outside the caller's tree) and checks the role table
/// (403), all before the handler reads the body. A verb the resource does not serve passes
/// through to its 405.
/// `rules` are the resource's, made when it was mounted (its path is not matched again here).
pub async fn guard(
    rules: std::rc::Rc<Rules>,
    mut req: ServiceRequest,
    next: Next<BoxBody>,
) -> Result<ServiceResponse<BoxBody>, actix_web::Error> {
    let Some((access, reads)) = rules.of(req.method()) else {
        return next.call(req).await;
    };
    if access == Access::Public {
        return next.call(req).await;
    }
    match authorize(&mut req, access, reads).await {
        Ok(()) => next.call(req).await,
        Err(e) => Ok(req.error_response(e)),
    }
}

/// How a request reads the documents it is authenticated with: reads and the fax routes
/// (which never save an account or user document) use the authentication cache; any other
/// write reads them fresh, so its handler saves from their current revision.
fn reads_for(method: &Method, pattern: &str) -> Reads {
    let segs: Vec<&str> = pattern.trim_matches('/').split('/').collect();
    let fax_route = segs.contains(&"faxes");
    if *method == Method::GET || *method == Method::HEAD || fax_route {
        Reads::Cached
    } else {
        Reads::Fresh
    }
}

async fn authorize(req: &mut ServiceRequest, access: Access, reads: Reads) -> Result<(), ApiError> {
    let state = req
        .app_data::<web::Data<ApiState>>()
        .cloned()
        .ok_or_else(|| ApiError::Fault("API state missing".into()))?;
    let token = match request::token_of(req.request(), None) {
        Some(t) => t,
        None => token_in_body(req, &state)
            .await?
            .ok_or(ApiError::InvalidCredentials)?,
    };
    let caller = request::check_token_with(&state, &token, reads).await?;
    req.extensions_mut()
        .insert(super::envelope::AuthToken(token));
    req.extensions_mut().insert(caller.clone());
    // Charged to the token's account, before any store read for the path.
    state.rate_limits.charge_account(&caller.account)?;
    let target = match req.match_info().get("account_id") {
        Some(_) => {
            let (id, doc) = request::resolve_account(req.request(), &state, &caller, reads).await?;
            let role = role_in(&caller, &id);
            Some((id, doc, role))
        }
        None => None,
    };
    let role = target.as_ref().and_then(|t| t.2);
    let user_id = req.match_info().get("user_id").map(str::to_string);
    if !allows(access, &caller, role, user_id.as_deref()) {
        return Err(ApiError::Forbidden);
    }
    if let Some((id, doc, Some(role))) = target {
        req.extensions_mut().insert(Target { id, doc, role });
    }
    Ok(())
}

/// The `auth_token` of a JSON envelope body, for clients that send the token there. The body
/// is read like a handler reads it (within the JSON cap and the body deadline) and put back
/// for the handler; a body that is not JSON, or over the cap, carries no token.
async fn token_in_body(
    req: &mut ServiceRequest,
    state: &ApiState,
) -> Result<Option<String>, ApiError> {
    if !request::is_json(&request::media_type(req.request())) {
        return Ok(None);
    }
    let payload = req.take_payload();
    // Too large or malformed: no token can be read from it, so the caller is not
    // authenticated (401 comes before any statement about the body). A stalled body is 408.
    let body = match request::read_body(
        req.request(),
        payload,
        state.options.max_body_bytes,
        state.body_timeout(),
    )
    .await
    {
        Ok(body) => body,
        Err(e @ ApiError::BodyTimeout(_)) => return Err(e),
        Err(_) => return Ok(None),
    };
    let token = request::parse_envelope(&body)
        .ok()
        .and_then(|env| {
            env.keys
                .get("auth_token")
                .and_then(Value::as_str)
                .map(str::to_string)
        })
        .filter(|t| !t.is_empty());
    req.set_payload(actix_web::dev::Payload::from(body));
    Ok(token)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_users_act_only_in_their_own_account() {
        let claims = crate::api::token::new_claims(
            "0123456789abcdef0123456789abcdef",
            Some("u1"),
            "cb_user_auth",
            60,
        );
        let me = AccountId::parse("0123456789abcdef0123456789abcdef").unwrap();
        let child = AccountId::parse("fedcba9876543210fedcba9876543210").unwrap();
        let as_caller = |admin| {
            Caller::from(crate::api::request::Verified {
                token: String::new(),
                claims: claims.clone(),
                account: me.clone(),
                account_doc: Arc::new(Value::Null),
                superduper: true,
                admin,
            })
        };
        let caller = as_caller(false);
        assert_eq!(role_in(&caller, &me), Some(Role::User));
        assert_eq!(role_in(&caller, &child), None);
        assert!(!allows(Access::SystemAdmin, &caller, None, None));
        assert!(allows(
            Access::SelfOrAdmin,
            &caller,
            Some(Role::User),
            Some("u1")
        ));
        assert!(!allows(
            Access::SelfOrAdmin,
            &caller,
            Some(Role::User),
            Some("u2")
        ));
        assert!(!allows(Access::Admin, &caller, Some(Role::User), None));
        let caller = as_caller(true);
        assert_eq!(role_in(&caller, &child), Some(Role::Admin));
        assert!(allows(Access::SystemAdmin, &caller, None, None));
    }
}
