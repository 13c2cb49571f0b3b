use dataport_common::HasKind as _;
use std::time::Duration;

use arrow::array::AsArray;
use arrow::datatypes::DataType;
use datafusion::common::ScalarValue;
use dataport_engine::{ErrorKind, Outcome, QueryRequest, Surface};
use futures::StreamExt;

use crate::common::*;

#[tokio::test]
async fn parameters_bind_positionally() {
    let engine = engine_with(tpch_dir(), |_| {}).await;
    let request = QueryRequest {
        sql: "select n_name from nation where n_nationkey = $1 or n_name = $2 order by 1".into(),
        params: vec![
            ScalarValue::Int64(Some(3)),
            ScalarValue::Utf8(Some("FRANCE".into())),
        ],
        max_rows: None,
    };
    let out = pretty(&run_request(&engine, request).await.unwrap());
    assert!(out.contains("CANADA") && out.contains("FRANCE"), "{out}");
    let wrong = QueryRequest {
        sql: "select $1 + $2".into(),
        params: vec![ScalarValue::Int64(Some(1))],
        max_rows: None,
    };
    let err = run_request(&engine, wrong).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidArgument);
    assert!(err.to_string().contains("2 parameter"), "{err}");
}

#[tokio::test]
async fn question_mark_parameters_and_describe() {
    let engine = engine_with(tpch_dir(), |_| {}).await;
    let sql = "select n_name, n_regionkey from nation where n_regionkey = ? and n_name <> ?";
    let described = engine.describe(sql, &[], &ctx()).await.unwrap();
    let names: Vec<&str> = described
        .schema
        .fields()
        .iter()
        .map(|f| f.name().as_str())
        .collect();
    assert_eq!(names, ["n_name", "n_regionkey"]);
    assert_eq!(described.schema.field(0).data_type(), &DataType::Utf8);
    let params: Vec<(&str, &DataType)> = described
        .parameters
        .fields()
        .iter()
        .map(|f| (f.name().as_str(), f.data_type()))
        .collect();
    let regionkey = described.schema.field(1).data_type();
    assert_eq!(
        params,
        [("$1", regionkey), ("$2", &DataType::Utf8)],
        "types come from the columns they are compared with"
    );
    let request = QueryRequest {
        sql: sql.into(),
        params: vec![
            ScalarValue::Int64(Some(0)),
            ScalarValue::Utf8(Some("KENYA".into())),
        ],
        max_rows: None,
    };
    assert_eq!(rows(&run_request(&engine, request).await.unwrap()), 4);
    // describe applies the same policy and resolution as execute
    let refused = engine
        .describe("drop table nation", &[], &ctx())
        .await
        .unwrap_err();
    assert_eq!(refused.kind(), ErrorKind::PermissionDenied);
    let missing = engine
        .describe("select * from nope", &[], &ctx())
        .await
        .unwrap_err();
    assert_eq!(missing.kind(), ErrorKind::NotFound);
    let mixed = engine
        .describe("select ?, $1", &[], &ctx())
        .await
        .unwrap_err();
    assert_eq!(mixed.kind(), ErrorKind::InvalidArgument);
    // describing runs nothing: only the one executed query is counted
    assert_eq!(engine.metrics().queries(Surface::Internal, Outcome::Ok), 1);
    assert!(!engine.sql_functions().numeric.is_empty());
    assert!(engine.sql_functions().string.iter().any(|f| f == "UPPER"));
}

#[tokio::test]
async fn results_never_carry_view_types() {
    let engine = engine_with(tpch_dir(), |_| {}).await;
    let stream = engine
        .execute(
            QueryRequest::new("select n_name, n_comment from tpch.nation"),
            &ctx(),
        )
        .await
        .unwrap();
    let schema = stream.schema();
    for f in schema.fields() {
        assert_eq!(f.data_type(), &DataType::Utf8, "{f:?}");
    }
    let batches: Vec<_> = stream.collect().await;
    for b in batches {
        assert_eq!(b.unwrap().schema(), schema);
    }
}

#[tokio::test]
async fn max_rows_limits_the_plan() {
    let engine = engine_with(tpch_dir(), |_| {}).await;
    let request = QueryRequest {
        sql: "select * from lineitem".into(),
        params: vec![],
        max_rows: Some(7),
    };
    assert_eq!(rows(&run_request(&engine, request).await.unwrap()), 7);
}

#[tokio::test]
async fn a_slow_query_times_out() {
    let engine = engine_with(tpch_dir(), |o| o.query_timeout = Duration::from_millis(500)).await;
    let started = std::time::Instant::now();
    let err = run(
        &engine,
        "select count(*) from lineitem a, lineitem b where a.l_orderkey + b.l_orderkey < 0",
    )
    .await
    .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::DeadlineExceeded, "{err}");
    assert!(started.elapsed() < Duration::from_secs(30));
    assert_eq!(
        engine
            .metrics()
            .queries(Surface::Internal, Outcome::Timeout),
        1
    );
    assert_eq!(engine.metrics().running(), 0);
}

/// A nested-loop join emits many batches per input batch without waiting on anything; the
/// engine makes it yield, so dropping the stream stops it and frees its memory right away
/// instead of after the whole cross product was computed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_cpu_bound_query_stops_working() {
    let engine = engine_with(tpch_dir(), |_| {}).await;
    // about ten seconds of work at this scale if nothing stops it, none of it waiting
    let sql = "select count(*) from lineitem a, lineitem b where a.l_orderkey <> b.l_orderkey";
    let mut stream = engine
        .execute(QueryRequest::new(sql), &ctx())
        .await
        .unwrap();
    // run it until the join holds its build side
    let waited = tokio::time::timeout(Duration::from_secs(60), async {
        loop {
            tokio::select! {
                next = stream.next() => panic!("the cross join finished early: {next:?}"),
                _ = tokio::time::sleep(Duration::from_millis(20)) => {}
            }
            if engine.memory_reserved() > 0 {
                break;
            }
        }
    })
    .await;
    assert!(waited.is_ok(), "the join never reserved memory");
    tokio::time::sleep(Duration::from_millis(300)).await;
    drop(stream);
    // the aborted tasks end at their next yield (within 128 batches) and release the join's
    // memory; without yielding they would hold it until the join was done
    let released = tokio::time::timeout(Duration::from_secs(5), async {
        while engine.memory_reserved() > 0 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    assert!(
        released.is_ok(),
        "the cancelled join still holds {} bytes",
        engine.memory_reserved()
    );
}

#[tokio::test]
async fn dropping_the_stream_cancels_the_query() {
    let engine = engine_with(tpch_dir(), |_| {}).await;
    let mut stream = engine
        .execute(
            QueryRequest::new("select * from lineitem a, lineitem b"),
            &ctx(),
        )
        .await
        .unwrap();
    let first = stream.next().await.unwrap().unwrap();
    assert!(first.num_rows() > 0);
    assert_eq!(engine.metrics().running(), 1);
    drop(stream);
    assert_eq!(engine.metrics().running(), 0);
    assert_eq!(
        engine
            .metrics()
            .queries(Surface::Internal, Outcome::Cancelled),
        1
    );
}

#[tokio::test]
async fn a_large_sort_spills_under_a_small_memory_limit() {
    let spill = tempfile::tempdir().unwrap();
    let spill_path = spill.path().to_path_buf();
    let engine = engine_with(tpch_dir(), move |o| {
        o.memory_limit = 8 << 20;
        o.spill_dir = spill_path;
    })
    .await;
    let out = run(
        &engine,
        "select l_orderkey, l_linenumber, l_comment from lineitem order by l_comment, l_orderkey",
    )
    .await;
    match out {
        // Completed by spilling, with every row.
        Ok(batches) => {
            let total = pretty(
                &run(&engine, "select count(*) as n from lineitem")
                    .await
                    .unwrap(),
            );
            assert!(total.contains(&format!("| {} ", rows(&batches))), "{total}");
        }
        // Or failed cleanly with a resource error; never a crash.
        Err(e) => assert_eq!(e.kind(), ErrorKind::ResourceExhausted, "{e}"),
    }
    assert_eq!(engine.memory_reserved(), 0);
}

#[tokio::test]
async fn queries_keep_their_snapshot_while_the_catalog_refreshes() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("parquet/s");
    write_table(&p.join("t/a.parquet"), &(0..1000).collect::<Vec<_>>());
    let engine = engine_with(dir.path(), |_| {}).await;
    let mut tasks = Vec::new();
    for i in 0..8 {
        let engine = engine.clone();
        tasks.push(tokio::spawn(async move {
            let n = rows(&run(&engine, "select * from s.t").await.unwrap());
            // Each query sees a whole snapshot: 1000 rows per file present when planned.
            assert!(
                n.is_multiple_of(1000) && n >= 1000,
                "query {i} saw {n} rows"
            );
            n
        }));
    }
    for i in 0..5 {
        write_table(
            &p.join(format!("t/b{i}.parquet")),
            &(0..1000).collect::<Vec<_>>(),
        );
        write_table(&p.join(format!("other{i}.parquet")), &[1]);
        engine.catalog().refresh().await.unwrap();
    }
    for t in tasks {
        t.await.unwrap();
    }
    assert_eq!(
        rows(&run(&engine, "select * from s.t").await.unwrap()),
        6000
    );
    assert_eq!(engine.catalog().snapshot().table_count(), 6);
}

/// TPC-H q18's `HAVING` subquery keeps a few orders out of millions of line items: the
/// semi-join must hash that small side, not the join of customers, orders and line items
/// (DataFusion's own estimates have no row count past a join and left it there).
#[tokio::test]
async fn a_semi_join_hashes_its_small_filtered_side() {
    let engine = engine_with(tpch_dir(), |_| {}).await;
    let sql = "explain select c_name, o_orderkey, sum(l_quantity) \
        from customer, orders, lineitem \
        where o_orderkey in (select l_orderkey from lineitem group by l_orderkey \
                             having sum(l_quantity) > 300) \
          and c_custkey = o_custkey and o_orderkey = l_orderkey \
        group by c_name, o_orderkey";
    let batches = run(&engine, sql).await.unwrap();
    let plan: String = batches
        .iter()
        .flat_map(|b| {
            let text = b.column(1).as_string::<i32>();
            (0..b.num_rows())
                .map(|i| text.value(i).to_string())
                .collect::<Vec<_>>()
        })
        .collect::<Vec<_>>()
        .join("\n");
    let lines: Vec<&str> = plan.lines().collect();
    let join = lines
        .iter()
        .position(|l| l.contains("HashJoinExec") && l.contains("Semi"))
        .unwrap_or_else(|| panic!("no semi-join in\n{plan}"));
    // The build side is the join's first input: the first scan, join or filter below it.
    let build = lines[join + 1..]
        .iter()
        .find(|l| {
            ["FilterExec", "HashJoinExec", "DataSourceExec"]
                .iter()
                .any(|op| l.contains(op))
        })
        .unwrap_or_else(|| panic!("no input under the semi-join in\n{plan}"));
    assert!(
        build.contains("FilterExec") && build.contains("sum("),
        "the semi-join builds on `{}` instead of the HAVING filter:\n{plan}",
        build.trim()
    );
}
