//! Corporate memory in the portal (issue 29; the spec in docs/memory.md): the memory page
//! (`/memory`: the team's knowledge items with the stats, search, a category filter, sorting,
//! my rules, paging and votes), an item's page (`/memory/items/{id}`: its sources, its history,
//! its author's review of a held item, administrators' moderation), my notes (`/memory/notes`:
//! the editor, my review queue, my stored transcripts) and the administrators' list
//! (`/admin/memory`: published and retired items, pinned and retired in place).
//!
//! Every read and change goes through the same [`dataport_memory::Memory`] calls as
//! `/api/corporate-memory/…`, so who sees which item is the memory crate's one rule: an item
//! the viewer may not see answers exactly like one that does not exist. Forms post back here
//! ([`act_on_form`]: CSRF, the change, then back to the page with a flash); a refusal is shown
//! on the page the form came from. Items are analysts' notes: they are shown as escaped text,
//! never as markup.

use askama::Template;
use axum::extract::{Path, Query, Request, State};
use axum::http::{StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use dataport_memory::knowledge::{KnowledgeItem, Review, Stats};
use dataport_memory::service::TranscriptView;
use dataport_memory::{
    CATEGORIES, ItemDetail, ItemEdit, KnowledgeQuery, ModerationRequest, MyNotes, Sort,
};
use serde::{Deserialize, Serialize};

use super::admin::refuse_non_admin;
use super::{
    Chrome, FormProblem, PostedForm, Viewer, act_on_form, not_found, respond, size_text, when,
};
use crate::memory::blocking;
use crate::pages::query_value;
use crate::{ApiError, AppState, RequestId};

/// Items on a page of `/memory`.
const PER_PAGE: usize = 20;
/// Items on a page of `/admin/memory`.
const ADMIN_PER_PAGE: usize = 50;
/// What the not-found page says for an item: the same whether it does not exist or is not
/// the viewer's to see.
const NO_ITEM: &str = "There is no knowledge item here, or none that you may see.";

/// An RFC 3339 time as the portal writes times (`2026-05-01 09:30 UTC`).
fn at(rfc3339: &str) -> String {
    chrono::DateTime::parse_from_rfc3339(rfc3339)
        .map_or_else(|_| rfc3339.to_string(), |t| when(t.timestamp()))
}

/// A category as people read it.
fn category_label(category: &str) -> String {
    match category {
        "data_analysis" => "Data analysis".into(),
        "api_integration" => "API integration".into(),
        "business_logic" => "Business logic".into(),
        other => {
            let mut chars = other.chars();
            let word: String = chars.next().map_or_else(String::new, |first| {
                first.to_uppercase().chain(chars).collect()
            });
            word.replace('_', " ")
        }
    }
}

fn item_href(id: &str) -> String {
    format!("/memory/items/{}", query_value(id))
}

/// One option of a choice on a page.
#[derive(Debug, Serialize)]
pub(crate) struct Choice {
    value: String,
    label: String,
    selected: bool,
}

fn category_choices(selected: &str) -> Vec<Choice> {
    CATEGORIES
        .iter()
        .map(|c| Choice {
            value: (*c).to_string(),
            label: category_label(c),
            selected: *c == selected,
        })
        .collect()
}

fn sort_name(sort: Sort) -> &'static str {
    match sort {
        Sort::Score => "score",
        Sort::UpdatedAt => "updated_at",
        Sort::Contributors => "contributors",
        Sort::Relevance => "relevance",
    }
}

/// A vote button: what clicking it posts (its vote, or 0 to take the viewer's vote back).
#[derive(Debug)]
struct VoteButton {
    value: i64,
    pressed: bool,
    label: String,
    hint: &'static str,
}

/// An item as a list or its page shows it.
#[derive(Debug, Serialize)]
pub(crate) struct ItemLine {
    #[serde(flatten)]
    item: KnowledgeItem,
    href: String,
    category_label: String,
    updated: String,
    /// Where the vote buttons come back to.
    #[serde(skip)]
    back: String,
    #[serde(skip)]
    up: VoteButton,
    #[serde(skip)]
    down: VoteButton,
}

impl ItemLine {
    fn new(item: KnowledgeItem, back: String) -> Self {
        let button = |vote: i64, verb: &str, hint: &'static str| VoteButton {
            value: if item.your_vote == vote { 0 } else { vote },
            pressed: item.your_vote == vote,
            label: format!("{verb} “{}”", item.title),
            hint,
        };
        let up = button(
            1,
            "Upvote",
            if item.your_vote == 1 {
                "You upvoted it: click to take your vote back"
            } else {
                "Upvote: it becomes one of your rules"
            },
        );
        let down = button(
            -1,
            "Downvote",
            if item.your_vote == -1 {
                "You downvoted it: click to take your vote back"
            } else {
                "Downvote"
            },
        );
        Self {
            href: item_href(&item.id),
            category_label: category_label(&item.category),
            updated: at(&item.updated_at),
            back,
            up,
            down,
            item,
        }
    }
}

/// Whether corporate memory runs on this server; if not, the page that says so.
fn unavailable(state: &AppState, viewer: &Viewer, request_id: &str) -> Option<Response> {
    crate::memory::memory(state, request_id).err().map(|e| {
        not_found(
            state,
            viewer,
            e,
            "Corporate memory is not set up on this server.",
        )
    })
}

// -- the memory page ----------------------------------------------------------------------------

/// `/memory`'s parameters, read leniently: a value the form could not have sent is named on
/// the page, and left out.
#[derive(Debug, Default, Deserialize)]
pub(crate) struct ListParams {
    #[serde(default)]
    search: String,
    #[serde(default)]
    category: String,
    #[serde(default)]
    sort: String,
    #[serde(default)]
    my_rules: String,
    #[serde(default)]
    page: String,
}

/// What a `/memory` address asks for.
struct Listing {
    search: String,
    category: String,
    /// As asked for (none: relevance when searching, else score).
    sort: Option<Sort>,
    my_rules: bool,
    page: usize,
    problem: Option<String>,
}

impl ListParams {
    fn listing(&self) -> Listing {
        let mut problem = None;
        let search = self.search.trim().to_string();
        let category = match self.category.trim() {
            "" => String::new(),
            c if CATEGORIES.contains(&c) => c.to_string(),
            c => {
                problem = Some(format!(
                    "There is no category “{c}”; all categories are shown."
                ));
                String::new()
            }
        };
        let sort = match self.sort.trim() {
            "" => None,
            s => match Sort::parse(s) {
                Ok(Sort::Relevance) if search.is_empty() => None,
                Ok(sort) => Some(sort),
                Err(e) => {
                    problem = Some(e.to_string());
                    None
                }
            },
        };
        Listing {
            my_rules: matches!(self.my_rules.trim(), "true" | "on" | "1"),
            page: self.page.trim().parse().unwrap_or(0),
            search,
            category,
            sort,
            problem,
        }
    }
}

impl Listing {
    fn query(&self) -> KnowledgeQuery {
        KnowledgeQuery {
            category: Some(self.category.clone()).filter(|c| !c.is_empty()),
            search: Some(self.search.clone()).filter(|s| !s.is_empty()),
            page: self.page,
            per_page: Some(PER_PAGE),
            sort: self.sort,
            my_rules: self.my_rules,
            state: None,
        }
    }

    /// The address of page `page` of this listing.
    fn href(&self, page: usize) -> String {
        let mut parts = Vec::new();
        if !self.search.is_empty() {
            parts.push(format!("search={}", query_value(&self.search)));
        }
        if !self.category.is_empty() {
            parts.push(format!("category={}", self.category));
        }
        if let Some(sort) = self.sort {
            parts.push(format!("sort={}", sort_name(sort)));
        }
        if self.my_rules {
            parts.push("my_rules=true".into());
        }
        if page > 0 {
            parts.push(format!("page={page}"));
        }
        if parts.is_empty() {
            "/memory".into()
        } else {
            format!("/memory?{}", parts.join("&"))
        }
    }
}

/// What the memory page shows (and its JSON twin answers).
#[derive(Debug, Serialize)]
pub(crate) struct MemoryData {
    stats: Stats,
    /// When the collector last ran, in words.
    last_collection_text: String,
    search: String,
    category: String,
    /// The order shown (the default when none was asked for).
    sort: String,
    my_rules: bool,
    items: Vec<ItemLine>,
    total: usize,
    page: usize,
    per_page: usize,
    total_pages: usize,
    previous: Option<String>,
    next: Option<String>,
    problem: Option<String>,
    #[serde(skip)]
    categories: Vec<Choice>,
    #[serde(skip)]
    sorts: Vec<Choice>,
}

#[derive(Template)]
#[template(path = "memory.html")]
struct MemoryPage<'a> {
    chrome: Chrome,
    data: &'a MemoryData,
}

async fn memory_data(
    state: &AppState,
    viewer: &Viewer,
    request_id: &str,
    params: &ListParams,
    problem: Option<String>,
) -> Result<MemoryData, ApiError> {
    let listing = params.listing();
    let query = listing.query();
    let (stats, page) = blocking(state, &viewer.principal, request_id, move |m, v| {
        Ok((m.stats(v)?, m.knowledge(v, &query)?))
    })
    .await?;
    let back = listing.href(listing.page);
    // The first choice is the default (sent as no sort): a new search from the page is then
    // ranked by relevance, unless another order was chosen.
    let default = if listing.search.is_empty() {
        Sort::Score
    } else {
        Sort::Relevance
    };
    let mut sorts = Vec::new();
    if !listing.search.is_empty() {
        sorts.push((Sort::Relevance, "Best match"));
    }
    sorts.extend([
        (Sort::Score, "Score"),
        (Sort::UpdatedAt, "Last updated"),
        (Sort::Contributors, "Contributors"),
    ]);
    let shown = listing.sort.unwrap_or(default);
    Ok(MemoryData {
        last_collection_text: stats
            .last_collection
            .as_deref()
            .map_or_else(|| "never".to_string(), at),
        stats,
        items: page
            .items
            .into_iter()
            .map(|item| {
                let back = format!("{back}#{}", item.id);
                ItemLine::new(item, back)
            })
            .collect(),
        total: page.total,
        page: page.page,
        per_page: page.per_page,
        total_pages: page.total_pages,
        previous: (listing.page > 0)
            .then(|| listing.href(listing.page.min(page.total_pages).saturating_sub(1))),
        next: (listing.page + 1 < page.total_pages).then(|| listing.href(listing.page + 1)),
        problem: problem.or(listing.problem.clone()),
        categories: category_choices(&listing.category),
        sorts: sorts
            .into_iter()
            .map(|(sort, label)| Choice {
                value: if sort == default {
                    String::new()
                } else {
                    sort_name(sort).to_string()
                },
                label: label.to_string(),
                selected: sort == shown,
            })
            .collect(),
        search: listing.search,
        category: listing.category,
        sort: sort_name(shown).to_string(),
        my_rules: listing.my_rules,
    })
}

async fn show_memory(
    state: &AppState,
    viewer: &Viewer,
    request_id: &str,
    status: StatusCode,
    params: &ListParams,
    problem: Option<String>,
) -> Response {
    if let Some(page) = unavailable(state, viewer, request_id) {
        return page;
    }
    match memory_data(state, viewer, request_id, params, problem).await {
        Ok(data) => {
            let page = MemoryPage {
                chrome: Chrome::new(state, viewer, "/memory"),
                data: &data,
            };
            respond(viewer, status, &data, &page)
        }
        Err(e) => e.into_response(),
    }
}

/// `GET /memory?search=&category=&sort=&my_rules=&page=`.
pub(crate) async fn get_memory(
    State(state): State<AppState>,
    RequestId(id): RequestId,
    viewer: Viewer,
    Query(params): Query<ListParams>,
) -> Response {
    show_memory(&state, &viewer, &id, StatusCode::OK, &params, None).await
}

// -- an item's page -----------------------------------------------------------------------------

/// What the item page shows beside the item: the API's answer for it, in words.
#[derive(Debug, Serialize)]
pub(crate) struct ItemData {
    #[serde(flatten)]
    detail: ItemDetail,
    problem: Option<String>,
}

struct SourceLine {
    name: String,
    user: String,
    first_seen: String,
    last_seen: String,
}

struct HistoryLine {
    at: String,
    actor: String,
    action: String,
    detail: String,
}

/// An administrator's edit as typed (kept when it is refused).
#[derive(Debug, Default)]
struct EditDraft {
    title: String,
    content: String,
    category: String,
    tags: String,
    /// The edit form was sent (and refused): it is shown open.
    open: bool,
}

#[derive(Template)]
#[template(path = "memory_item.html")]
struct ItemPage<'a> {
    chrome: Chrome,
    data: &'a ItemData,
    i: ItemLine,
    extracted: String,
    sources: Vec<SourceLine>,
    history: Vec<HistoryLine>,
    /// An administrator may pin, retire and edit it (not a held item: that is its author's).
    moderate: bool,
    categories: Vec<Choice>,
    edit: EditDraft,
}

async fn show_item(
    state: &AppState,
    viewer: &Viewer,
    request_id: &str,
    status: StatusCode,
    item_id: String,
    problem: Option<String>,
    draft: Option<EditDraft>,
) -> Response {
    if let Some(page) = unavailable(state, viewer, request_id) {
        return page;
    }
    let detail = match blocking(state, &viewer.principal, request_id, move |m, v| {
        m.item(v, &item_id)
    })
    .await
    {
        Ok(detail) => detail,
        Err(e) if e.status() == StatusCode::NOT_FOUND => {
            return not_found(state, viewer, e, NO_ITEM);
        }
        Err(e) => return e.into_response(),
    };
    let item = &detail.item;
    let i = ItemLine::new(item.clone(), item_href(&item.id));
    let extracted = at(&item.extracted_at);
    let edit = draft.unwrap_or_else(|| EditDraft {
        title: item.title.clone(),
        content: item.content.clone(),
        category: item.category.clone(),
        tags: item.tags.join(", "),
        open: false,
    });
    let sources = detail
        .sources
        .iter()
        .map(|s| SourceLine {
            name: if s.display_name.trim().is_empty() {
                s.user.clone()
            } else {
                s.display_name.clone()
            },
            user: s.user.clone(),
            first_seen: at(&s.first_seen_at),
            last_seen: at(&s.last_seen_at),
        })
        .collect();
    let history = detail
        .history
        .iter()
        .map(|h| HistoryLine {
            at: at(&h.at),
            actor: h.actor.clone(),
            action: h.action.clone(),
            detail: h.detail.clone(),
        })
        .collect();
    let moderate = viewer.principal.admin && item.state != "held";
    let categories = category_choices(&edit.category);
    let data = ItemData { detail, problem };
    let page = ItemPage {
        chrome: Chrome::new(state, viewer, "/memory"),
        data: &data,
        i,
        extracted,
        sources,
        history,
        moderate,
        categories,
        edit,
    };
    respond(viewer, status, &data, &page)
}

/// `GET /memory/items/{id}`.
pub(crate) async fn get_memory_item(
    State(state): State<AppState>,
    RequestId(id): RequestId,
    viewer: Viewer,
    Path(item): Path<String>,
) -> Response {
    show_item(&state, &viewer, &id, StatusCode::OK, item, None, None).await
}

// -- my notes -----------------------------------------------------------------------------------

#[derive(Debug, Serialize)]
pub(crate) struct TranscriptLine {
    #[serde(flatten)]
    transcript: TranscriptView,
    size_text: String,
    stored: String,
    /// The download: the API's route, which takes the browser session.
    href: String,
}

/// What my notes page shows (and its JSON twin answers).
#[derive(Debug, Serialize)]
pub(crate) struct NotesData {
    notes: MyNotes,
    collected_text: Option<String>,
    reviews: Vec<Review>,
    transcripts: Vec<TranscriptLine>,
    problem: Option<String>,
}

#[derive(Template)]
#[template(path = "memory_notes.html")]
struct NotesPage<'a> {
    chrome: Chrome,
    data: &'a NotesData,
    /// What the editor holds: the notes, or what was typed when saving failed.
    text: &'a str,
}

async fn show_notes(
    state: &AppState,
    viewer: &Viewer,
    request_id: &str,
    status: StatusCode,
    problem: Option<String>,
    draft: Option<String>,
) -> Response {
    if let Some(page) = unavailable(state, viewer, request_id) {
        return page;
    }
    let found = blocking(state, &viewer.principal, request_id, |m, v| {
        Ok((m.my_notes(v)?, m.review_queue(v)?, m.transcripts(v, false)?))
    })
    .await;
    let (notes, reviews, transcripts) = match found {
        Ok(found) => found,
        Err(e) => return e.into_response(),
    };
    let data = NotesData {
        collected_text: notes.collected_at.as_deref().map(at),
        reviews,
        transcripts: transcripts
            .into_iter()
            .map(|t| TranscriptLine {
                size_text: size_text(t.bytes),
                stored: at(&t.stored_at),
                href: format!(
                    "/api/corporate-memory/transcripts/{}/{}",
                    query_value(&t.user),
                    query_value(&t.sha256)
                ),
                transcript: t,
            })
            .collect(),
        notes,
        problem,
    };
    let page = NotesPage {
        chrome: Chrome::new(state, viewer, "/memory"),
        text: draft.as_deref().unwrap_or(&data.notes.text),
        data: &data,
    };
    respond(viewer, status, &data, &page)
}

/// `GET /memory/notes`.
pub(crate) async fn get_memory_notes(
    State(state): State<AppState>,
    RequestId(id): RequestId,
    viewer: Viewer,
) -> Response {
    show_notes(&state, &viewer, &id, StatusCode::OK, None, None).await
}

// -- the administrators' list -------------------------------------------------------------------

#[derive(Debug, Default, Deserialize)]
pub(crate) struct AdminParams {
    #[serde(default)]
    state: String,
    #[serde(default)]
    search: String,
    #[serde(default)]
    page: String,
}

/// What the administrators' list shows (and its JSON twin answers).
#[derive(Debug, Serialize)]
pub(crate) struct AdminMemoryData {
    /// `published` or `retired`.
    state: String,
    search: String,
    items: Vec<ItemLine>,
    total: usize,
    page: usize,
    total_pages: usize,
    previous: Option<String>,
    next: Option<String>,
    problem: Option<String>,
    #[serde(skip)]
    states: Vec<Choice>,
}

#[derive(Template)]
#[template(path = "memory_admin.html")]
struct AdminPage<'a> {
    chrome: Chrome,
    data: &'a AdminMemoryData,
}

fn admin_href(item_state: &str, search: &str, page: usize) -> String {
    let mut href = format!("/admin/memory?state={item_state}");
    if !search.is_empty() {
        href.push_str(&format!("&search={}", query_value(search)));
    }
    if page > 0 {
        href.push_str(&format!("&page={page}"));
    }
    href
}

async fn show_admin(
    state: &AppState,
    viewer: &Viewer,
    request_id: &str,
    status: StatusCode,
    params: &AdminParams,
    mut problem: Option<String>,
) -> Response {
    if let Some(refused) =
        refuse_non_admin(state, viewer, request_id, "corporate memory moderation")
    {
        return refused;
    }
    if let Some(page) = unavailable(state, viewer, request_id) {
        return page;
    }
    let item_state = match params.state.trim() {
        "" | "published" => "published",
        "retired" => "retired",
        other => {
            problem.get_or_insert_with(|| {
                format!("There is no state “{other}” here; use published or retired.")
            });
            "published"
        }
    };
    let search = params.search.trim().to_string();
    let page_no: usize = params.page.trim().parse().unwrap_or(0);
    let query = KnowledgeQuery {
        search: Some(search.clone()).filter(|s| !s.is_empty()),
        page: page_no,
        per_page: Some(ADMIN_PER_PAGE),
        sort: search.is_empty().then_some(Sort::UpdatedAt),
        state: Some(item_state.to_string()),
        ..KnowledgeQuery::default()
    };
    let page = match blocking(state, &viewer.principal, request_id, move |m, v| {
        m.knowledge(v, &query)
    })
    .await
    {
        Ok(page) => page,
        Err(e) => return e.into_response(),
    };
    let back = admin_href(item_state, &search, page_no);
    let data = AdminMemoryData {
        items: page
            .items
            .into_iter()
            .map(|item| ItemLine::new(item, back.clone()))
            .collect(),
        total: page.total,
        page: page.page,
        total_pages: page.total_pages,
        previous: (page_no > 0).then(|| {
            admin_href(
                item_state,
                &search,
                page_no.min(page.total_pages).saturating_sub(1),
            )
        }),
        next: (page_no + 1 < page.total_pages)
            .then(|| admin_href(item_state, &search, page_no + 1)),
        problem,
        states: ["published", "retired"]
            .into_iter()
            .map(|s| Choice {
                value: s.to_string(),
                label: category_label(s),
                selected: s == item_state,
            })
            .collect(),
        state: item_state.to_string(),
        search,
    };
    let page = AdminPage {
        chrome: Chrome::new(state, viewer, "/admin"),
        data: &data,
    };
    respond(viewer, status, &data, &page)
}

/// `GET /admin/memory?state=published|retired&search=&page=` (administrators).
pub(crate) async fn get_admin_memory(
    State(state): State<AppState>,
    RequestId(id): RequestId,
    viewer: Viewer,
    Query(params): Query<AdminParams>,
) -> Response {
    show_admin(&state, &viewer, &id, StatusCode::OK, &params, None).await
}

// -- the forms ----------------------------------------------------------------------------------

/// What was typed into a refused form, for its page to show again.
enum Draft {
    None,
    Notes(String),
    Edit(EditDraft),
}

/// A refused form's page: the one it came from (`back`), with the problem.
async fn show_problem<T>(
    state: &AppState,
    viewer: &Viewer,
    request_id: &str,
    problem: FormProblem<T>,
    draft: Draft,
) -> Response {
    let FormProblem {
        status,
        message,
        back,
        ..
    } = problem;
    let uri: Uri = back
        .split('#')
        .next()
        .and_then(|b| b.parse().ok())
        .unwrap_or_else(|| Uri::from_static("/memory"));
    let path = uri.path();
    if path == "/memory/notes" {
        let text = match draft {
            Draft::Notes(text) => Some(text),
            _ => None,
        };
        return show_notes(state, viewer, request_id, status, Some(message), text).await;
    }
    if let Some(item) = path.strip_prefix("/memory/items/") {
        let edit = match draft {
            Draft::Edit(edit) => Some(edit),
            _ => None,
        };
        return show_item(
            state,
            viewer,
            request_id,
            status,
            item.to_string(),
            Some(message),
            edit,
        )
        .await;
    }
    if path == "/admin/memory" {
        let params = Query::<AdminParams>::try_from_uri(&uri)
            .map(|q| q.0)
            .unwrap_or_default();
        return show_admin(state, viewer, request_id, status, &params, Some(message)).await;
    }
    let params = Query::<ListParams>::try_from_uri(&uri)
        .map(|q| q.0)
        .unwrap_or_default();
    show_memory(state, viewer, request_id, status, &params, Some(message)).await
}

#[derive(Debug, Deserialize)]
pub(crate) struct VoteForm {
    #[serde(default)]
    csrf: String,
    /// 1, -1, or 0 to take the vote back.
    vote: i64,
    #[serde(default)]
    back: String,
}

impl PostedForm for VoteForm {
    fn csrf(&self) -> &str {
        &self.csrf
    }

    fn back(&self) -> Option<&str> {
        Some(&self.back)
    }
}

/// `POST /memory/items/{id}/vote` (`vote` 1 or -1; 0 takes the viewer's vote back).
pub(crate) async fn post_memory_vote(
    State(state): State<AppState>,
    RequestId(id): RequestId,
    viewer: Viewer,
    Path(item): Path<String>,
    request: Request,
) -> Response {
    let (st, principal, rid) = (&state, &viewer.principal, id.as_str());
    let done = act_on_form(&state, &viewer, request, "/memory", |form: &VoteForm| {
        let vote = form.vote;
        async move {
            let voted = blocking(st, principal, rid, move |m, v| m.vote(v, &item, vote)).await?;
            Ok(match vote {
                1 => format!(
                    "You upvoted “{}”: it is one of your rules now, and your next dataport pull brings it to your laptop.",
                    voted.title
                ),
                -1 => format!("You downvoted “{}”.", voted.title),
                _ => format!("You took back your vote on “{}”.", voted.title),
            })
        }
    })
    .await;
    match done {
        Ok(response) => response,
        Err(problem) => show_problem(&state, &viewer, &id, problem, Draft::None).await,
    }
}

#[derive(Debug, Deserialize)]
pub(crate) struct ReviewForm {
    #[serde(default)]
    csrf: String,
    /// `true`: publish despite the findings; else hold it again.
    #[serde(default)]
    publish: String,
    #[serde(default)]
    back: String,
}

impl PostedForm for ReviewForm {
    fn csrf(&self) -> &str {
        &self.csrf
    }

    fn back(&self) -> Option<&str> {
        Some(&self.back)
    }
}

/// `POST /memory/items/{id}/review`: the author publishes a held item anyway, or holds it
/// again.
pub(crate) async fn post_memory_review(
    State(state): State<AppState>,
    RequestId(id): RequestId,
    viewer: Viewer,
    Path(item): Path<String>,
    request: Request,
) -> Response {
    let (st, principal, rid) = (&state, &viewer.principal, id.as_str());
    let fallback = item_href(&item);
    let done = act_on_form(&state, &viewer, request, &fallback, |form: &ReviewForm| {
        let publish = form.publish == "true";
        let request_id = rid.to_string();
        async move {
            let detail = blocking(st, principal, rid, move |m, v| {
                m.review(v, &request_id, &item, publish)
            })
            .await?;
            Ok(if publish {
                format!("You published “{}” for the team.", detail.item.title)
            } else {
                format!("“{}” is held again: only you see it.", detail.item.title)
            })
        }
    })
    .await;
    match done {
        Ok(response) => response,
        Err(problem) => show_problem(&state, &viewer, &id, problem, Draft::None).await,
    }
}

#[derive(Debug, Deserialize)]
pub(crate) struct ModerateForm {
    #[serde(default)]
    csrf: String,
    /// `pin`, `unpin`, `retire`, `restore` or `edit`.
    #[serde(default)]
    action: String,
    #[serde(default)]
    title: String,
    #[serde(default)]
    content: String,
    #[serde(default)]
    category: String,
    /// Comma-separated.
    #[serde(default)]
    tags: String,
    #[serde(default)]
    back: String,
}

impl PostedForm for ModerateForm {
    fn csrf(&self) -> &str {
        &self.csrf
    }

    fn back(&self) -> Option<&str> {
        Some(&self.back)
    }
}

impl ModerateForm {
    fn request(&self) -> Result<ModerationRequest, ApiError> {
        ModerationRequest::parse(&self.action, || ItemEdit {
            title: self.title.clone(),
            // Browsers send text areas with CRLF line ends.
            content: self.content.replace("\r\n", "\n"),
            category: self.category.clone(),
            tags: self
                .tags
                .split(',')
                .map(str::trim)
                .filter(|t| !t.is_empty())
                .map(String::from)
                .collect(),
        })
        .map_err(|e| ApiError::bad_request(e.to_string()))
    }
}

/// `POST /memory/items/{id}/moderate` (administrators): pin, unpin, retire, restore or edit.
pub(crate) async fn post_memory_moderate(
    State(state): State<AppState>,
    RequestId(id): RequestId,
    viewer: Viewer,
    Path(item): Path<String>,
    request: Request,
) -> Response {
    let (st, principal, rid) = (&state, &viewer.principal, id.as_str());
    let fallback = item_href(&item);
    let done = act_on_form(
        &state,
        &viewer,
        request,
        &fallback,
        |form: &ModerateForm| {
            let change = form.request();
            let action = form.action.clone();
            let request_id = rid.to_string();
            async move {
                let change = change.map_err(|e| e.with_request_id(rid))?;
                let detail = blocking(st, principal, rid, move |m, v| {
                    m.moderate(v, &request_id, &item, change)
                })
                .await?;
                let title = &detail.item.title;
                Ok(match action.as_str() {
                    "pin" => format!("Pinned “{title}”: it is a rule for everyone now."),
                    "unpin" => format!("Unpinned “{title}”."),
                    "retire" => format!("Retired “{title}”: it is no longer listed for the team."),
                    "restore" => format!("Restored “{title}”."),
                    _ => format!("Saved your changes to “{title}”."),
                })
            }
        },
    )
    .await;
    match done {
        Ok(response) => response,
        Err(mut problem) => {
            let draft = match problem.form.take() {
                Some(form) if form.action == "edit" => Draft::Edit(EditDraft {
                    title: form.title,
                    content: form.content,
                    category: form.category,
                    tags: form.tags,
                    open: true,
                }),
                _ => Draft::None,
            };
            show_problem(&state, &viewer, &id, problem, draft).await
        }
    }
}

#[derive(Debug, Deserialize)]
pub(crate) struct NotesForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    text: String,
}

impl PostedForm for NotesForm {
    fn csrf(&self) -> &str {
        &self.csrf
    }
}

/// `POST /memory/notes`: saves my notes (the same file `dataport push` uploads) and collects
/// them in the background.
pub(crate) async fn post_memory_notes(
    State(state): State<AppState>,
    RequestId(id): RequestId,
    viewer: Viewer,
    request: Request,
) -> Response {
    let (st, principal, rid) = (&state, &viewer.principal, id.as_str());
    let done = act_on_form(&state, &viewer, request, "/memory/notes", |form: &NotesForm| {
        // Browsers send text areas with CRLF line ends; notes are kept with LF.
        let text = form.text.replace("\r\n", "\n");
        async move {
            let notes = crate::memory::save_notes(st, principal, rid, text).await?;
            Ok(format!(
                "Your notes are saved ({}). The collector is extracting their items now: reload in a moment to see its status.",
                size_text(notes.bytes as u64)
            ))
        }
    })
    .await;
    match done {
        Ok(response) => response,
        Err(mut problem) => {
            let draft = problem
                .form
                .take()
                .map_or(Draft::None, |f| Draft::Notes(f.text));
            show_problem(&state, &viewer, &id, problem, draft).await
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listings_read_leniently_and_link_their_pages() {
        let params = ListParams {
            search: " refunds ".into(),
            category: "gossip".into(),
            sort: "relevance".into(),
            my_rules: "true".into(),
            page: "2".into(),
        };
        let listing = params.listing();
        assert_eq!(listing.search, "refunds");
        assert!(listing.category.is_empty() && listing.problem.is_some());
        assert_eq!(listing.sort, Some(Sort::Relevance));
        assert_eq!(
            listing.href(1),
            "/memory?search=refunds&sort=relevance&my_rules=true&page=1"
        );
        let plain = ListParams {
            sort: "relevance".into(),
            page: "x".into(),
            ..ListParams::default()
        }
        .listing();
        assert_eq!((plain.sort, plain.page), (None, 0));
        assert_eq!(plain.href(0), "/memory");
        assert!(
            ListParams {
                sort: "loudest".into(),
                ..ListParams::default()
            }
            .listing()
            .problem
            .is_some()
        );
    }

    #[test]
    fn categories_and_times_read_as_words() {
        assert_eq!(category_label("api_integration"), "API integration");
        assert_eq!(category_label("performance"), "Performance");
        assert_eq!(category_label("business_logic"), "Business logic");
        assert_eq!(at("2026-12-07T00:00:00Z"), "2026-12-07 00:00 UTC");
        assert_eq!(at("not a time"), "not a time");
    }
}
