//! Authentication of every call: a tonic interceptor in front of the whole Flight service.
//!
//! Each call must carry `authorization: Basic …` (user name and password, rate limited per
//! account and client address) or `authorization: Bearer …` (the session token from the
//! handshake or login, or an API token). The caller's principal and a request id go into the
//! request's extensions for the service to read.

use dataport_auth::{AuthError, Authenticator, Credentials, Principal, parse_authorization};
use dataport_common::ErrorKind;
use tonic::service::Interceptor;
use tonic::{Request, Status};

/// Who made this call; inserted by [`AuthInterceptor`].
#[derive(Debug, Clone)]
pub(crate) struct Caller {
    pub(crate) principal: Principal,
    pub(crate) request_id: String,
}

#[derive(Debug, Clone)]
pub(crate) struct AuthInterceptor {
    auth: Authenticator,
}

impl AuthInterceptor {
    pub(crate) fn new(auth: Authenticator) -> Self {
        Self { auth }
    }
}

impl Interceptor for AuthInterceptor {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        let request_id = request
            .metadata()
            .get("x-request-id")
            .and_then(|v| v.to_str().ok())
            .filter(|v| !v.is_empty() && v.len() <= 128)
            .map(str::to_owned)
            .unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
        let header = match request.metadata().get("authorization") {
            None => None,
            Some(v) => Some(v.to_str().map_err(|_| {
                crate::error::status(
                    ErrorKind::Unauthenticated,
                    "the authorization header is not valid ASCII",
                )
            })?),
        };
        let address = request
            .remote_addr()
            .map_or_else(|| "unknown".to_string(), |a| a.ip().to_string());
        let credentials = header
            .ok_or(AuthError::Missing)
            .and_then(parse_authorization);
        let claimed = match &credentials {
            Ok(Credentials::Basic { user, .. }) => Some(user.as_str()),
            _ => None,
        };
        let principal = credentials
            .as_ref()
            .map_err(Clone::clone)
            .and_then(|c| self.auth.authenticate(c, &address))
            .map_err(|e| {
                tracing::info!(request_id = %request_id, error = %e, "flight call refused: not authenticated");
                self.auth
                    .record_refusal("flight", &request_id, claimed, &address, &e);
                crate::error::auth_status(&e)
            })?;
        tracing::Span::current().record("user", principal.name.as_str());
        request.extensions_mut().insert(Caller {
            principal,
            request_id,
        });
        Ok(request)
    }
}
