//! Assistants (`GET /assistants`): connect an AI assistant over MCP. A form makes an
//! assistant's token (scope `assistant`: good only at `/mcp`, reading data as its owner),
//! shown once with ready-to-paste configurations of common MCP clients; clients that sign in
//! with OAuth need only the URL. Below, my assistant tokens (those made here and those issued
//! through OAuth) with their last use, each revocable.

use askama::Template;
use axum::extract::{Path, Request, State};
use axum::http::StatusCode;
use axum::response::Response;
use dataport_auth::{ASSISTANT_SCOPE, ApiTokenRecord, AuthError, NewApiToken};
use serde::{Deserialize, Serialize};

use super::{
    Chrome, CsrfForm, PostedForm, Viewer, ago, read_form, respond, see_other_with_flash, when,
};
use crate::tokens::{DEFAULT_TOKEN_DAYS, MAX_TOKEN_DAYS, create_scoped_token, my_tokens};
use crate::{ApiError, AppState, RequestId};

/// Stands for the token in the configurations until one is made.
const TOKEN_PLACEHOLDER: &str = "YOUR_ASSISTANT_TOKEN";
/// The MCP server's name in the clients' configurations.
const SERVER_NAME: &str = "dataport";

#[derive(Debug, Serialize)]
pub(crate) struct AssistantTokenLine {
    pub(crate) id: String,
    pub(crate) label: String,
    pub(crate) created_at: i64,
    pub(crate) expires_at: Option<i64>,
    pub(crate) last_used_at: Option<i64>,
    pub(crate) created: String,
    pub(crate) expires: String,
    pub(crate) last_used: String,
}

/// One MCP client's configuration, ready to paste.
#[derive(Debug, Serialize)]
pub(crate) struct ClientConfig {
    /// A stable id (`claude-code`, `stdio`, `cursor`, `vscode`, `oauth`).
    pub(crate) id: &'static str,
    pub(crate) client: &'static str,
    /// Where it goes (a command line, a file).
    pub(crate) place: String,
    pub(crate) text: String,
    /// Whether it carries the token.
    pub(crate) with_token: bool,
}

/// What the page shows (and its JSON twin answers).
#[derive(Debug, Serialize)]
pub(crate) struct AssistantsData {
    /// The MCP endpoint.
    pub(crate) mcp_url: String,
    /// This server, for `dataport login --server`.
    pub(crate) server_url: String,
    /// The configurations, with the token placeholder (the new token after creating one).
    pub(crate) configs: Vec<ClientConfig>,
    /// My assistant tokens that still work, newest first.
    pub(crate) tokens: Vec<AssistantTokenLine>,
    pub(crate) default_days: u32,
    pub(crate) max_days: u32,
}

#[derive(Template)]
#[template(path = "assistants.html")]
struct AssistantsPage<'a> {
    chrome: Chrome,
    data: &'a AssistantsData,
    new_token: Option<NewTokenView>,
    problem: Option<String>,
    draft_name: String,
}

struct NewTokenView {
    label: String,
    token: String,
}

/// `principal`'s assistant tokens that still work.
fn assistant_tokens(state: &AppState, viewer: &Viewer) -> Result<Vec<ApiTokenRecord>, AuthError> {
    Ok(my_tokens(state, &viewer.principal)?
        .into_iter()
        .filter(|t| t.scope.as_deref() == Some(ASSISTANT_SCOPE))
        .collect())
}

/// The configurations of common MCP clients for `mcp_url`, with `token` (or the placeholder).
fn configs(mcp_url: &str, server_url: &str, token: Option<&str>) -> Vec<ClientConfig> {
    let token = token.unwrap_or(TOKEN_PLACEHOLDER);
    let bearer = format!("Bearer {token}");
    // JSON strings, written by hand around them so that the keys keep the order people read
    // in the clients' documentation.
    let (url, auth) = (json_string(mcp_url), json_string(&bearer));
    vec![
        ClientConfig {
            id: "claude-code",
            client: "Claude Code",
            place: "in a terminal".into(),
            text: format!(
                "claude mcp add --transport http {SERVER_NAME} {mcp_url} --header \"Authorization: {bearer}\""
            ),
            with_token: true,
        },
        ClientConfig {
            id: "cursor",
            client: "Cursor",
            place: "~/.cursor/mcp.json".into(),
            text: format!(
                "{{\n  \"mcpServers\": {{\n    \"{SERVER_NAME}\": {{\n      \"url\": {url},\n      \"headers\": {{ \"Authorization\": {auth} }}\n    }}\n  }}\n}}"
            ),
            with_token: true,
        },
        ClientConfig {
            id: "vscode",
            client: "VS Code",
            place: ".vscode/mcp.json".into(),
            text: format!(
                "{{\n  \"servers\": {{\n    \"{SERVER_NAME}\": {{\n      \"type\": \"http\",\n      \"url\": {url},\n      \"headers\": {{ \"Authorization\": {auth} }}\n    }}\n  }}\n}}"
            ),
            with_token: true,
        },
        ClientConfig {
            id: "stdio",
            client: "Claude Desktop, or any client that starts a local server",
            place: format!("its MCP configuration, after dataport login --server {server_url}"),
            text: format!(
                "{{\n  \"mcpServers\": {{\n    \"{SERVER_NAME}\": {{\n      \"command\": \"dataport\",\n      \"args\": [\"mcp\"]\n    }}\n  }}\n}}"
            ),
            with_token: false,
        },
        ClientConfig {
            id: "oauth",
            client: "Clients that sign in with OAuth",
            place: "as the server's URL".into(),
            text: mcp_url.to_string(),
            with_token: false,
        },
    ]
}

/// `text` as a JSON string (quoted and escaped).
fn json_string(text: &str) -> String {
    serde_json::Value::String(text.to_string()).to_string()
}

fn page_data(
    state: &AppState,
    viewer: &Viewer,
    request_id: &str,
    token: Option<&str>,
) -> Result<AssistantsData, ApiError> {
    let now = dataport_auth::now_secs();
    let mcp_url = crate::oauth::mcp_url(state);
    let server_url = state.options.public_url.trim_end_matches('/').to_string();
    let tokens = assistant_tokens(state, viewer)
        .map_err(|e| ApiError::of(&e, request_id))?
        .into_iter()
        .map(|t| AssistantTokenLine {
            created: when(t.created_at),
            expires: t.expires_at.map_or("never".into(), when),
            last_used: t.last_used_at.map_or("never".into(), |at| ago(at, now)),
            id: t.id,
            label: t.label,
            created_at: t.created_at,
            expires_at: t.expires_at,
            last_used_at: t.last_used_at,
        })
        .collect();
    Ok(AssistantsData {
        configs: configs(&mcp_url, &server_url, token),
        mcp_url,
        server_url,
        tokens,
        default_days: DEFAULT_TOKEN_DAYS,
        max_days: MAX_TOKEN_DAYS,
    })
}

/// What a render adds to the page's data.
#[derive(Default)]
struct Extra {
    new_token: Option<(String, NewApiToken)>,
    problem: Option<String>,
    draft_name: String,
}

fn render(
    state: &AppState,
    viewer: &Viewer,
    request_id: &str,
    status: StatusCode,
    extra: Extra,
) -> Response {
    let token = extra.new_token.as_ref().map(|(_, t)| t.token.as_str());
    let data = match page_data(state, viewer, request_id, token) {
        Ok(data) => data,
        Err(e) => return axum::response::IntoResponse::into_response(e),
    };
    let page = AssistantsPage {
        chrome: Chrome::new(state, viewer, "/assistants"),
        data: &data,
        new_token: extra.new_token.map(|(label, t)| NewTokenView {
            label,
            token: t.token,
        }),
        problem: extra.problem,
        draft_name: extra.draft_name,
    };
    respond(viewer, status, &data, &page)
}

/// `GET /assistants`.
pub(crate) async fn get_assistants(
    State(state): State<AppState>,
    RequestId(id): RequestId,
    viewer: Viewer,
) -> Response {
    render(&state, &viewer, &id, StatusCode::OK, Extra::default())
}

#[derive(Debug, Deserialize)]
pub(crate) struct AssistantForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    name: String,
    #[serde(default)]
    days: Option<u32>,
}

impl PostedForm for AssistantForm {
    fn csrf(&self) -> &str {
        &self.csrf
    }
}

/// `POST /assistants` (name, days): a new assistant token, shown on the page once with the
/// configurations that carry it.
pub(crate) async fn post_assistant(
    State(state): State<AppState>,
    RequestId(id): RequestId,
    viewer: Viewer,
    request: Request,
) -> Response {
    let form: AssistantForm = match read_form(&state, &viewer, request).await {
        Ok(form) => form,
        Err((status, problem)) => {
            let extra = Extra {
                problem: Some(problem),
                ..Extra::default()
            };
            return render(&state, &viewer, &id, status, extra);
        }
    };
    match create_scoped_token(
        &state,
        &viewer.principal,
        &form.name,
        form.days,
        Some(ASSISTANT_SCOPE),
    ) {
        Ok(created) => {
            tracing::info!(request_id = %id, user = %viewer.principal.name, token_id = %created.id, "assistant token created in the portal");
            let extra = Extra {
                new_token: Some((form.name.trim().to_string(), created)),
                ..Extra::default()
            };
            render(&state, &viewer, &id, StatusCode::CREATED, extra)
        }
        Err(e) => {
            let status = crate::error::status_for(dataport_common::HasKind::kind(&e));
            let extra = Extra {
                problem: Some(e.to_string()),
                draft_name: form.name,
                ..Extra::default()
            };
            render(&state, &viewer, &id, status, extra)
        }
    }
}

/// `POST /assistants/{id}/revoke`: one of my assistant tokens stops working at once.
pub(crate) async fn post_assistant_revoke(
    State(state): State<AppState>,
    RequestId(id): RequestId,
    viewer: Viewer,
    Path(token): Path<String>,
    request: Request,
) -> Response {
    let problem = |status: StatusCode, message: String| {
        let extra = Extra {
            problem: Some(message),
            ..Extra::default()
        };
        render(&state, &viewer, &id, status, extra)
    };
    if let Err((status, message)) = read_form::<CsrfForm>(&state, &viewer, request).await {
        return problem(status, message);
    }
    let mine = match assistant_tokens(&state, &viewer) {
        Ok(tokens) => tokens.into_iter().find(|t| t.id == token),
        Err(e) => {
            return problem(
                crate::error::status_for(dataport_common::HasKind::kind(&e)),
                e.to_string(),
            );
        }
    };
    let Some(found) = mine else {
        return problem(
            StatusCode::NOT_FOUND,
            "You have no working assistant token by that id.".into(),
        );
    };
    match state
        .accounts
        .revoke_own_api_token(viewer.principal.id, &found.id)
    {
        Ok(()) => {
            tracing::info!(request_id = %id, user = %viewer.principal.name, token_id = %found.id, "assistant token revoked in the portal");
            see_other_with_flash(
                &state,
                "/assistants",
                &format!("“{}” is revoked: it no longer works.", found.label),
            )
        }
        Err(e) => problem(
            crate::error::status_for(dataport_common::HasKind::kind(&e)),
            e.to_string(),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn configurations_carry_the_url_and_the_token() {
        let url = "https://data.example/mcp";
        let with = configs(url, "https://data.example", Some("dpk_a_b"));
        let ids: Vec<_> = with.iter().map(|c| c.id).collect();
        assert_eq!(ids, ["claude-code", "cursor", "vscode", "stdio", "oauth"]);
        for c in &with {
            assert_eq!(c.text.contains("dpk_a_b"), c.with_token, "{}", c.id);
            if c.id != "stdio" {
                assert!(c.text.contains(url), "{}", c.id);
            }
        }
        assert_eq!(
            with[0].text,
            "claude mcp add --transport http dataport https://data.example/mcp --header \"Authorization: Bearer dpk_a_b\""
        );
        let cursor: serde_json::Value = serde_json::from_str(&with[1].text).unwrap();
        assert_eq!(cursor["mcpServers"]["dataport"]["url"], url);
        assert_eq!(
            cursor["mcpServers"]["dataport"]["headers"]["Authorization"],
            "Bearer dpk_a_b"
        );
        let vscode: serde_json::Value = serde_json::from_str(&with[2].text).unwrap();
        assert_eq!(vscode["servers"]["dataport"]["type"], "http");
        let stdio: serde_json::Value = serde_json::from_str(&with[3].text).unwrap();
        assert_eq!(stdio["mcpServers"]["dataport"]["args"][0], "mcp");
        assert!(
            with[3]
                .place
                .contains("dataport login --server https://data.example")
        );
        let without = configs(url, "https://data.example", None);
        assert!(without[0].text.contains(TOKEN_PLACEHOLDER));
    }
}
