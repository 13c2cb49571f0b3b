use super::journal::Journal;
use super::*;
use dataport_common::digest::sha256_file;
use dataport_common::fs::write_bytes_atomic;
use parquet::basic::Compression;
use std::fs;
use std::fs::File;
use std::path::Path;

use arrow::array::{Int64Array, StringArray};
use arrow::datatypes::{DataType, Field, Schema};
use arrow::record_batch::RecordBatch;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::file::reader::{FileReader, SerializedFileReader};
use std::sync::Arc;

fn sample_batch() -> RecordBatch {
    let schema = Arc::new(Schema::new(vec![
        Field::new("id", DataType::Int64, false),
        Field::new("name", DataType::Utf8, true),
    ]));
    RecordBatch::try_new(
        schema,
        vec![
            Arc::new(Int64Array::from(vec![1, 2, 3])),
            Arc::new(StringArray::from(vec![Some("a"), None, Some("c")])),
        ],
    )
    .unwrap()
}

fn dir_entries(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

#[test]
fn parquet_round_trip() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("nested/dir/t.parquet");
    let batch = sample_batch();
    let mut writer = ParquetFileWriter::try_new(&path, batch.schema()).unwrap();
    writer.write(&batch).unwrap();
    writer.write(&batch).unwrap();
    assert_eq!(writer.rows_written(), 6);
    assert!(!path.exists(), "nothing appears before finish");
    let written = writer.finish().unwrap();

    assert_eq!(written.path, path);
    assert_eq!(written.rows, 6);
    assert_eq!(written.bytes, fs::metadata(&path).unwrap().len());
    assert_eq!(dir_entries(path.parent().unwrap()), vec!["t.parquet"]);

    let reader = ParquetRecordBatchReaderBuilder::try_new(File::open(&path).unwrap())
        .unwrap()
        .build()
        .unwrap();
    let batches: Vec<RecordBatch> = reader.map(|b| b.unwrap()).collect();
    let rows: usize = batches.iter().map(RecordBatch::num_rows).sum();
    assert_eq!(rows, 6);
    assert_eq!(batches[0].schema(), batch.schema());
    assert_eq!(batches[0].slice(0, 3), batch);

    // Properties: ZSTD, page statistics (column + offset index).
    let file_reader = SerializedFileReader::new(File::open(&path).unwrap()).unwrap();
    let meta = file_reader.metadata();
    let column = meta.row_group(0).column(0);
    assert!(matches!(column.compression(), Compression::ZSTD(_)));
    assert!(column.column_index_offset().is_some());
    assert!(column.offset_index_offset().is_some());
}

fn numbers(range: std::ops::Range<i64>) -> RecordBatch {
    let schema = Arc::new(Schema::new(vec![
        Field::new("id", DataType::Int64, false),
        Field::new("name", DataType::Utf8, true),
    ]));
    RecordBatch::try_new(
        schema,
        vec![
            Arc::new(Int64Array::from_iter_values(range.clone())),
            Arc::new(StringArray::from_iter(
                range.map(|i| (i % 3 != 0).then(|| format!("n{i}"))),
            )),
        ],
    )
    .unwrap()
}

fn read_back(path: &Path) -> (Vec<i64>, Vec<usize>) {
    let file_reader = SerializedFileReader::new(File::open(path).unwrap()).unwrap();
    let groups = (0..file_reader.metadata().num_row_groups())
        .map(|i| file_reader.metadata().row_group(i).num_rows() as usize)
        .collect();
    let reader = ParquetRecordBatchReaderBuilder::try_new(File::open(path).unwrap())
        .unwrap()
        .build()
        .unwrap();
    let mut ids = Vec::new();
    for batch in reader {
        let batch = batch.unwrap();
        let column = batch
            .column(0)
            .as_any()
            .downcast_ref::<Int64Array>()
            .unwrap();
        ids.extend(column.values().iter().copied());
    }
    (ids, groups)
}

#[test]
fn writes_split_into_row_groups_of_the_set_size() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("t.parquet");
    let mut writer = ParquetFileWriter::try_new(&path, numbers(0..0).schema())
        .unwrap()
        .with_row_group_rows(40);
    writer.write(&numbers(0..25)).unwrap();
    writer.write(&numbers(25..100)).unwrap();
    let written = writer.finish().unwrap();
    assert_eq!(written.rows, 100);
    let (ids, groups) = read_back(&path);
    assert_eq!(ids, (0..100).collect::<Vec<_>>());
    assert_eq!(groups, vec![40, 40, 20]);
    assert_eq!(written.sha256, sha256_file(&path).unwrap());
}

#[test]
fn row_groups_encoded_on_other_threads_are_appended_in_order() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("t.parquet");
    let mut writer = ParquetFileWriter::try_new(&path, numbers(0..0).schema())
        .unwrap()
        .with_row_group_rows(50);
    let groups: Vec<RowGroupEncoder> = (0..3).map(|_| writer.row_group().unwrap()).collect();
    // encode them at once, finishing in reverse order
    let encoded: Vec<EncodedRowGroup> = std::thread::scope(|scope| {
        let handles: Vec<_> = groups
            .into_iter()
            .enumerate()
            .map(|(i, mut group)| {
                scope.spawn(move || {
                    let start = i as i64 * 50;
                    assert_eq!(group.room(), 50);
                    group.write(&numbers(start..start + 30)).unwrap();
                    group.write(&numbers(start + 30..start + 50)).unwrap();
                    assert_eq!(group.room(), 0);
                    let err = group.write(&numbers(0..1)).unwrap_err();
                    assert!(err.to_string().contains("at most 50 rows"), "{err}");
                    std::thread::sleep(std::time::Duration::from_millis(30 * (3 - i as u64)));
                    group.finish().unwrap()
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    for group in encoded {
        writer.append_row_group(group).unwrap();
    }
    // rows written the ordinary way follow the appended groups
    writer.write(&numbers(150..160)).unwrap();
    assert_eq!(writer.rows_written(), 160);
    let written = writer.finish().unwrap();
    assert_eq!(written.rows, 160);
    let (ids, groups) = read_back(&path);
    assert_eq!(ids, (0..160).collect::<Vec<_>>());
    assert_eq!(groups, vec![50, 50, 50, 10]);
}

#[test]
fn columns_whose_dictionary_would_not_pay_go_without() {
    use arrow::array::ArrayRef;
    let n = 65_536_i64;
    // a key of four rows each (like an order's lines), ever new
    let order = Int64Array::from_iter_values((0..n).map(|i| i / 4));
    // 5,000 keys in a scrambled order: all seen early, then only repeated
    let supplier = Int64Array::from_iter_values((0..n).map(|i| i * 7_919 % 5_000));
    // unique text
    let comment = StringArray::from_iter_values((0..n).map(|i| format!("comment {i}")));
    let flag = StringArray::from_iter_values((0..n).map(|i| ["A", "N", "R"][i as usize % 3]));
    let columns: Vec<(&str, ArrayRef)> = vec![
        ("order", Arc::new(order)),
        ("supplier", Arc::new(supplier)),
        ("comment", Arc::new(comment)),
        ("flag", Arc::new(flag)),
    ];
    let sample = RecordBatch::try_from_iter(columns).unwrap();
    let layout = ParquetLayout::for_sample(&sample, PARQUET_MAX_ROW_GROUP_ROWS);
    assert_eq!(layout.without_dictionary, ["order", "comment"]);
    // in row groups the size of the sample, the order key's dictionary fits its page
    let small = ParquetLayout::for_sample(&sample, 65_536);
    assert_eq!(small.without_dictionary, ["comment"]);
    // the choice reaches the file
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("t.parquet");
    let mut writer =
        ParquetFileWriter::try_new_with_layout(&path, sample.schema(), &layout).unwrap();
    writer.write(&sample).unwrap();
    writer.finish().unwrap();
    let reader = SerializedFileReader::new(std::fs::File::open(&path).unwrap()).unwrap();
    let group = reader.metadata().row_group(0);
    let with_dictionary: Vec<bool> = group
        .columns()
        .iter()
        .map(|c| c.dictionary_page_offset().is_some())
        .collect();
    assert_eq!(with_dictionary, [false, true, false, true]);
}

#[test]
fn a_row_group_refuses_a_batch_of_another_schema() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("t.parquet");
    let mut writer = ParquetFileWriter::try_new(&path, numbers(0..0).schema()).unwrap();
    let mut group = writer.row_group().unwrap();
    let err = group
        .write(&sample_batch().project(&[1]).unwrap())
        .unwrap_err();
    assert!(err.to_string().contains("do not match"), "{err}");
    drop(group);
    drop(writer);
    assert!(dir_entries(tmp.path()).is_empty());
}

#[test]
fn dropped_writer_leaves_no_temp_file() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("t.parquet");
    let batch = sample_batch();
    let mut writer = ParquetFileWriter::try_new(&path, batch.schema()).unwrap();
    writer.write(&batch).unwrap();
    assert_eq!(
        dir_entries(tmp.path()).len(),
        1,
        "temp file exists while writing"
    );
    assert!(dir_entries(tmp.path())[0].starts_with(".t.parquet."));
    drop(writer);
    assert!(dir_entries(tmp.path()).is_empty());
}

#[test]
fn mismatched_batch_is_an_error_and_cleans_up() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("t.parquet");
    let other = Arc::new(Schema::new(vec![Field::new("x", DataType::Utf8, false)]));
    let mut writer = ParquetFileWriter::try_new(&path, other).unwrap();
    let err = writer.write(&sample_batch()).unwrap_err();
    assert!(matches!(err, WriteError::Parquet { .. }), "{err}");
    assert!(err.to_string().contains("t.parquet"));
    drop(writer);
    assert!(dir_entries(tmp.path()).is_empty());
}

fn staged(path: &Path, batch: &RecordBatch) -> StagedFile {
    let mut w = ParquetFileWriter::try_new(path, batch.schema()).unwrap();
    w.write(batch).unwrap();
    w.finish_staged().unwrap()
}

#[test]
fn an_adopted_file_is_committed_as_it_is() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("parquet");
    let dest = root.join("s/t.parquet");
    let old = staged(&dest, &sample_batch());
    commit_table(&journal_path(&root, "s", "t"), vec![old], &[]).unwrap();

    // A complete file staged elsewhere on the same file system.
    let source = tmp.path().join("tmp/sync/part-00000.parquet");
    let mut w = ParquetFileWriter::try_new(&source, sample_batch().schema()).unwrap();
    w.write(&sample_batch()).unwrap();
    w.write(&sample_batch()).unwrap();
    let written = w.finish().unwrap();
    let bytes = fs::read(&source).unwrap();

    let adopted = StagedFile::adopt(&source, &dest).unwrap();
    assert!(!source.exists(), "the staged name is gone");
    assert_eq!(adopted.sha256(), written.sha256);
    assert_eq!(adopted.rows(), 6);
    assert_eq!(adopted.bytes(), bytes.len() as u64);
    assert_ne!(
        fs::read(&dest).unwrap(),
        bytes,
        "not in place before the commit"
    );
    commit_table(&journal_path(&root, "s", "t"), vec![adopted], &[]).unwrap();
    assert_eq!(fs::read(&dest).unwrap(), bytes);
    assert_eq!(
        dir_entries(&root.join("s")),
        vec!["t.parquet"],
        "no temporary file or journal left"
    );

    // Dropped before a commit, an adopted file leaves nothing behind.
    let mut w = ParquetFileWriter::try_new(&source, sample_batch().schema()).unwrap();
    w.write(&sample_batch()).unwrap();
    w.finish().unwrap();
    drop(StagedFile::adopt(&source, &dest).unwrap());
    assert_eq!(dir_entries(&root.join("s")), vec!["t.parquet"]);
    assert_eq!(fs::read(&dest).unwrap(), bytes);
}

#[test]
fn commit_table_puts_files_in_place_and_removes_others() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("parquet");
    let t = root.join("s/t");
    let batch = sample_batch();
    let first = staged(&t.join("2024_01.parquet"), &batch);
    assert!(!first.dest().exists(), "a staged file is not in place yet");
    commit_table(&journal_path(&root, "s", "t"), vec![first], &[]).unwrap();
    let second = staged(&t.join("2024_02.parquet"), &batch);
    commit_table(
        &journal_path(&root, "s", "t"),
        vec![second],
        &[t.join("2024_01.parquet")],
    )
    .unwrap();
    assert_eq!(dir_entries(&t), vec!["2024_02.parquet"]);
    assert_eq!(dir_entries(&root.join("s")), vec!["t"], "no journal left");
    // Files outside the journal's folder are refused.
    let outside = staged(&tmp.path().join("x.parquet"), &batch);
    let err = commit_table(&journal_path(&root, "s", "t"), vec![outside], &[]).unwrap_err();
    assert!(matches!(err, WriteError::OutsideTable { .. }), "{err}");
}

#[test]
fn recover_rolls_forward_a_dead_writers_change_and_sweeps_its_temp_files() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("parquet");
    let t = root.join("s/t");
    let batch = sample_batch();
    let old = staged(&t.join("2024_01.parquet"), &batch);
    commit_table(&journal_path(&root, "s", "t"), vec![old], &[]).unwrap();
    // A change recorded in its journal, renames not done: the writer died (its pid is
    // this process's, which recovery treats as a previous incarnation).
    let mut new = staged(&t.join("2024_02.parquet"), &batch);
    new.temp.keep();
    let record = Journal {
        pid: std::process::id(),
        renames: vec![(
            new.temp
                .path()
                .strip_prefix(root.join("s"))
                .unwrap()
                .to_path_buf(),
            PathBuf::from("t/2024_02.parquet"),
        )],
        deletes: vec![PathBuf::from("t/2024_01.parquet")],
    };
    write_bytes_atomic(
        &journal_path(&root, "s", "t"),
        &serde_json::to_vec(&record).unwrap(),
    )
    .unwrap();
    // And a stray temporary file of a dead writer with no journal.
    let mut stray = staged(&t.join("2024_09.parquet"), &batch);
    stray.temp.keep();
    drop(new);
    drop(stray);
    let report = recover(&root).unwrap();
    assert_eq!(report.completed.len(), 1);
    assert_eq!(report.removed.len(), 1);
    assert_eq!(dir_entries(&t), vec!["2024_02.parquet"]);
    assert_eq!(dir_entries(&root.join("s")), vec!["t"]);
    // Idempotent.
    assert_eq!(recover(&root).unwrap(), Recovery::default());
}
