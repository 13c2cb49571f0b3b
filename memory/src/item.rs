//! A knowledge item and its id: `km_` + the first 12 hex digits of SHA-256(title + content).

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// The categories an item may have.
pub const CATEGORIES: &[&str] = &[
    "data_analysis",
    "api_integration",
    "debugging",
    "performance",
    "workflow",
    "infrastructure",
    "business_logic",
];

/// One of [`CATEGORIES`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Category(String);

impl Category {
    /// The category named `name`, if it is one.
    pub fn parse(name: &str) -> Option<Self> {
        let name = name.trim().to_ascii_lowercase();
        CATEGORIES.contains(&name.as_str()).then_some(Self(name))
    }

    /// One of [`CATEGORIES`], named in this crate's own code.
    pub(crate) fn known(name: &'static str) -> Self {
        debug_assert!(CATEGORIES.contains(&name));
        Self(name.to_string())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// An item as extracted from one account's notes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Item {
    pub id: String,
    pub title: String,
    pub content: String,
    pub category: Category,
    pub tags: Vec<String>,
}

impl Item {
    /// An item with its id computed from `title` and `content`.
    pub fn new(title: &str, content: &str, category: Category, tags: Vec<String>) -> Self {
        Self {
            id: item_id(title, content),
            title: title.to_string(),
            content: content.to_string(),
            category,
            tags,
        }
    }
}

/// `km_` + the first 12 hex digits of SHA-256 of the title followed by the content.
pub fn item_id(title: &str, content: &str) -> String {
    let mut h = Sha256::new();
    h.update(title.as_bytes());
    h.update(content.as_bytes());
    format!("km_{}", &hex::encode(h.finalize())[..12])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_follow_the_spec() {
        // sha256("ab") = fb8e20fc2e4c3f248c60c39bd652f3c1347298bb977b8b4d5903b85055620603
        assert_eq!(item_id("a", "b"), "km_fb8e20fc2e4c");
        assert_eq!(item_id("a", "b"), item_id("", "ab"));
        assert_ne!(item_id("a", "b"), item_id("a", "c"));
    }

    #[test]
    fn categories_are_the_spec_list() {
        assert_eq!(
            Category::parse(" Business_Logic ").map(|c| c.0),
            Some("business_logic".into())
        );
        assert!(Category::parse("gossip").is_none());
    }
}
