//! Passwords by email: asking for a link (`POST /api/v1/auth/password/forgot`), the page the
//! link opens (`GET /auth/password?token=…`) and setting the password with it (the page's form,
//! or `POST /api/v1/auth/password/reset` for programs). Without a token the page asks for an
//! email and mails a link, like the API. Invitations by an administrator send the same kind of
//! link ([`send_link`]); an email of `auth.password_emails` registers this way.
//!
//! The forgot answer is the same whether or not the email has an account, and the mail goes out
//! after the answer, so neither the words nor the time tell. Requests are limited per account
//! and per client address. The page's form carries the one-time token itself, so it needs no
//! cookie and no CSRF token.

use axum::Form;
use axum::Json;
use axum::extract::{FromRequest, Query, Request, State};
use axum::http::StatusCode;
use axum::response::Response;
use dataport_auth::{AuthError, PasswordLink, PasswordPurpose};
use dataport_mail::{Delivery, LinkKind, escape, password_message};
use serde::{Deserialize, Serialize};

use crate::auth::{client_ip, json_body, json_from_client, peer_of};
use crate::pages::{FormTarget, page, problem};
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

/// Counts the request (per account and per address) and, for an account (or an email that may
/// register), mails a link after returning: the time of the answer does not tell whether the
/// email exists.
async fn request_link(state: &AppState, email: String, address: String) -> Result<(), AuthError> {
    let accounts = state.accounts.clone();
    let link = tokio::task::spawn_blocking(move || {
        accounts.check_link_request(&email, &address)?;
        accounts.password_link(&email)
    })
    .await
    .map_err(|e| AuthError::Internal {
        message: format!("password link task failed: {e}"),
    })??;
    if let Some(link) = link {
        let state = state.clone();
        tokio::spawn(async move {
            if let Err(e) = send_link(&state, &link).await {
                tracing::error!(error = %e, user = %link.account.name, "cannot send a password link");
            }
        });
    }
    Ok(())
}

/// `POST /api/v1/auth/password/forgot` with `{"email"}` → 202, the same for every email.
pub(crate) async fn post_forgot(
    State(state): State<AppState>,
    RequestId(id): RequestId,
    request: Request,
) -> Result<(StatusCode, Json<ForgotAnswer>), ApiError> {
    let (address, body): (String, ForgotBody) =
        json_from_client(&state, &id, request, "{\"email\": \"…\"}").await?;
    request_link(&state, body.email, address)
        .await
        .map_err(|e| ApiError::of(&e, &id))?;
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

/// `GET /auth/password?token=…`: the form to choose a password; without a token, the form to
/// ask for a link by email (a forgotten password, or registering an allowed outside email).
pub(crate) async fn get_page(
    State(state): State<AppState>,
    Query(query): Query<PageQuery>,
) -> Response {
    if query.token.trim().is_empty() {
        return show(&state, StatusCode::OK, &email_form(None));
    }
    show(&state, StatusCode::OK, &form(&query.token, None))
}

#[derive(Debug, Deserialize)]
pub(crate) struct PageForm {
    #[serde(default)]
    token: String,
    #[serde(default)]
    password: String,
    #[serde(default)]
    confirm: String,
    /// The email form (no token).
    #[serde(default)]
    email: Option<String>,
}

/// `POST /auth/password` (the page's forms).
pub(crate) async fn post_page(State(state): State<AppState>, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    let address = client_ip(&state, &parts.headers, peer_of(&parts.extensions));
    let request = Request::from_parts(parts, body);
    let Ok(Form(form_data)) = Form::<PageForm>::from_request(request, &state).await else {
        return show(
            &state,
            StatusCode::BAD_REQUEST,
            &email_form(Some("The form could not be read; try again.")),
        );
    };
    if let Some(email) = form_data.email {
        return match request_link(&state, email, address).await {
            Ok(()) => show(
                &state,
                StatusCode::OK,
                &format!(
                    "<h1>Check your mail</h1><p>{}</p><p><a href=\"/login\">Back to sign-in</a></p>",
                    escape(FORGOT_ANSWER)
                ),
            ),
            Err(e @ AuthError::TooManyAttempts { .. }) => show(
                &state,
                StatusCode::TOO_MANY_REQUESTS,
                &email_form(Some(&e.to_string())),
            ),
            Err(e) => {
                tracing::error!(error = %e, "a password link request failed");
                show(
                    &state,
                    StatusCode::INTERNAL_SERVER_ERROR,
                    &email_form(Some("Something went wrong; try again later.")),
                )
            }
        };
    }
    if form_data.password != form_data.confirm {
        return show(
            &state,
            StatusCode::BAD_REQUEST,
            &form(&form_data.token, Some("The two passwords differ.")),
        );
    }
    match reset(&state, form_data.token.clone(), form_data.password).await {
        Ok(user) => show(
            &state,
            StatusCode::OK,
            &format!(
                "<h1>Your password is set</h1><p>Sign in as <b>{}</b> or with your email.</p>\
                 <p><a class=\"button\" href=\"/login\">Sign in</a></p>",
                escape(&user)
            ),
        ),
        Err(e @ AuthError::WeakPassword { .. }) => show(
            &state,
            StatusCode::BAD_REQUEST,
            &form(&form_data.token, Some(&e.to_string())),
        ),
        Err(AuthError::Internal { message }) => {
            tracing::error!(error = %message, "setting a password through a link failed");
            show(
                &state,
                StatusCode::INTERNAL_SERVER_ERROR,
                "<h1>Something went wrong</h1><p>Try the link again later.</p>",
            )
        }
        Err(e) => show(
            &state,
            StatusCode::BAD_REQUEST,
            &format!(
                "<h1>This link does not work</h1><p>{}</p>\
                 <p><a href=\"{PASSWORD_PAGE}\">Ask for a new link</a></p>",
                escape(&e.to_string())
            ),
        ),
    }
}

fn form(token: &str, trouble: Option<&str>) -> String {
    format!(
        "<h1>Choose your password</h1>{}\
         <form method=\"post\" action=\"{PASSWORD_PAGE}\">\
         <input type=\"hidden\" name=\"token\" value=\"{}\">\
         <label>New password <input type=\"password\" name=\"password\" autocomplete=\"new-password\" required minlength=\"8\"></label>\
         <label>Repeat it <input type=\"password\" name=\"confirm\" autocomplete=\"new-password\" required minlength=\"8\"></label>\
         <p class=\"hint\">At least 8 characters, with an upper-case letter, a lower-case letter and a digit.</p>\
         <button type=\"submit\">Set password</button></form>",
        problem(trouble),
        escape(token)
    )
}

fn email_form(trouble: Option<&str>) -> String {
    format!(
        "<h1>Set or reset your password</h1>{}\
         <p>Enter your email: if it has an account here, or may register, a link to choose a \
         password is mailed to it. The link works once, for one hour.</p>\
         <form method=\"post\" action=\"{PASSWORD_PAGE}\">\
         <label>Email <input type=\"email\" name=\"email\" autocomplete=\"email\" required></label>\
         <button type=\"submit\">Mail me a link</button></form>\
         <p class=\"hint\"><a href=\"/login\">Back to sign-in</a></p>",
        problem(trouble)
    )
}

fn show(state: &AppState, status: StatusCode, body: &str) -> Response {
    page(state, status, "Password", body, FormTarget::SelfOnly)
}
