//! How file and folder names become SQL identifiers, and which names are never registered.
//!
//! Rules (documented in the README):
//! - Names starting with `.` or `_`, and names ending in `.tmp`, are temporary or private files
//!   of writers and are never registered.
//! - A table is `<table>.parquet` (the stem is the name) or a folder `<table>/`.
//! - Identifiers are lower-cased; every character other than `a-z`, `0-9` and `_` becomes `_`;
//!   a name starting with a digit gets a leading `_`. So `Sales 2024.parquet` is `sales_2024`
//!   and `2024-orders/` is `_2024_orders`.
//! - If two names map to the same identifier, the first in byte order wins and the others are
//!   reported as catalog errors (visible on `/health`).

/// True for files and folders that writers use while working, or that are private by convention.
pub fn is_ignored(name: &str) -> bool {
    name.starts_with('.') || name.starts_with('_') || name.ends_with(".tmp")
}

/// The SQL identifier for a file or folder name, or `None` if nothing usable is left.
pub fn sql_identifier(raw: &str) -> Option<String> {
    let mut out = String::with_capacity(raw.len() + 1);
    for c in raw.chars() {
        let c = c.to_ascii_lowercase();
        if c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' {
            out.push(c);
        } else {
            out.push('_');
        }
    }
    if out.is_empty() || out.chars().all(|c| c == '_') {
        return None;
    }
    if out.starts_with(|c: char| c.is_ascii_digit()) {
        out.insert(0, '_');
    }
    Some(out)
}

/// The table name for a single-file table: the identifier of the stem of `*.parquet`.
pub fn parquet_stem(file_name: &str) -> Option<&str> {
    let lower = file_name.to_ascii_lowercase();
    if lower.ends_with(".parquet") && file_name.len() > ".parquet".len() {
        Some(&file_name[..file_name.len() - ".parquet".len()])
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identifiers_are_mapped_predictably() {
        assert_eq!(sql_identifier("lineitem").as_deref(), Some("lineitem"));
        assert_eq!(sql_identifier("Sales 2024").as_deref(), Some("sales_2024"));
        assert_eq!(
            sql_identifier("2024-orders").as_deref(),
            Some("_2024_orders")
        );
        assert_eq!(sql_identifier("in.c-crm").as_deref(), Some("in_c_crm"));
        assert_eq!(sql_identifier("--"), None);
        assert_eq!(sql_identifier(""), None);
    }

    #[test]
    fn temporary_names_are_ignored() {
        assert!(is_ignored(".orders.parquet"));
        assert!(is_ignored("_staging.parquet"));
        assert!(is_ignored("orders.parquet.tmp"));
        assert!(!is_ignored("orders.parquet"));
    }

    #[test]
    fn parquet_stems() {
        assert_eq!(parquet_stem("a.parquet"), Some("a"));
        assert_eq!(parquet_stem("A.PARQUET"), Some("A"));
        assert_eq!(parquet_stem(".parquet"), None);
        assert_eq!(parquet_stem("a.csv"), None);
    }
}
