//! What a reader sees of the items: who may see which item ([`visible`], the one rule), the
//! knowledge API's filters, ranked search, sorting and 0-based paging, votes as scores, stats,
//! the author's review queue, and the rule files a reader's laptop gets.
//!
//! Everything here works on items the state store has loaded; nothing here writes.

use std::collections::{BTreeMap, BTreeSet};

use dataport_common::sync::RuleFile;
use dataport_state::{MemoryItem, MemorySource, MemoryVote};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::search::{Doc, Index};
use crate::{CATEGORIES, MemoryError};

/// Most items on one page.
pub const MAX_PER_PAGE: usize = 100;
/// Items on a page when the reader does not say.
pub const DEFAULT_PER_PAGE: usize = 20;

/// Who is reading.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Viewer {
    pub id: i64,
    pub name: String,
    pub admin: bool,
    /// Names the reader may not learn of (lower case): tables outside their grants as
    /// `schema.table` and `table.` (a column prefix), and those tables' own column names. An
    /// item that mentions one is not shown to them, unless they wrote it.
    pub withheld: Vec<String>,
}

/// The one rule of who sees an item: a published item is the team's; a held item only its
/// authors' (the accounts whose notes hold it); a retired one its authors' and admins'. And
/// nobody but its authors sees an item that names a table they may not read.
pub fn visible(item: &MemoryItem, viewer: &Viewer) -> bool {
    let by_state = match item.state.as_str() {
        "published" => true,
        "held" => is_source(item, viewer),
        _ => viewer.admin || is_source(item, viewer),
    };
    by_state
        && (viewer.withheld.is_empty()
            || is_source(item, viewer)
            || !mentions_withheld(item, viewer))
}

/// Whether the item's title, content or tags name something `viewer` may not know of, as a
/// whole word (`tpch.customer`, `customer.c_name`, `c_custkey`; not `customers`).
fn mentions_withheld(item: &MemoryItem, viewer: &Viewer) -> bool {
    let text = format!("{}\n{}\n{}", item.title, item.content, item.tags.join("\n")).to_lowercase();
    let word = |c: char| c.is_alphanumeric() || c == '_';
    viewer.withheld.iter().any(|term| {
        let prefix = term.ends_with('.');
        text.match_indices(term.as_str()).any(|(at, _)| {
            let before = text[..at].chars().next_back();
            let after = text[at + term.len()..].chars().next();
            !before.is_some_and(|c| word(c) || c == '.') && (prefix || !after.is_some_and(word))
        })
    })
}

fn is_source(item: &MemoryItem, viewer: &Viewer) -> bool {
    item.sources.iter().any(|s| s.account_id == viewer.id)
}

/// Whether the item is one of the viewer's rules: published, and upvoted by them or pinned.
pub fn is_rule(item: &MemoryItem) -> bool {
    item.state == "published" && (item.my_vote == 1 || item.pinned)
}

/// How to order a page.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Sort {
    /// Ups minus downs, highest first.
    Score,
    /// Latest change first.
    UpdatedAt,
    /// Most contributing analysts first.
    Contributors,
    /// Best search match first (the default when searching).
    Relevance,
}

impl Sort {
    pub fn parse(s: &str) -> Result<Self, MemoryError> {
        match s {
            "score" => Ok(Self::Score),
            "updated_at" => Ok(Self::UpdatedAt),
            "contributors" => Ok(Self::Contributors),
            "relevance" => Ok(Self::Relevance),
            other => Err(MemoryError::Invalid(format!(
                "unknown sort '{other}'; use score, updated_at, contributors or relevance"
            ))),
        }
    }
}

/// Which items were asked for: `GET /api/corporate-memory/knowledge`'s parameters.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KnowledgeQuery {
    pub category: Option<String>,
    pub search: Option<String>,
    /// 0-based.
    pub page: usize,
    pub per_page: Option<usize>,
    pub sort: Option<Sort>,
    /// Only the reader's rules.
    pub my_rules: bool,
    /// `published` (the default), `held` (the reader's own, for review) or `retired`
    /// (admins and authors).
    pub state: Option<String>,
}

/// An item as the API shows it to one reader.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct KnowledgeItem {
    pub id: String,
    pub title: String,
    pub content: String,
    pub category: String,
    pub tags: Vec<String>,
    /// Usernames of the analysts whose notes hold it.
    pub source_users: Vec<String>,
    /// Their names for people: display names where set, joined with ", ".
    pub source_users_display: String,
    /// RFC 3339.
    pub extracted_at: String,
    pub updated_at: String,
    /// Upvotes minus downvotes.
    pub score: i64,
    pub upvotes: i64,
    pub downvotes: i64,
    /// The reader's vote: -1, 0 or 1.
    pub your_vote: i64,
    pub pinned: bool,
    /// `published`, `held` or `retired`.
    pub state: String,
    /// Delivered to the reader's laptop as `rules/<id>.md`.
    pub is_rule: bool,
    /// An admin edited it.
    pub edited: bool,
}

/// A page of items.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct KnowledgePage {
    pub items: Vec<KnowledgeItem>,
    pub total: usize,
    pub page: usize,
    pub per_page: usize,
    pub total_pages: usize,
}

/// RFC 3339 of milliseconds since the epoch.
pub fn rfc3339(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .unwrap_or_default()
        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

/// The sources a reader is shown: the clean ones, and their own.
fn shown_sources<'a>(item: &'a MemoryItem, viewer: &Viewer) -> Vec<&'a MemorySource> {
    item.sources
        .iter()
        .filter(|s| s.clean() || s.account_id == viewer.id)
        .collect()
}

/// `item` as `viewer` sees it (call only for a visible item).
pub fn view(item: &MemoryItem, viewer: &Viewer) -> KnowledgeItem {
    let sources = shown_sources(item, viewer);
    KnowledgeItem {
        id: item.id.clone(),
        title: item.title.clone(),
        content: item.content.clone(),
        category: item.category.clone(),
        tags: item.tags.clone(),
        source_users: sources.iter().map(|s| s.username.clone()).collect(),
        source_users_display: sources
            .iter()
            .map(|s| {
                if s.display_name.trim().is_empty() {
                    s.username.as_str()
                } else {
                    s.display_name.as_str()
                }
            })
            .collect::<Vec<_>>()
            .join(", "),
        extracted_at: rfc3339(item.extracted_ms),
        updated_at: rfc3339(item.updated_ms),
        score: item.upvotes - item.downvotes,
        upvotes: item.upvotes,
        downvotes: item.downvotes,
        your_vote: item.my_vote,
        pinned: item.pinned,
        state: item.state.clone(),
        is_rule: is_rule(item),
        edited: item.edited_ms.is_some(),
    }
}

/// The page `query` asks for, of the items `viewer` may see.
pub fn knowledge(
    items: &[MemoryItem],
    viewer: &Viewer,
    query: &KnowledgeQuery,
) -> Result<KnowledgePage, MemoryError> {
    let per_page = query.per_page.unwrap_or(DEFAULT_PER_PAGE);
    if per_page == 0 || per_page > MAX_PER_PAGE {
        return Err(MemoryError::Invalid(format!(
            "per_page must be between 1 and {MAX_PER_PAGE}"
        )));
    }
    if let Some(c) = &query.category
        && !CATEGORIES.contains(&c.as_str())
    {
        return Err(MemoryError::Invalid(format!(
            "unknown category '{c}'; use one of {}",
            CATEGORIES.join(", ")
        )));
    }
    let state = query.state.as_deref().unwrap_or("published");
    if !matches!(state, "published" | "held" | "retired") {
        return Err(MemoryError::Invalid(format!(
            "unknown state '{state}'; use published, held or retired"
        )));
    }
    let mut chosen: Vec<&MemoryItem> = items
        .iter()
        .filter(|i| i.state == state && visible(i, viewer))
        .filter(|i| query.category.as_ref().is_none_or(|c| &i.category == c))
        .filter(|i| !query.my_rules || is_rule(i))
        .collect();
    let search = query
        .search
        .as_deref()
        .map(str::trim)
        .filter(|s| !s.is_empty());
    let mut relevance: BTreeMap<&str, f64> = BTreeMap::new();
    if let Some(q) = search {
        let docs: Vec<Doc<'_>> = chosen
            .iter()
            .map(|i| Doc {
                id: &i.id,
                title: &i.title,
                tags: &i.tags,
                content: &i.content,
            })
            .collect();
        let hits = Index::new(&docs).search(q);
        for (id, score) in &hits {
            if let Some(i) = chosen.iter().find(|i| &i.id == id) {
                relevance.insert(i.id.as_str(), *score);
            }
        }
        chosen.retain(|i| relevance.contains_key(i.id.as_str()));
    }
    let sort = query.sort.unwrap_or(if search.is_some() {
        Sort::Relevance
    } else {
        Sort::Score
    });
    let contributors = |i: &MemoryItem| shown_sources(i, viewer).len();
    let score = |i: &MemoryItem| i.upvotes - i.downvotes;
    chosen.sort_by(|a, b| {
        let primary = match sort {
            Sort::Score => score(b).cmp(&score(a)).then(b.upvotes.cmp(&a.upvotes)),
            Sort::UpdatedAt => b.updated_ms.cmp(&a.updated_ms),
            Sort::Contributors => contributors(b)
                .cmp(&contributors(a))
                .then(score(b).cmp(&score(a))),
            Sort::Relevance => {
                let (ra, rb) = (
                    relevance.get(a.id.as_str()).copied().unwrap_or(0.0),
                    relevance.get(b.id.as_str()).copied().unwrap_or(0.0),
                );
                rb.total_cmp(&ra)
            }
        };
        primary
            .then(b.updated_ms.cmp(&a.updated_ms))
            .then(a.id.cmp(&b.id))
    });
    let total = chosen.len();
    let items = chosen
        .iter()
        .skip(query.page.saturating_mul(per_page))
        .take(per_page)
        .map(|i| view(i, viewer))
        .collect();
    Ok(KnowledgePage {
        items,
        total,
        page: query.page,
        per_page,
        total_pages: total.div_ceil(per_page),
    })
}

/// `GET /api/corporate-memory/stats`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Stats {
    /// Published items.
    pub knowledge_count: usize,
    /// Analysts whose notes gave a published item.
    pub contributors: usize,
    /// Published items per category (every category, zero included).
    pub categories: BTreeMap<String, usize>,
    /// When the collector last ran (RFC 3339), if it has.
    pub last_collection: Option<String>,
    pub your_votes: usize,
    pub your_upvotes: usize,
    /// Items delivered to your laptop as rules.
    pub your_rules: usize,
    /// Your items held for your review.
    pub your_held: usize,
}

pub fn stats(items: &[MemoryItem], viewer: &Viewer, last_collection_ms: Option<i64>) -> Stats {
    let published: Vec<&MemoryItem> = items.iter().filter(|i| i.state == "published").collect();
    let mut categories: BTreeMap<String, usize> =
        CATEGORIES.iter().map(|c| ((*c).to_string(), 0)).collect();
    let mut contributors = BTreeSet::new();
    for i in &published {
        *categories.entry(i.category.clone()).or_default() += 1;
        contributors.extend(i.sources.iter().filter(|s| s.clean()).map(|s| s.account_id));
    }
    Stats {
        knowledge_count: published.len(),
        contributors: contributors.len(),
        categories,
        last_collection: last_collection_ms.map(rfc3339),
        your_votes: items.iter().filter(|i| i.my_vote != 0).count(),
        your_upvotes: items.iter().filter(|i| i.my_vote == 1).count(),
        your_rules: items.iter().filter(|i| is_rule(i)).count(),
        your_held: review_queue(items, viewer).len(),
    }
}

/// A vote as `GET /api/corporate-memory/my-votes` lists it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MyVote {
    pub item_id: String,
    pub vote: i64,
    pub voted_at: String,
    /// The item's title, when the reader may still see the item.
    pub title: Option<String>,
    pub state: Option<String>,
}

pub fn my_votes(items: &[MemoryItem], viewer: &Viewer, votes: &[MemoryVote]) -> Vec<MyVote> {
    votes
        .iter()
        .map(|v| {
            let item = items
                .iter()
                .find(|i| i.id == v.item_id)
                .filter(|i| visible(i, viewer));
            MyVote {
                item_id: v.item_id.clone(),
                vote: v.vote,
                voted_at: rfc3339(v.voted_ms),
                title: item.map(|i| i.title.clone()),
                state: item.map(|i| i.state.clone()),
            }
        })
        .collect()
}

/// A finding as stored with a source (the screen's [`crate::Finding`], read back).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredFinding {
    pub kind: String,
    pub rule: String,
    /// 1-based line in the item's title and content.
    pub line: usize,
}

/// What an author may do about one of their held items.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Review {
    pub item: KnowledgeItem,
    pub findings: Vec<StoredFinding>,
    /// The author marked the lines private.
    pub private: bool,
    /// The author published it despite the findings.
    pub released: bool,
    /// Why it cannot be released, if it cannot: a secret or password must leave the notes.
    pub blocked: Option<String>,
}

/// Findings that no author may wave through.
pub fn release_blocker(findings: &[StoredFinding], private: bool) -> Option<String> {
    if private {
        return Some(
            "you marked these lines private; remove the marker in your notes to share them".into(),
        );
    }
    findings
        .iter()
        .find(|f| f.kind == "secret" || f.kind == "password")
        .map(|f| {
            format!(
                "it contains a {} (line {}); remove it from your notes and the next collection publishes the rest",
                f.rule, f.line
            )
        })
}

/// The viewer's items that the screen held (or that they released), for their review.
pub fn review_queue(items: &[MemoryItem], viewer: &Viewer) -> Vec<Review> {
    items
        .iter()
        .filter(|i| i.state != "retired")
        .filter_map(|i| {
            let mine = i.sources.iter().find(|s| s.account_id == viewer.id)?;
            if mine.findings == "[]" && !mine.private {
                return None;
            }
            // Someone else's clean copy published it: nothing for this author to decide.
            if i.state == "published" && !mine.released {
                return None;
            }
            let findings: Vec<StoredFinding> =
                serde_json::from_str(&mine.findings).unwrap_or_default();
            Some(Review {
                item: view(i, viewer),
                blocked: release_blocker(&findings, mine.private),
                findings,
                private: mine.private,
                released: mine.released,
            })
        })
        .collect()
}

/// Where a rule file goes, relative to the pull folder.
pub fn rule_path(id: &str) -> String {
    format!("rules/{id}.md")
}

/// The rule files of a reader (items loaded with their votes): one Markdown file per item.
pub fn rule_files(items: &[MemoryItem]) -> Vec<RuleFile> {
    items
        .iter()
        .filter(|i| is_rule(i) && RuleFile::valid_id(&i.id))
        .map(|i| {
            let why = if i.my_vote == 1 {
                "you upvoted it; take the vote back in the portal to drop this file"
            } else {
                "an administrator pinned it for everyone"
            };
            let tags = if i.tags.is_empty() {
                String::new()
            } else {
                format!(" · tags: {}", i.tags.join(", "))
            };
            let content = format!(
                "# {}\n\n{}\n\n---\nCorporate memory item {} · {}{tags}\nDelivered by `dataport pull` because {why}.\n",
                i.title.trim(),
                i.content.trim(),
                i.id,
                i.category,
            );
            RuleFile {
                id: i.id.clone(),
                sha256: hex::encode(Sha256::digest(content.as_bytes())),
                content,
            }
        })
        .collect()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn src(account: i64, findings: &str) -> MemorySource {
        MemorySource {
            account_id: account,
            username: format!("u{account}"),
            display_name: if account == 1 {
                "Ana Novak".into()
            } else {
                String::new()
            },
            findings: findings.into(),
            private: false,
            released: false,
            first_seen_ms: 0,
            last_seen_ms: 0,
        }
    }

    fn item(id: &str, state: &str, ups: i64, downs: i64, sources: Vec<MemorySource>) -> MemoryItem {
        MemoryItem {
            id: id.into(),
            title: format!("title of {id}"),
            content: format!("content of {id}"),
            category: "data_analysis".into(),
            tags: vec![],
            state: state.into(),
            pinned: false,
            extracted_ms: 0,
            updated_ms: 0,
            edited_by: None,
            edited_ms: None,
            retired_by: None,
            retired_ms: None,
            upvotes: ups,
            downvotes: downs,
            my_vote: 0,
            sources,
        }
    }

    fn viewer(id: i64) -> Viewer {
        Viewer {
            id,
            name: format!("u{id}"),
            ..Viewer::default()
        }
    }

    #[test]
    fn items_naming_a_withheld_table_are_their_authors_only() {
        let mut it = item("km_000000000009", "published", 0, 0, vec![src(1, "[]")]);
        it.title = "customer.c_mktsegment has five segments".into();
        let reader = Viewer {
            withheld: vec![
                "tpch.customer".into(),
                "customer.".into(),
                "c_custkey".into(),
            ],
            ..viewer(2)
        };
        assert!(!visible(&it, &reader));
        assert!(visible(
            &it,
            &Viewer {
                withheld: reader.withheld.clone(),
                ..viewer(1)
            }
        ));
        assert!(visible(&it, &viewer(2)));
        it.title = "Our customers. Count them by c_custkeys".into();
        assert!(
            visible(&it, &reader),
            "'customers.' and 'c_custkeys' are other words"
        );
        it.title = "Join on C_CUSTKEY".into();
        assert!(!visible(&it, &reader));
    }

    #[test]
    fn held_items_are_their_authors_only() {
        let held = item(
            "km_000000000001",
            "held",
            0,
            0,
            vec![src(1, r#"[{"kind":"email","rule":"email","line":2}]"#)],
        );
        assert!(visible(&held, &viewer(1)));
        assert!(!visible(&held, &viewer(2)));
        assert!(!visible(
            &held,
            &Viewer {
                admin: true,
                ..viewer(3)
            }
        ));
        let items = vec![held];
        let page = knowledge(&items, &viewer(2), &KnowledgeQuery::default()).unwrap();
        assert_eq!(page.total, 0);
        let q = KnowledgeQuery {
            state: Some("held".into()),
            ..Default::default()
        };
        assert_eq!(knowledge(&items, &viewer(2), &q).unwrap().total, 0);
        assert_eq!(knowledge(&items, &viewer(1), &q).unwrap().total, 1);
        assert_eq!(review_queue(&items, &viewer(1)).len(), 1);
        assert!(review_queue(&items, &viewer(2)).is_empty());
        assert!(review_queue(&items, &viewer(1))[0].blocked.is_none());
    }

    #[test]
    fn paging_is_zero_based_with_total_pages() {
        let items: Vec<MemoryItem> = (0..45)
            .map(|n| {
                item(
                    &format!("km_{n:012}"),
                    "published",
                    n,
                    0,
                    vec![src(1, "[]")],
                )
            })
            .collect();
        let q = |page, per_page| KnowledgeQuery {
            page,
            per_page: Some(per_page),
            ..Default::default()
        };
        let p = knowledge(&items, &viewer(2), &q(0, 20)).unwrap();
        assert_eq!((p.total, p.total_pages, p.items.len()), (45, 3, 20));
        assert_eq!(p.items[0].score, 44);
        let last = knowledge(&items, &viewer(2), &q(2, 20)).unwrap();
        assert_eq!(last.items.len(), 5);
        assert!(
            knowledge(&items, &viewer(2), &q(3, 20))
                .unwrap()
                .items
                .is_empty()
        );
        assert!(knowledge(&items, &viewer(2), &q(0, 101)).is_err());
        assert!(knowledge(&items, &viewer(2), &q(0, 0)).is_err());
        assert_eq!(
            knowledge(&[], &viewer(2), &q(0, 20)).unwrap().total_pages,
            0
        );
    }

    #[test]
    fn sorts_filters_and_search() {
        let mut a = item(
            "km_00000000000a",
            "published",
            1,
            0,
            vec![src(1, "[]"), src(2, "[]"), src(3, "[]")],
        );
        a.title = "Refunds in orders".into();
        a.content = "orders.status 7 means refunded".into();
        a.updated_ms = 10;
        let mut b = item("km_00000000000b", "published", 5, 1, vec![src(1, "[]")]);
        b.updated_ms = 30;
        b.category = "workflow".into();
        let mut c = item("km_00000000000c", "published", 0, 3, vec![src(2, "[]")]);
        c.updated_ms = 20;
        c.content = "join orders to customers on custkey".into();
        let items = vec![a, b, c];
        let ids = |sort, search: Option<&str>| {
            let q = KnowledgeQuery {
                sort,
                search: search.map(str::to_string),
                ..Default::default()
            };
            knowledge(&items, &viewer(9), &q)
                .unwrap()
                .items
                .into_iter()
                .map(|i| i.id[13..].to_string())
                .collect::<Vec<_>>()
        };
        assert_eq!(ids(None, None), ["0b", "0a", "0c"]);
        assert_eq!(ids(Some(Sort::UpdatedAt), None), ["0b", "0c", "0a"]);
        assert_eq!(ids(Some(Sort::Contributors), None), ["0a", "0b", "0c"]);
        assert_eq!(ids(None, Some("refunded orders")), ["0a", "0c"]);
        assert_eq!(ids(Some(Sort::Score), Some("orders")), ["0a", "0c"]);
        let q = KnowledgeQuery {
            category: Some("workflow".into()),
            ..Default::default()
        };
        assert_eq!(knowledge(&items, &viewer(9), &q).unwrap().total, 1);
        let q = KnowledgeQuery {
            category: Some("gossip".into()),
            ..Default::default()
        };
        assert!(knowledge(&items, &viewer(9), &q).is_err());
        let view = view(&items[0], &viewer(9));
        assert_eq!(view.source_users, ["u1", "u2", "u3"]);
        assert_eq!(view.source_users_display, "Ana Novak, u2, u3");
    }

    #[test]
    fn rules_are_upvoted_or_pinned_published_items() {
        let mut up = item("km_0000000000aa", "published", 1, 0, vec![src(1, "[]")]);
        up.my_vote = 1;
        let mut pinned = item("km_0000000000bb", "published", 0, 0, vec![src(1, "[]")]);
        pinned.pinned = true;
        let mut down = item("km_0000000000cc", "published", 0, 1, vec![src(1, "[]")]);
        down.my_vote = -1;
        let mut retired = item("km_0000000000dd", "retired", 1, 0, vec![]);
        retired.my_vote = 1;
        let items = vec![up, pinned, down, retired];
        let rules = rule_files(&items);
        let ids: Vec<&str> = rules.iter().map(|r| r.id.as_str()).collect();
        assert_eq!(ids, ["km_0000000000aa", "km_0000000000bb"]);
        assert!(rules[0].content.starts_with("# title of km_0000000000aa\n"));
        assert!(rules[1].content.contains("pinned"));
        assert_eq!(
            rules[0].sha256,
            hex::encode(Sha256::digest(rules[0].content.as_bytes()))
        );
        let s = stats(&items, &viewer(1), Some(0));
        assert_eq!(
            (
                s.knowledge_count,
                s.your_rules,
                s.your_upvotes,
                s.your_votes
            ),
            (3, 2, 2, 3)
        );
        assert_eq!(s.last_collection.as_deref(), Some("1970-01-01T00:00:00Z"));
        assert_eq!(s.categories.len(), CATEGORIES.len());
    }

    #[test]
    fn secrets_and_private_lines_cannot_be_released() {
        let f = |kind: &str| StoredFinding {
            kind: kind.into(),
            rule: "r".into(),
            line: 1,
        };
        assert!(release_blocker(&[f("secret")], false).is_some());
        assert!(release_blocker(&[f("password")], false).is_some());
        assert!(release_blocker(&[f("email"), f("random_string")], false).is_none());
        assert!(release_blocker(&[], true).is_some());
    }
}
