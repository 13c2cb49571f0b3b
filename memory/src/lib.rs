//! Corporate memory: what analysts learn about the data, as knowledge items the team votes on.
//!
//! This crate owns the item model (ids, categories); the two extractors (the offline one:
//! headings and bullet points; and a client of an Anthropic-Messages-compatible API that asks a
//! model for the items of one analyst's notes, validates its answer and retries rate limits,
//! server errors and unusable answers); the sensitive-content screen that holds an item back
//! from everyone but its author; the collector that merges items by id across accounts and
//! retires those no notes hold any more; the session collector; and what readers see: the one
//! visibility rule, ranked search (BM25), votes as scores, paging, stats, authors' reviews,
//! admins' moderation and the rule files laptops pull.
//!
//! It must not know HTTP serving, DataFusion or the catalog; the state store keeps what it
//! decides.

pub mod extract;
pub mod item;
pub mod knowledge;
pub mod llm;
pub mod screen;
pub mod search;
pub mod service;

pub use extract::extract_offline;
pub use item::{CATEGORIES, Category, Item, item_id};
pub use knowledge::{KnowledgeQuery, Sort, Viewer};
pub use llm::{LlmError, LlmExtractor, LlmOptions};
pub use screen::{Finding, FindingKind, screen};
pub use search::{Doc, Index};
pub use service::{
    CollectSummary, ItemDetail, ItemEdit, Memory, MemoryError, MemoryOptions, ModerationRequest,
    MyNotes, SessionsSummary,
};
