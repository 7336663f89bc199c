//! Who may write: whoever presents the controller's API token, as a bearer
//! token or as the password of HTTP Basic auth (any user name), the form
//! registry clients such as skopeo (`--dest-creds flotilla:$TOKEN`) send.

use axum::http::{HeaderMap, header};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;

use super::error::RegistryError;
use crate::api::constant_time_eq;

/// Checks the request's credentials against `token`.
pub fn authorize(headers: &HeaderMap, token: &str) -> Result<(), RegistryError> {
    let Some(value) = headers.get(header::AUTHORIZATION) else {
        return Err(RegistryError::Unauthorized(
            "pushing and deleting need the controller's API token: `Authorization: Bearer <token>`, or Basic \
             auth with any user name and the token as password",
        ));
    };
    match value.to_str().ok().and_then(presented_token) {
        Some(presented) if constant_time_eq(presented.as_bytes(), token.as_bytes()) => Ok(()),
        _ => Err(RegistryError::Unauthorized("the credentials are wrong: the password must be the API token")),
    }
}

/// The token in an `Authorization` value: `Bearer <token>` or `Basic
/// base64(<user>:<token>)`.
fn presented_token(value: &str) -> Option<String> {
    let (scheme, credentials) = value.trim().split_once(' ')?;
    let credentials = credentials.trim();
    if scheme.eq_ignore_ascii_case("bearer") {
        return Some(credentials.to_owned());
    }
    if scheme.eq_ignore_ascii_case("basic") {
        let decoded = String::from_utf8(BASE64.decode(credentials).ok()?).ok()?;
        let (_user, password) = decoded.split_once(':')?;
        return Some(password.to_owned());
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_authorization(value: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(header::AUTHORIZATION, value.parse().unwrap());
        headers
    }

    #[test]
    fn bearer_and_basic_with_the_token_as_password_are_accepted() {
        assert!(authorize(&with_authorization("Bearer s3cret"), "s3cret").is_ok());
        let basic = format!("Basic {}", BASE64.encode("anyone:s3cret"));
        assert!(authorize(&with_authorization(&basic), "s3cret").is_ok());
    }

    #[test]
    fn missing_wrong_or_malformed_credentials_are_refused() {
        assert!(authorize(&HeaderMap::new(), "s3cret").is_err());
        assert!(authorize(&with_authorization("Bearer wrong"), "s3cret").is_err());
        let token_as_user = format!("Basic {}", BASE64.encode("s3cret:"));
        assert!(authorize(&with_authorization(&token_as_user), "s3cret").is_err());
        assert!(authorize(&with_authorization("Basic !!!"), "s3cret").is_err());
        assert!(authorize(&with_authorization("Digest s3cret"), "s3cret").is_err());
    }
}
