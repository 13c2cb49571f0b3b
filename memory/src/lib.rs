//! Corporate memory: what analysts learn about the data, as knowledge items the team votes on.
//!
//! This crate owns the item model (ids, categories), the offline extractor that turns a notes
//! file into items (headings and bullet points), the sensitive-content screen that holds an
//! item back from everyone but its author, and the ranked full-text search over items (BM25).
//! It is being built for issue 29: the collector job, the LLM client, votes, the knowledge API
//! and rule files for laptops come next.
//!
//! It must not know HTTP serving, DataFusion or the catalog; the state store keeps what it
//! decides.

pub mod extract;
pub mod item;
pub mod screen;
pub mod search;

pub use extract::extract_offline;
pub use item::{CATEGORIES, Category, Item, item_id};
pub use screen::{Finding, FindingKind, screen};
pub use search::{Doc, Index};
