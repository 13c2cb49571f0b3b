//! The pages a browser needs before the portal: one shell (the instance's brand, the portal's
//! stylesheet, security headers) for the sign-in, password and command-line approval pages, and
//! the checks of the places a page may send the browser to next.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use dataport_mail::escape;

use crate::AppState;

/// Where a form on a page may post to (and be redirected from): this server only, or also a
/// program on the user's own machine (`http://127.0.0.1:*`, the command line's sign-in).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FormTarget {
    SelfOnly,
    AlsoLoopback,
}

/// A page: `body` (already escaped HTML) in the shell — the instance's logo and name, the
/// portal's stylesheet — never cached, never framed, running no script. The referrer policy is
/// `same-origin`, not `no-referrer`: under `no-referrer` Chromium sends `Origin: null` with the
/// forms, and the session's origin check refuses them.
pub(crate) fn page(
    state: &AppState,
    status: StatusCode,
    title: &str,
    body: &str,
    forms: FormTarget,
) -> Response {
    let instance = escape(&state.options.instance_name);
    let logo = state
        .options
        .logo
        .as_ref()
        .map(|l| format!("<img class=\"logo\" src=\"{}\" alt=\"\">", escape(&l.url())))
        .unwrap_or_default();
    let html = format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <meta name=\"referrer\" content=\"same-origin\"><title>{} · {instance}</title>\
         <link rel=\"stylesheet\" href=\"{}\"></head><body><main class=\"shell\">\
         <div class=\"brand\">{logo}<span>{instance}</span></div>{body}</main></body></html>",
        escape(title),
        crate::portal::assets::url("portal.css"),
    );
    let form_action = match forms {
        FormTarget::SelfOnly => "'self'",
        FormTarget::AlsoLoopback => "'self' http://127.0.0.1:*",
    };
    let policy = format!(
        "default-src 'none'; style-src 'self'; img-src 'self'; form-action {form_action}; frame-ancestors 'none'; base-uri 'none'"
    );
    let mut response = (
        status,
        [
            (header::CACHE_CONTROL, "no-store"),
            (header::X_FRAME_OPTIONS, "DENY"),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        ],
        Html(html),
    )
        .into_response();
    if let Ok(value) = HeaderValue::from_str(&policy) {
        response
            .headers_mut()
            .insert(header::CONTENT_SECURITY_POLICY, value);
    }
    response
}

/// A paragraph saying what went wrong, for a form.
pub(crate) fn problem(message: Option<&str>) -> String {
    message
        .map(|p| format!("<p class=\"problem\" role=\"alert\">{}</p>", escape(p)))
        .unwrap_or_default()
}

/// `next` when it is a path on this server (`/…`, not `//host` or `/\host`, no control
/// characters), else `/`: after signing in, the browser never goes to another site.
pub(crate) fn local_path(next: Option<&str>) -> String {
    match next {
        Some(n)
            if n.starts_with('/')
                && !n.starts_with("//")
                && !n.starts_with("/\\")
                && n.len() <= 2048
                && !n.chars().any(|c| c.is_control() || c == '\\') =>
        {
            n.to_string()
        }
        _ => "/".to_string(),
    }
}

/// `303 See Other` to `location` (after a form, or into a sign-in).
pub(crate) fn see_other(location: &str) -> Response {
    match HeaderValue::from_str(location) {
        Ok(value) => {
            let mut response = StatusCode::SEE_OTHER.into_response();
            response.headers_mut().insert(header::LOCATION, value);
            response
                .headers_mut()
                .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
            response
        }
        Err(_) => StatusCode::BAD_REQUEST.into_response(),
    }
}

/// `value` for a URL's query string.
pub(crate) fn query_value(value: &str) -> String {
    url::form_urlencoded::byte_serialize(value.as_bytes()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_local_paths_are_followed() {
        for good in ["/", "/portal/catalog?q=a%20b", "/auth/cli?port=5"] {
            assert_eq!(local_path(Some(good)), good);
        }
        for bad in [
            "https://evil.example/",
            "//evil.example/x",
            "/\\evil.example",
            "/a\\b",
            "/a\nb",
            "javascript:alert(1)",
            "",
        ] {
            assert_eq!(local_path(Some(bad)), "/", "{bad:?}");
        }
        assert_eq!(local_path(None), "/");
    }
}
