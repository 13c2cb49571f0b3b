//! Passwords by email: asking for a link (`POST /api/v1/auth/password/forgot`), the page the
//! link opens (`GET /auth/password?token=…`) and setting the password with it (the page's form,
//! or `POST /api/v1/auth/password/reset` for programs). Invitations by an administrator send
//! the same kind of link ([`send_link`]).
//!
//! The forgot answer is the same whether or not the email has an account, and the mail goes out
//! after the answer, so neither the words nor the time tell. Requests are limited per account
//! and per client address. The page's form carries the one-time token itself, so it needs no
//! cookie and no CSRF token.

use axum::Form;
use axum::Json;
use axum::extract::{Query, Request, State};
use axum::http::StatusCode;
use axum::http::header;
use axum::response::{Html, IntoResponse, Response};
use dataport_auth::{AuthError, PasswordLink, PasswordPurpose};
use dataport_mail::{Delivery, LinkKind, escape, password_message};
use serde::{Deserialize, Serialize};

use crate::auth::{json_body, json_from_client};
use crate::{ApiError, AppState, RequestId};

/// The page a link opens.
pub(crate) const PASSWORD_PAGE: &str = "/auth/password";

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ForgotBody {
    email: String,
}

#[derive(Debug, Serialize)]
pub(crate) struct ForgotAnswer {
    message: &'static str,
}

const FORGOT_ANSWER: &str = "if an account has this email, a link to set its password is on its way; it works once, for one hour";

/// The URL of a link's page under `public_url`.
pub fn password_link_url(public_url: &str, link: &PasswordLink) -> String {
    format!(
        "{}{PASSWORD_PAGE}?token={}",
        public_url.trim_end_matches('/'),
        link.token
    )
}

/// Mails `link` to its account (or logs it when no SMTP server is configured): the one way
/// set-up and reset links leave the server and the command line.
pub async fn send_password_link(
    mailer: &dataport_mail::Mailer,
    public_url: &str,
    link: &PasswordLink,
) -> Result<Delivery, dataport_mail::MailError> {
    let Some(to) = link.account.email.as_deref() else {
        tracing::warn!(user = %link.account.name, "a password link for an account without an email is not sent");
        return Ok(Delivery::Logged);
    };
    let kind = match link.purpose {
        PasswordPurpose::Setup => LinkKind::Setup,
        PasswordPurpose::Reset => LinkKind::Reset,
    };
    let url = password_link_url(public_url, link);
    let message = password_message(kind, to, &link.account.display_name, &url);
    mailer.send(&message).await
}

/// [`send_password_link`] with the server's mailer and address.
pub(crate) async fn send_link(
    state: &AppState,
    link: &PasswordLink,
) -> Result<Delivery, dataport_mail::MailError> {
    send_password_link(&state.mailer, &state.options.public_url, link).await
}

/// `POST /api/v1/auth/password/forgot` with `{"email"}` → 202, the same for every email.
pub(crate) async fn post_forgot(
    State(state): State<AppState>,
    RequestId(id): RequestId,
    request: Request,
) -> Result<(StatusCode, Json<ForgotAnswer>), ApiError> {
    let (address, body): (String, ForgotBody) =
        json_from_client(&state, &id, request, "{\"email\": \"…\"}").await?;
    let accounts = state.accounts.clone();
    let link = tokio::task::spawn_blocking(move || {
        accounts.check_link_request(&body.email, &address)?;
        accounts.password_link(&body.email)
    })
    .await
    .map_err(|e| {
        ApiError::internal(format!("password link task failed: {e}")).with_request_id(&id)
    })?
    .map_err(|e| ApiError::of(&e, &id))?;
    if let Some(link) = link {
        // After the answer: the time of the answer does not tell whether the email exists.
        tokio::spawn(async move {
            if let Err(e) = send_link(&state, &link).await {
                tracing::error!(error = %e, user = %link.account.name, "cannot send a password link");
            }
        });
    }
    Ok((
        StatusCode::ACCEPTED,
        Json(ForgotAnswer {
            message: FORGOT_ANSWER,
        }),
    ))
}

#[derive(Debug, Deserialize)]
pub(crate) struct ResetBody {
    token: String,
    password: String,
}

#[derive(Debug, Serialize)]
pub(crate) struct ResetAnswer {
    user: String,
}

/// Sets the password through a link's token (off the async runtime: Argon2).
async fn reset(state: &AppState, token: String, password: String) -> Result<String, AuthError> {
    let accounts = state.accounts.clone();
    tokio::task::spawn_blocking(move || accounts.set_password_with_link(&token, &password))
        .await
        .map_err(|e| AuthError::Internal {
            message: format!("password task failed: {e}"),
        })?
        .map(|account| account.name)
}

/// `POST /api/v1/auth/password/reset` with `{"token", "password"}` → `{"user"}`.
pub(crate) async fn post_reset(
    State(state): State<AppState>,
    RequestId(id): RequestId,
    body: Result<Json<ResetBody>, axum::extract::rejection::JsonRejection>,
) -> Result<Json<ResetAnswer>, ApiError> {
    let body = json_body(&state, &id, body, "{\"token\": \"…\", \"password\": \"…\"}")?;
    let user = reset(&state, body.token, body.password)
        .await
        .map_err(|e| ApiError::of(&e, &id))?;
    Ok(Json(ResetAnswer { user }))
}

#[derive(Debug, Deserialize)]
pub(crate) struct PageQuery {
    #[serde(default)]
    token: String,
}

/// `GET /auth/password?token=…`: the form to choose a password.
pub(crate) async fn get_page(Query(query): Query<PageQuery>) -> Response {
    page(StatusCode::OK, &form(&query.token, None))
}

#[derive(Debug, Deserialize)]
pub(crate) struct PageForm {
    #[serde(default)]
    token: String,
    #[serde(default)]
    password: String,
    #[serde(default)]
    confirm: String,
}

/// `POST /auth/password` (the page's form).
pub(crate) async fn post_page(
    State(state): State<AppState>,
    Form(form_data): Form<PageForm>,
) -> Response {
    if form_data.password != form_data.confirm {
        return page(
            StatusCode::BAD_REQUEST,
            &form(&form_data.token, Some("The two passwords differ.")),
        );
    }
    match reset(&state, form_data.token.clone(), form_data.password).await {
        Ok(user) => page(
            StatusCode::OK,
            &format!(
                "<h1>Your password is set</h1><p>Sign in as <b>{}</b> or with your email.</p>",
                escape(&user)
            ),
        ),
        Err(e @ AuthError::WeakPassword { .. }) => page(
            StatusCode::BAD_REQUEST,
            &form(&form_data.token, Some(&e.to_string())),
        ),
        Err(AuthError::Internal { message }) => {
            tracing::error!(error = %message, "setting a password through a link failed");
            page(
                StatusCode::INTERNAL_SERVER_ERROR,
                "<h1>Something went wrong</h1><p>Try the link again later.</p>",
            )
        }
        Err(e) => page(
            StatusCode::BAD_REQUEST,
            &format!(
                "<h1>This link does not work</h1><p>{}</p>",
                escape(&e.to_string())
            ),
        ),
    }
}

fn form(token: &str, problem: Option<&str>) -> String {
    let problem = problem
        .map(|p| format!("<p class=\"problem\" role=\"alert\">{}</p>", escape(p)))
        .unwrap_or_default();
    format!(
        "<h1>Choose your password</h1>{problem}\
         <form method=\"post\" action=\"{PASSWORD_PAGE}\">\
         <input type=\"hidden\" name=\"token\" value=\"{}\">\
         <label>New password <input type=\"password\" name=\"password\" autocomplete=\"new-password\" required minlength=\"8\"></label>\
         <label>Repeat it <input type=\"password\" name=\"confirm\" autocomplete=\"new-password\" required minlength=\"8\"></label>\
         <p class=\"hint\">At least 8 characters, with an upper-case letter, a lower-case letter and a digit.</p>\
         <button type=\"submit\">Set password</button></form>",
        escape(token)
    )
}

fn page(status: StatusCode, body: &str) -> Response {
    let html = format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <meta name=\"referrer\" content=\"no-referrer\"><title>Dataport password</title><style>\
         body{{font-family:system-ui,sans-serif;background:#f5f7fa;color:#1f2933;margin:0}}\
         main{{max-width:26rem;margin:4rem auto;background:#fff;padding:2rem;border-radius:10px;box-shadow:0 1px 4px #0002}}\
         h1{{font-size:1.3rem;margin-top:0}} label{{display:block;margin:1rem 0 .3rem}}\
         input[type=password]{{display:block;width:100%;padding:.5rem;margin-top:.3rem;box-sizing:border-box;border:1px solid #cbd2d9;border-radius:6px}}\
         button{{margin-top:1rem;padding:.6rem 1.2rem;background:#1d4ed8;color:#fff;border:0;border-radius:6px;font-size:1rem}}\
         .hint{{color:#52606d;font-size:.9rem}} .problem{{color:#b91c1c}}\
         </style></head><body><main>{body}</main></body></html>"
    );
    (
        status,
        [
            (header::CACHE_CONTROL, "no-store"),
            (header::X_FRAME_OPTIONS, "DENY"),
            (
                header::CONTENT_SECURITY_POLICY,
                "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; frame-ancestors 'none'",
            ),
        ],
        Html(html),
    )
        .into_response()
}
