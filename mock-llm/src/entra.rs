//! Microsoft Entra ID token endpoints for Azure OpenAI auth: the instance metadata
//! service's managed-identity token (`GET /metadata/identity/oauth2/token`, which needs the
//! `Metadata: true` header) and the client credentials grant
//! (`POST /{tenant}/oauth2/v2.0/token`, checked against [`crate::AZURE_CLIENT_SECRET`]).
//! Tokens are `azure-mock-N`, counted with the other token fetches.

use std::sync::atomic::Ordering;

use http::{HeaderMap, Response, StatusCode};
use serde_json::json;

use crate::body::MockBody;
use crate::server::json_response;
use crate::MockState;

/// The resource (audience) the metadata service is asked for, as Azure OpenAI wants it.
const RESOURCE: &str = "https://cognitiveservices.azure.com";
/// The scope the client credentials grant asks for.
const SCOPE: &str = "https://cognitiveservices.azure.com/.default";

/// The tenant of a `/{tenant}/oauth2/v2.0/token` path.
pub(crate) fn tenant_of(path: &str) -> Option<&str> {
    let tenant = path.strip_prefix('/')?.strip_suffix("/oauth2/v2.0/token")?;
    (!tenant.is_empty() && !tenant.contains('/')).then_some(tenant)
}

fn issue(state: &MockState) -> String {
    let n = state.token_fetches.fetch_add(1, Ordering::Relaxed) + 1;
    let token = format!("azure-mock-{n}");
    state.remember_token(&token);
    token
}

fn param(query: &str, name: &str) -> Option<String> {
    query.split('&').find_map(|p| {
        let (k, v) = p.split_once('=').unwrap_or((p, ""));
        (crate::percent_decode(k) == name).then(|| crate::percent_decode(v))
    })
}

/// `GET /metadata/identity/oauth2/token`: IMDS answers only requests with `Metadata: true`
/// (400 otherwise), for a resource and API version; `client_id` picks a user-assigned
/// identity. Numbers come back as strings, as IMDS sends them.
pub(crate) fn imds_token(
    headers: &HeaderMap,
    query: &str,
    state: &MockState,
) -> Response<MockBody> {
    let bad = |description: &str| {
        json_response(
            StatusCode::BAD_REQUEST,
            &json!({"error": "invalid_request", "error_description": description}),
        )
    };
    if headers.get("metadata").and_then(|v| v.to_str().ok()) != Some("true") {
        return bad("Required metadata header not specified");
    }
    if param(query, "api-version").is_none() {
        return bad("Required query variable 'api-version' is missing");
    }
    match param(query, "resource") {
        Some(r) if r == RESOURCE => {}
        Some(_) => return bad("Invalid resource for this mock"),
        None => return bad("Required query variable 'resource' is missing"),
    }
    let client_id = param(query, "client_id").unwrap_or_else(|| "system-assigned".into());
    let token = issue(state);
    json_response(
        StatusCode::OK,
        &json!({"access_token": token, "client_id": client_id, "expires_in": "86399",
            "expires_on": "1900000000", "ext_expires_in": "86399", "not_before": "1800000000",
            "resource": RESOURCE, "token_type": "Bearer"}),
    )
}

/// `POST /{tenant}/oauth2/v2.0/token`: the client credentials grant for Azure OpenAI's
/// scope. A wrong secret gets Entra's 401 `invalid_client` (which never quotes it).
pub(crate) fn client_credentials(body: &[u8], state: &MockState) -> Response<MockBody> {
    let form = String::from_utf8_lossy(body);
    let field = |name: &str| param(&form, name);
    let error = |status: StatusCode, code: &str, description: &str| {
        json_response(
            status,
            &json!({"error": code, "error_description": description, "error_codes": [0]}),
        )
    };
    if field("grant_type").as_deref() != Some("client_credentials") {
        return error(
            StatusCode::BAD_REQUEST,
            "unsupported_grant_type",
            "AADSTS70003: The app requested an unsupported grant type.",
        );
    }
    let Some(client_id) = field("client_id").filter(|c| !c.is_empty()) else {
        return error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "AADSTS900144: The request body must contain the following parameter: 'client_id'.",
        );
    };
    if field("scope").as_deref() != Some(SCOPE) {
        return error(
            StatusCode::BAD_REQUEST,
            "invalid_scope",
            "AADSTS1002012: The provided value for scope is not valid.",
        );
    }
    if field("client_secret").as_deref() != Some(crate::AZURE_CLIENT_SECRET) {
        return error(
            StatusCode::UNAUTHORIZED,
            "invalid_client",
            &format!("AADSTS7000215: Invalid client secret provided. Ensure the secret being sent in the request is the client secret value, not the client secret ID, for a secret added to app '{client_id}'."),
        );
    }
    let token = issue(state);
    json_response(
        StatusCode::OK,
        &json!({"token_type": "Bearer", "expires_in": 3599, "ext_expires_in": 3599,
            "access_token": token}),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tenant_paths() {
        assert_eq!(tenant_of("/t1/oauth2/v2.0/token"), Some("t1"));
        assert_eq!(tenant_of("/oauth2/v2.0/token"), None);
        assert_eq!(tenant_of("/a/b/oauth2/v2.0/token"), None);
    }
}
