//! Corporate memory over HTTP: the knowledge API of the spec (`/api/corporate-memory/knowledge`,
//! `vote`, `stats`, `my-votes`), an item with its sources, the author's review of held items,
//! admins' moderation, my notes (the portal's editor), stored session transcripts, and the
//! rule files `dataport pull` delivers (`/api/v1/sync/rules`). What a caller may see is the
//! memory crate's rule; these handlers only translate.

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use dataport_auth::Principal;
use dataport_common::ErrorKind;
use dataport_common::sync::RuleFiles;
use dataport_memory::knowledge::{KnowledgeItem, KnowledgePage, MyVote, Review, Stats};
use dataport_memory::service::TranscriptView;
use dataport_memory::{
    ItemDetail, ItemEdit, KnowledgeQuery, Memory, MemoryError, ModerationRequest, MyNotes, Sort,
    Viewer,
};
use serde::{Deserialize, Serialize};

use crate::auth::{Caller, json_body};
use crate::{ApiError, AppState, RequestId};

pub(crate) fn memory(state: &AppState, id: &str) -> Result<Memory, ApiError> {
    state.memory.clone().ok_or_else(|| {
        ApiError::of_kind(
            ErrorKind::Unavailable,
            "corporate memory is not set up on this server",
        )
        .with_request_id(id)
    })
}

/// The reader: an account (the server's own principal has no memory), with the names of
/// the tables and columns it may not read, so items naming them stay hidden.
pub(crate) fn viewer(
    state: &AppState,
    principal: &Principal,
    id: &str,
) -> Result<Viewer, ApiError> {
    if principal.id > 0 {
        Ok(Viewer {
            id: principal.id,
            name: principal.name.clone(),
            admin: principal.admin,
            withheld: withheld(state, principal),
        })
    } else {
        Err(
            ApiError::forbidden("corporate memory belongs to accounts; sign in as one")
                .with_request_id(id),
        )
    }
}

/// What `principal` may not learn of, lower case: each table outside its grants as
/// `schema.table` and `table.`, and the columns it cannot see (of hidden tables, or hidden by
/// a grant) that no table it can read also has.
pub(crate) fn withheld(state: &AppState, principal: &Principal) -> Vec<String> {
    use std::collections::HashSet;
    let view = state
        .engine
        .catalog_view(&crate::request_context(principal, "-"));
    let shown: HashSet<(String, String)> = view
        .tables()
        .map(|t| (t.schema_name().to_string(), t.name().to_string()))
        .collect();
    let mut readable_columns: HashSet<String> = HashSet::new();
    for t in view.tables() {
        for f in view.visible_schema(t).fields() {
            readable_columns.insert(f.name().to_lowercase());
        }
    }
    let mut out = Vec::new();
    for t in view.snapshot().tables() {
        let hidden_table = !shown.contains(&(t.schema_name().to_string(), t.name().to_string()));
        if hidden_table {
            out.push(format!("{}.{}", t.schema_name(), t.name()).to_lowercase());
            out.push(format!("{}.", t.name()).to_lowercase());
        }
        for f in t.arrow_schema().fields() {
            let c = f.name().to_lowercase();
            if c.chars().count() >= 3 && !readable_columns.contains(&c) {
                out.push(c);
            }
        }
    }
    out.sort();
    out.dedup();
    out
}

fn err(e: &MemoryError, id: &str) -> ApiError {
    if let MemoryError::Llm(_) | MemoryError::State(_) | MemoryError::Io { .. } = e {
        tracing::warn!(error = %e, request_id = %id, "corporate memory request failed");
    }
    ApiError::of(e, id)
}

/// Runs `f` on a blocking thread with the memory and the reader.
pub(crate) async fn blocking<T: Send + 'static>(
    state: &AppState,
    principal: &Principal,
    request_id: &str,
    f: impl FnOnce(&Memory, &Viewer) -> Result<T, MemoryError> + Send + 'static,
) -> Result<T, ApiError> {
    let memory = memory(state, request_id)?;
    let viewer = viewer(state, principal, request_id)?;
    let id = request_id.to_string();
    tokio::task::spawn_blocking(move || f(&memory, &viewer))
        .await
        .map_err(|e| ApiError::internal(e).with_request_id(&id))?
        .map_err(|e| err(&e, &id))
}

#[derive(Debug, Deserialize)]
pub(crate) struct KnowledgeParams {
    category: Option<String>,
    search: Option<String>,
    #[serde(default)]
    page: usize,
    per_page: Option<usize>,
    sort: Option<String>,
    #[serde(default)]
    my_rules: bool,
    state: Option<String>,
}

impl KnowledgeParams {
    fn query(self) -> Result<KnowledgeQuery, MemoryError> {
        Ok(KnowledgeQuery {
            category: self.category.filter(|c| !c.is_empty()),
            search: self.search,
            page: self.page,
            per_page: self.per_page,
            sort: self
                .sort
                .filter(|s| !s.is_empty())
                .as_deref()
                .map(Sort::parse)
                .transpose()?,
            my_rules: self.my_rules,
            state: self.state.filter(|s| !s.is_empty()),
        })
    }
}

/// `GET /api/corporate-memory/knowledge`.
pub(crate) async fn get_knowledge(
    State(state): State<AppState>,
    RequestId(request_id): RequestId,
    Caller(principal): Caller,
    Query(params): Query<KnowledgeParams>,
) -> Result<Json<KnowledgePage>, ApiError> {
    blocking(&state, &principal, &request_id, move |m, v| {
        m.knowledge(v, &params.query()?)
    })
    .await
    .map(Json)
}

#[derive(Debug, Deserialize)]
pub(crate) struct VoteBody {
    item_id: String,
    vote: i64,
}

/// `POST /api/corporate-memory/vote {item_id, vote: -1|0|1}`: the item as it now stands.
pub(crate) async fn post_vote(
    State(state): State<AppState>,
    RequestId(request_id): RequestId,
    Caller(principal): Caller,
    body: Result<Json<VoteBody>, axum::extract::rejection::JsonRejection>,
) -> Result<Json<KnowledgeItem>, ApiError> {
    let body = json_body(
        &state,
        &request_id,
        body,
        r#"{"item_id": "km_…", "vote": -1 | 0 | 1}"#,
    )?;
    let item = blocking(&state, &principal, &request_id, move |m, v| {
        m.vote(v, &body.item_id, body.vote)
    })
    .await?;
    Ok(Json(item))
}

/// `GET /api/corporate-memory/stats`.
pub(crate) async fn get_stats(
    State(state): State<AppState>,
    RequestId(request_id): RequestId,
    Caller(principal): Caller,
) -> Result<Json<Stats>, ApiError> {
    blocking(&state, &principal, &request_id, |m, v| m.stats(v))
        .await
        .map(Json)
}

#[derive(Debug, Serialize)]
pub(crate) struct Votes {
    votes: Vec<MyVote>,
}

/// `GET /api/corporate-memory/my-votes`.
pub(crate) async fn get_my_votes(
    State(state): State<AppState>,
    RequestId(request_id): RequestId,
    Caller(principal): Caller,
) -> Result<Json<Votes>, ApiError> {
    blocking(&state, &principal, &request_id, |m, v| m.my_votes(v))
        .await
        .map(|votes| Json(Votes { votes }))
}

/// `GET /api/corporate-memory/items/{id}`: the item, its sources and (for admins and its
/// authors) its history.
pub(crate) async fn get_item(
    State(state): State<AppState>,
    RequestId(request_id): RequestId,
    Caller(principal): Caller,
    Path(id): Path<String>,
) -> Result<Json<ItemDetail>, ApiError> {
    blocking(&state, &principal, &request_id, move |m, v| m.item(v, &id))
        .await
        .map(Json)
}

#[derive(Debug, Serialize)]
pub(crate) struct ReviewQueue {
    items: Vec<Review>,
}

/// `GET /api/corporate-memory/review`: my items the screen held.
pub(crate) async fn get_review(
    State(state): State<AppState>,
    RequestId(request_id): RequestId,
    Caller(principal): Caller,
) -> Result<Json<ReviewQueue>, ApiError> {
    blocking(&state, &principal, &request_id, |m, v| m.review_queue(v))
        .await
        .map(|items| Json(ReviewQueue { items }))
}

#[derive(Debug, Deserialize)]
pub(crate) struct ReviewBody {
    publish: bool,
}

/// `POST /api/corporate-memory/items/{id}/review {publish}`: the author publishes a held
/// item (not secrets, passwords or private lines) or holds it again.
pub(crate) async fn post_review(
    State(state): State<AppState>,
    RequestId(request_id): RequestId,
    Caller(principal): Caller,
    Path(id): Path<String>,
    body: Result<Json<ReviewBody>, axum::extract::rejection::JsonRejection>,
) -> Result<Json<ItemDetail>, ApiError> {
    let body = json_body(&state, &request_id, body, r#"{"publish": true | false}"#)?;
    let rid = request_id.clone();
    blocking(&state, &principal, &request_id, move |m, v| {
        m.review(v, &rid, &id, body.publish)
    })
    .await
    .map(Json)
}

#[derive(Debug, Deserialize)]
pub(crate) struct ModerateBody {
    action: String,
    title: Option<String>,
    content: Option<String>,
    category: Option<String>,
    tags: Option<Vec<String>>,
}

impl ModerateBody {
    pub(crate) fn request(self) -> Result<ModerationRequest, MemoryError> {
        ModerationRequest::parse(&self.action, || ItemEdit {
            title: self.title.unwrap_or_default(),
            content: self.content.unwrap_or_default(),
            category: self.category.unwrap_or_default(),
            tags: self.tags.unwrap_or_default(),
        })
    }
}

/// `POST /api/corporate-memory/items/{id}/moderate {action, …}` (administrators).
pub(crate) async fn post_moderate(
    State(state): State<AppState>,
    RequestId(request_id): RequestId,
    Caller(principal): Caller,
    Path(id): Path<String>,
    body: Result<Json<ModerateBody>, axum::extract::rejection::JsonRejection>,
) -> Result<Json<ItemDetail>, ApiError> {
    let body = json_body(
        &state,
        &request_id,
        body,
        r#"{"action": "pin" | "unpin" | "retire" | "restore" | "edit", "title", "content", "category", "tags": [...]}"#,
    )?;
    let rid = request_id.clone();
    blocking(&state, &principal, &request_id, move |m, v| {
        m.moderate(v, &rid, &id, body.request()?)
    })
    .await
    .map(Json)
}

/// `GET /api/corporate-memory/notes`: my notes and whether they were collected.
pub(crate) async fn get_notes(
    State(state): State<AppState>,
    RequestId(request_id): RequestId,
    Caller(principal): Caller,
) -> Result<Json<MyNotes>, ApiError> {
    blocking(&state, &principal, &request_id, |m, v| m.my_notes(v))
        .await
        .map(Json)
}

#[derive(Debug, Deserialize)]
pub(crate) struct NotesBody {
    text: String,
}

/// Saves my notes and collects them in the background (the answer does not wait for the
/// LLM).
pub(crate) async fn save_notes(
    state: &AppState,
    principal: &Principal,
    request_id: &str,
    text: String,
) -> Result<MyNotes, ApiError> {
    let notes = blocking(state, principal, request_id, move |m, v| {
        m.save_notes(v, &text)
    })
    .await?;
    if let Some(memory) = state.memory.clone() {
        let account = principal.id;
        tokio::spawn(async move {
            let summary = memory.collect_account(account).await;
            tracing::debug!(summary = %summary.line(), "memory: saved notes collected");
        });
    }
    Ok(notes)
}

/// `PUT /api/corporate-memory/notes {text}`.
pub(crate) async fn put_notes(
    State(state): State<AppState>,
    RequestId(request_id): RequestId,
    Caller(principal): Caller,
    body: Result<Json<NotesBody>, axum::extract::rejection::JsonRejection>,
) -> Result<Json<MyNotes>, ApiError> {
    let body = json_body(&state, &request_id, body, r#"{"text": "…"}"#)?;
    save_notes(&state, &principal, &request_id, body.text)
        .await
        .map(Json)
}

#[derive(Debug, Deserialize)]
pub(crate) struct TranscriptParams {
    #[serde(default)]
    all: bool,
}

#[derive(Debug, Serialize)]
pub(crate) struct Transcripts {
    transcripts: Vec<TranscriptView>,
}

/// `GET /api/corporate-memory/transcripts[?all=true]`: mine, or (admins) everyone's.
pub(crate) async fn get_transcripts(
    State(state): State<AppState>,
    RequestId(request_id): RequestId,
    Caller(principal): Caller,
    Query(params): Query<TranscriptParams>,
) -> Result<Json<Transcripts>, ApiError> {
    blocking(&state, &principal, &request_id, move |m, v| {
        m.transcripts(v, params.all)
    })
    .await
    .map(|transcripts| Json(Transcripts { transcripts }))
}

/// `GET /api/corporate-memory/transcripts/{user}/{sha256}`: the stored file (its owner and
/// admins).
pub(crate) async fn get_transcript(
    State(state): State<AppState>,
    RequestId(request_id): RequestId,
    Caller(principal): Caller,
    Path((user, sha256)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    let (name, bytes) = blocking(&state, &principal, &request_id, move |m, v| {
        m.transcript(v, &user, &sha256)
    })
    .await?;
    let disposition = format!("attachment; filename=\"{}\"", name.replace('"', ""));
    Ok((
        [
            (header::CONTENT_TYPE, "application/x-ndjson".to_string()),
            (header::CONTENT_DISPOSITION, disposition),
        ],
        bytes,
    )
        .into_response())
}

/// `GET /api/v1/sync/rules`: my rule files, for `dataport pull`.
pub(crate) async fn get_rules(
    State(state): State<AppState>,
    RequestId(request_id): RequestId,
    Caller(principal): Caller,
) -> Result<Json<RuleFiles>, ApiError> {
    blocking(&state, &principal, &request_id, |m, v| m.rules(v))
        .await
        .map(|rules| Json(RuleFiles { rules }))
}
