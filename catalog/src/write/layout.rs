//! [`ParquetLayout`]: the per-file column choices of a Parquet file, from a sample of its rows.

use std::sync::Arc;

use arrow::record_batch::RecordBatch;
use parquet::file::properties::DEFAULT_DICTIONARY_PAGE_SIZE_LIMIT;

/// Per-file column choices of a [`ParquetFileWriter`], beyond the properties every file
/// shares.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ParquetLayout {
    /// Top-level columns encoded without a dictionary.
    pub without_dictionary: Vec<String>,
}

impl ParquetLayout {
    /// The layout for a file whose first rows are `sample`, in row groups of `group_rows`.
    ///
    /// A column goes without a dictionary when most of its values are distinct (the
    /// dictionary would repeat them), or when its dictionary would outgrow the dictionary
    /// page within a row group: the writer would then spend a hash lookup per value only to
    /// fall back to plain encoding mid-group. The sample's second half tells how fast new
    /// values still arrive, and the row group is assumed to keep that pace, so keys that
    /// repeat (a supplier, a date) keep their dictionary and ever-new ones (an order, a
    /// comment) do not. Types the writer never gives a dictionary are left alone.
    pub fn for_sample(sample: &RecordBatch, group_rows: usize) -> Self {
        let without_dictionary = sample
            .schema()
            .fields()
            .iter()
            .zip(sample.columns())
            .filter(|(_, column)| dictionary_outgrows_page(column, group_rows))
            .map(|(field, _)| field.name().clone())
            .collect();
        Self { without_dictionary }
    }
}

/// Whether `column`'s values are mostly distinct, or, continued to `group_rows` rows at the
/// pace of the second half of the column, make a dictionary larger than the page limit.
fn dictionary_outgrows_page(column: &arrow::array::ArrayRef, group_rows: usize) -> bool {
    use arrow::datatypes::DataType;
    use arrow::row::{RowConverter, SortField};
    let n = column.len();
    let data_type = column.data_type();
    let eligible = data_type.is_primitive()
        || matches!(
            data_type,
            DataType::Utf8
                | DataType::LargeUtf8
                | DataType::Utf8View
                | DataType::Binary
                | DataType::LargeBinary
                | DataType::BinaryView
                | DataType::FixedSizeBinary(_)
        );
    if n < 2 || !eligible {
        return false;
    }
    let Ok(rows) = RowConverter::new(vec![SortField::new(data_type.clone())])
        .and_then(|c| c.convert_columns(&[Arc::clone(column)]))
    else {
        return false;
    };
    let half = n / 2;
    let mut seen = std::collections::HashSet::with_capacity(n);
    seen.extend((0..half).map(|i| rows.row(i)));
    let first_half = seen.len();
    seen.extend((half..n).map(|i| rows.row(i)));
    let distinct = seen.len();
    if distinct > n / 2 {
        return true;
    }
    let pace = (distinct - first_half) as f64 / (n - half) as f64;
    let projected = distinct as f64 + pace * group_rows.saturating_sub(n) as f64;
    // bytes per value as the column holds them: about what a dictionary entry takes
    let width = column.to_data().get_slice_memory_size().unwrap_or(0) as f64 / n as f64;
    projected * width > DEFAULT_DICTIONARY_PAGE_SIZE_LIMIT as f64
}
