//! Microsoft Entra ID (Azure AD) access tokens for Azure OpenAI, without I/O: where a
//! managed identity's token comes from (the instance metadata service) and what a client
//! credentials grant posts, as lua-resty-azure and Azure's SDKs ask for them. The fetching
//! and caching live in `net::cloud_token`.

/// The audience Azure OpenAI (Cognitive Services) accepts Entra tokens for.
pub const RESOURCE: &str = "https://cognitiveservices.azure.com";
/// The client credentials grant's scope: the resource's default permissions.
pub const SCOPE: &str = "https://cognitiveservices.azure.com/.default";
/// Entra's public-cloud authority, used unless `AZURE_AUTHORITY_HOST` names another.
pub const DEFAULT_AUTHORITY_HOST: &str = "https://login.microsoftonline.com";
/// The instance metadata service, used unless `AZURE_POD_IDENTITY_AUTHORITY_HOST` names
/// another.
pub const DEFAULT_IMDS_HOST: &str = "http://169.254.169.254";
/// The IMDS API version lua-resty-azure and the SDKs use for tokens.
pub const IMDS_API_VERSION: &str = "2018-02-01";
/// The environment variable Azure's SDKs read for another Entra authority (sovereign
/// clouds, or a test double).
pub const AUTHORITY_HOST_ENV: &str = "AZURE_AUTHORITY_HOST";
/// The environment variable azure-identity reads for another metadata endpoint.
pub const IMDS_HOST_ENV: &str = "AZURE_POD_IDENTITY_AUTHORITY_HOST";

/// A host setting (`AZURE_AUTHORITY_HOST`, `AZURE_POD_IDENTITY_AUTHORITY_HOST`) as a base
/// URL without a trailing slash; Azure's SDKs take a bare host name as https.
pub fn base_url(host: &str) -> Result<String, String> {
    let raw = host.trim();
    let (scheme, rest) = match raw.split_once("://") {
        Some((s @ ("http" | "https"), rest)) => (s, rest),
        Some(_) => return Err(format!("'{raw}' is not an http(s) URL")),
        None => ("https", raw),
    };
    let rest = rest.trim_end_matches('/');
    if rest.is_empty() || rest.contains('/') {
        return Err(format!("'{raw}' must be a scheme and host, without a path"));
    }
    let url = format!("{scheme}://{rest}");
    let uri: http::Uri = url
        .parse()
        .map_err(|_| format!("'{raw}' is not a valid URL"))?;
    let port_ok = uri.port().is_none_or(|p| p.as_str().parse::<u16>().is_ok());
    if uri.host().is_none_or(str::is_empty) || !port_ok || rest.ends_with(':') {
        return Err(format!("'{raw}' is not a valid host"));
    }
    Ok(url)
}

/// The metadata service's token URL for Azure OpenAI, naming a user-assigned identity when
/// `client_id` is given (otherwise the system-assigned one answers).
pub fn imds_token_url(imds_base: &str, client_id: Option<&str>) -> String {
    let mut q = form_urlencoded::Serializer::new(String::new());
    q.append_pair("api-version", IMDS_API_VERSION)
        .append_pair("resource", RESOURCE);
    if let Some(id) = client_id {
        q.append_pair("client_id", id);
    }
    format!(
        "{}/metadata/identity/oauth2/token?{}",
        imds_base.trim_end_matches('/'),
        q.finish()
    )
}

/// Entra's v2 token endpoint for a tenant.
pub fn entra_token_url(authority: &str, tenant_id: &str) -> String {
    format!(
        "{}/{tenant_id}/oauth2/v2.0/token",
        authority.trim_end_matches('/')
    )
}

/// The form body of a client credentials grant for Azure OpenAI.
pub fn client_credentials_body(client_id: &str, client_secret: &str) -> String {
    form_urlencoded::Serializer::new(String::new())
        .append_pair("grant_type", "client_credentials")
        .append_pair("client_id", client_id)
        .append_pair("client_secret", client_secret)
        .append_pair("scope", SCOPE)
        .finish()
}

/// A tenant goes into the token URL's path: a GUID or a domain name such as
/// `contoso.onmicrosoft.com`, nothing that could change the path.
pub fn tenant_id_ok(tenant: &str) -> bool {
    !tenant.is_empty()
        && tenant
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.' || b == b'_')
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    #[test]
    fn token_requests_as_azure_identity_sends_them() {
        assert_eq!(
            imds_token_url(DEFAULT_IMDS_HOST, None),
            "http://169.254.169.254/metadata/identity/oauth2/token?api-version=2018-02-01&resource=https%3A%2F%2Fcognitiveservices.azure.com"
        );
        assert_eq!(
            imds_token_url("http://127.0.0.1:9/", Some("a b")),
            "http://127.0.0.1:9/metadata/identity/oauth2/token?api-version=2018-02-01&resource=https%3A%2F%2Fcognitiveservices.azure.com&client_id=a+b"
        );
        assert_eq!(
            entra_token_url(DEFAULT_AUTHORITY_HOST, "t1"),
            "https://login.microsoftonline.com/t1/oauth2/v2.0/token"
        );
        assert_eq!(
            entra_token_url(&base_url("login.microsoftonline.us/").unwrap(), "t1"),
            "https://login.microsoftonline.us/t1/oauth2/v2.0/token"
        );
        assert_eq!(
            base_url("http://127.0.0.1:9/").unwrap(),
            "http://127.0.0.1:9"
        );
        for bad in [
            "ftp://x",
            "https://x/some/path",
            "https://",
            "https:",
            "a b",
        ] {
            assert!(base_url(bad).is_err(), "{bad}");
        }
        assert_eq!(
            client_credentials_body("app", "s&cret"),
            "grant_type=client_credentials&client_id=app&client_secret=s%26cret&scope=https%3A%2F%2Fcognitiveservices.azure.com%2F.default"
        );
        assert!(tenant_id_ok("contoso.onmicrosoft.com"));
        assert!(tenant_id_ok("72f988bf-86f1-41af-91ab-2d7cd011db47"));
        assert!(!tenant_id_ok("a/../b") && !tenant_id_ok("") && !tenant_id_ok("a?b"));
    }
}
