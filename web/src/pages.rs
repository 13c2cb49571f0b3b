//! The pages a browser needs before the portal: one shell (stylesheet, security headers) for
//! the sign-in, password and command-line approval pages, and the checks of the places a page
//! may send the browser to next.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use dataport_mail::escape;

/// Where a form on a page may post to (and be redirected from): this server only, or also a
/// program on the user's own machine (`http://127.0.0.1:*`, the command line's sign-in).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FormTarget {
    SelfOnly,
    AlsoLoopback,
}

const STYLE: &str = "\
:root{color-scheme:light dark;--bg:#f5f7fa;--card:#fff;--text:#1f2933;--muted:#52606d;--line:#cbd2d9;--accent:#1d4ed8;--on-accent:#fff;--problem:#b91c1c}\
@media (prefers-color-scheme:dark){:root{--bg:#111827;--card:#1f2937;--text:#e5e7eb;--muted:#9ca3af;--line:#4b5563;--accent:#60a5fa;--on-accent:#0b1220;--problem:#f87171}}\
body{font-family:system-ui,sans-serif;background:var(--bg);color:var(--text);margin:0}\
main{max-width:26rem;margin:4rem auto;background:var(--card);padding:2rem;border-radius:10px;box-shadow:0 1px 4px #0003}\
h1{font-size:1.3rem;margin-top:0} label{display:block;margin:1rem 0 .3rem}\
input[type=password],input[type=text],input[type=email]{display:block;width:100%;padding:.5rem;margin-top:.3rem;box-sizing:border-box;border:1px solid var(--line);border-radius:6px;background:var(--card);color:var(--text)}\
button,.button{font:inherit;display:inline-block;margin-top:1rem;padding:.6rem 1.2rem;background:var(--accent);color:var(--on-accent);border:0;border-radius:6px;font-size:1rem;text-decoration:none;cursor:pointer}\
.provider{display:block;text-align:center;margin:.5rem 0}\
.secondary{background:transparent;color:var(--accent);border:1px solid var(--accent)}\
.or{text-align:center;color:var(--muted);margin:1.2rem 0 0}\
.hint{color:var(--muted);font-size:.9rem} .problem{color:var(--problem)}\
a{color:var(--accent)} :focus-visible{outline:3px solid var(--accent);outline-offset:2px}\
@media (max-width:30rem){main{margin:0;border-radius:0;min-height:100vh}}";

/// A page: `body` (already escaped HTML) in the shell, never cached, never framed. The
/// referrer policy is `same-origin`, not `no-referrer`: under `no-referrer` Chromium sends
/// `Origin: null` with the forms, and the session's origin check refuses them.
pub(crate) fn page(status: StatusCode, title: &str, body: &str, forms: FormTarget) -> Response {
    let html = format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <meta name=\"referrer\" content=\"same-origin\"><title>{} · Dataport</title>\
         <style>{STYLE}</style></head><body><main>{body}</main></body></html>",
        escape(title)
    );
    let form_action = match forms {
        FormTarget::SelfOnly => "'self'",
        FormTarget::AlsoLoopback => "'self' http://127.0.0.1:*",
    };
    let policy = format!(
        "default-src 'none'; style-src 'unsafe-inline'; img-src 'self' https:; form-action {form_action}; frame-ancestors 'none'; base-uri 'none'"
    );
    let mut response = (
        status,
        [
            (header::CACHE_CONTROL, "no-store"),
            (header::X_FRAME_OPTIONS, "DENY"),
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
