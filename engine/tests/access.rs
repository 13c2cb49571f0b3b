//! Table access: group rules, grants with row filters and hidden columns, and that a table a
//! principal may not read is indistinguishable from one that does not exist.

use dataport_common::HasKind as _;
use std::sync::{Arc, Mutex};

use arrow::array::{Array, Int64Array};
use dataport_auth::{Grant, GrantSource, Principal};
use dataport_engine::{Engine, EngineError, QueryRequest, RequestContext, Surface};
use futures::TryStreamExt;

use crate::common::{engine_with, pretty, rows, tpch_dir};

#[derive(Debug, Default)]
struct Grants(Mutex<Vec<Grant>>);

impl GrantSource for Grants {
    fn grants(&self) -> Arc<[Grant]> {
        self.0.lock().unwrap().clone().into()
    }
}

fn grant(group: &str, table: Option<&str>, filter: Option<&str>, hidden: &[&str]) -> Grant {
    Grant {
        group: group.into(),
        schema: "tpch".into(),
        table: table.map(str::to_string),
        row_filter: filter.map(str::to_string),
        hidden_columns: hidden.iter().map(|c| c.to_string()).collect(),
        created_at: 0,
        created_by: "test".into(),
    }
}

fn who(name: &str, groups: &[&str]) -> RequestContext {
    RequestContext::new(
        Principal::new(name, groups.iter().map(|g| g.to_string()).collect()),
        Surface::Internal,
        "test",
    )
}

async fn setup() -> (Engine, Arc<Grants>) {
    let grants = Arc::new(Grants::default());
    let source: Arc<dyn GrantSource> = Arc::clone(&grants) as Arc<dyn GrantSource>;
    let engine = engine_with(tpch_dir(), |o| o.grants = Some(source)).await;
    (engine, grants)
}

async fn run_as(
    engine: &Engine,
    ctx: &RequestContext,
    sql: &str,
) -> Result<Vec<arrow::array::RecordBatch>, EngineError> {
    engine
        .execute(QueryRequest::new(sql), ctx)
        .await?
        .try_collect()
        .await
}

async fn count(engine: &Engine, ctx: &RequestContext, sql: &str) -> i64 {
    let b = run_as(engine, ctx, sql).await.unwrap();
    b[0].column(0)
        .as_any()
        .downcast_ref::<Int64Array>()
        .unwrap()
        .value(0)
}

/// The error text with the table name replaced, to compare "denied" with "missing".
async fn error_shape(engine: &Engine, ctx: &RequestContext, sql: &str, name: &str) -> String {
    let e = run_as(engine, ctx, sql).await.unwrap_err();
    format!("{:?}: {}", e.kind(), e).replace(name, "<T>")
}

#[tokio::test]
async fn a_private_table_does_not_exist_for_dataread() {
    let (engine, _) = setup().await;
    let analyst = who("analyst", &["dataread"]);
    let insider = who("insider", &["dataread", "data-private"]);
    let probes = [
        "select * from tpch.<T>",
        "select * from <T>",
        "select * from \"tpch\".\"<T>\"",
        "select * from dataport.tpch.<T>",
        "with c as (select * from tpch.<T>) select count(*) from c",
        "select count(*) from (select * from tpch.<T>) s",
        "select count(*) from tpch.orders o join tpch.<T> c on o.o_custkey = c.c_custkey",
        "select n_name from tpch.nation union all select c_name from tpch.<T>",
        "select * from tpch.nation where n_nationkey in (select c_nationkey from tpch.<T>)",
        "explain select * from tpch.<T>",
        "describe tpch.<T>",
    ];
    for probe in probes {
        let denied = error_shape(
            &engine,
            &analyst,
            &probe.replace("<T>", "customer"),
            "customer",
        )
        .await;
        let missing = error_shape(
            &engine,
            &analyst,
            &probe.replace("<T>", "nosuchtab"),
            "nosuchtab",
        )
        .await;
        assert_eq!(denied, missing, "{probe}");
        assert!(
            run_as(&engine, &insider, &probe.replace("<T>", "customer"))
                .await
                .is_ok(),
            "insider: {probe}"
        );
    }
    // Listings.
    for sql in [
        "select table_name from information_schema.tables where table_schema = 'tpch'",
        "select distinct table_name from information_schema.columns where table_schema = 'tpch'",
        "show tables",
    ] {
        let listed = pretty(&run_as(&engine, &analyst, sql).await.unwrap());
        assert!(!listed.contains("customer"), "{sql}: {listed}");
        assert!(listed.contains("orders"), "{sql}: {listed}");
        let all = pretty(&run_as(&engine, &insider, sql).await.unwrap());
        assert!(all.contains("customer"), "{sql}: {all}");
    }
    let view = engine.catalog_view(&analyst);
    assert!(view.tables().all(|t| t.name() != "customer"));
    let orders = view.resolve(Some("tpch"), "orders").unwrap();
    assert!(
        view.foreign_keys(&orders)
            .iter()
            .all(|fk| fk.references.table != "customer"),
        "a key must not reveal the private table"
    );
    // No groups: nothing at all.
    let nobody = who("nobody", &[]);
    assert_eq!(engine.catalog_view(&nobody).tables().count(), 0);
    assert!(
        run_as(&engine, &nobody, "select * from tpch.nation")
            .await
            .is_err()
    );
    // Queries without tables still work for everyone.
    assert_eq!(
        count(
            &engine,
            &nobody,
            "select count(*) from (values (1), (2)) t(x)"
        )
        .await,
        2
    );
}

#[tokio::test]
async fn grants_share_rows_and_columns_partially() {
    let (engine, grants) = setup().await;
    let admin = who("admin", &["data-ops"]);
    let eu = who("eu", &["eu-analysts"]);
    grants.0.lock().unwrap().push(grant(
        "eu-analysts",
        Some("customer"),
        Some("c_nationkey = 7"),
        &["c_phone", "c_acctbal"],
    ));
    let expected = count(
        &engine,
        &admin,
        "select count(*) from tpch.customer where c_nationkey = 7",
    )
    .await;
    assert!(expected > 0);
    assert_eq!(
        count(&engine, &eu, "select count(*) from tpch.customer").await,
        expected
    );
    // Aggregates and joins see the filtered rows only.
    let nations = run_as(
        &engine,
        &eu,
        "select distinct c_nationkey from tpch.customer",
    )
    .await
    .unwrap();
    assert_eq!(rows(&nations), 1);
    let joined = count(
        &engine,
        &eu,
        "select count(*) from tpch.customer c join tpch.customer d on c.c_custkey = d.c_custkey",
    )
    .await;
    assert_eq!(joined, expected);
    // A filter the user writes cannot widen the share.
    assert_eq!(
        count(
            &engine,
            &eu,
            "select count(*) from tpch.customer where c_nationkey <> 7 or true"
        )
        .await,
        expected
    );
    // Hidden columns are gone from results, metadata and name resolution.
    let star = run_as(&engine, &eu, "select * from tpch.customer limit 1")
        .await
        .unwrap();
    let names: Vec<String> = star[0]
        .schema()
        .fields()
        .iter()
        .map(|f| f.name().clone())
        .collect();
    assert!(
        !names.contains(&"c_phone".to_string()) && names.contains(&"c_name".to_string()),
        "{names:?}"
    );
    assert!(
        run_as(&engine, &eu, "select c_phone from tpch.customer")
            .await
            .is_err()
    );
    assert!(
        run_as(&engine, &eu, "select sum(c_acctbal) from tpch.customer")
            .await
            .is_err()
    );
    let columns = pretty(
        &run_as(
            &engine,
            &eu,
            "select column_name from information_schema.columns where table_name = 'customer'",
        )
        .await
        .unwrap(),
    );
    assert!(
        !columns.contains("c_phone") && columns.contains("c_name"),
        "{columns}"
    );
    let view = engine.catalog_view(&eu);
    let t = view.resolve(Some("tpch"), "customer").unwrap();
    assert!(view.is_restricted(&t));
    assert!(
        view.visible_schema(&t)
            .field_with_name("c_acctbal")
            .is_err()
    );
    // Only the granted table: orders stays invisible to this group.
    assert!(view.resolve(Some("tpch"), "orders").is_err());

    // A second, unfiltered grant with fewer hidden columns: all rows, and still no column
    // that either grant hides.
    grants.0.lock().unwrap().push(grant(
        "eu-analysts",
        None,
        Some("c_nationkey = 8"),
        &["c_phone"],
    ));
    let both = count(
        &engine,
        &admin,
        "select count(*) from tpch.customer where c_nationkey in (7, 8)",
    )
    .await;
    assert_eq!(
        count(&engine, &eu, "select count(*) from tpch.customer").await,
        both
    );
    assert!(
        run_as(&engine, &eu, "select sum(c_acctbal) from tpch.customer")
            .await
            .is_err()
    );
    // The schema-wide grant opens the other tables, filtered by the same predicate, which
    // does not fit them: they are withheld rather than shown unfiltered.
    let view = engine.catalog_view(&eu);
    assert!(view.resolve(Some("tpch"), "orders").is_err());

    // A whole-table grant wins.
    grants
        .0
        .lock()
        .unwrap()
        .push(grant("eu-analysts", Some("customer"), None, &[]));
    let total = count(&engine, &admin, "select count(*) from tpch.customer").await;
    // (replaces nothing: the last push is a separate grant on the same table)
    assert_eq!(
        count(&engine, &eu, "select count(*) from tpch.customer").await,
        total
    );
    let star = run_as(&engine, &eu, "select c_phone from tpch.customer limit 1")
        .await
        .unwrap();
    assert_eq!(star[0].column(0).len(), 1);
}

#[tokio::test]
async fn a_grant_that_does_not_fit_withholds_the_table() {
    let (engine, grants) = setup().await;
    let g = who("g", &["g"]);
    grants
        .0
        .lock()
        .unwrap()
        .push(grant("g", Some("nation"), Some("no_such_column = 1"), &[]));
    assert!(
        engine
            .catalog_view(&g)
            .resolve(Some("tpch"), "nation")
            .is_err()
    );
    let denied = error_shape(&engine, &g, "select * from tpch.nation", "nation").await;
    let missing = error_shape(&engine, &g, "select * from tpch.nosuch", "nosuch").await;
    assert_eq!(denied, missing);
}

#[test]
fn row_filters_are_checked_for_grants() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let (engine, _) = runtime.block_on(setup());
    let snapshot = engine.catalog().snapshot();
    let customer = snapshot.table("tpch", "customer").unwrap();
    dataport_engine::check_row_filter(customer, "c_nationkey = 7 and c_mktsegment <> 'X'").unwrap();
    for bad in [
        "nosuch = 1",
        "c_nationkey",
        "c_nationkey = (select 1)",
        "count(*) > 1",
        "c_nationkey = $1",
        "c_nationkey = ",
    ] {
        assert!(
            dataport_engine::check_row_filter(customer, bad).is_err(),
            "{bad} accepted"
        );
    }
}

#[tokio::test]
async fn restricted_sync_copies_go_once_no_grant_lists_them() {
    use dataport_engine::sync::{SyncFiles, SyncSettings};
    use std::time::Duration;
    let (engine, grants) = setup().await;
    grants.0.lock().unwrap().push(grant(
        "share",
        Some("customer"),
        Some("c_nationkey = 7"),
        &["c_phone"],
    ));
    let tmp = tempfile::tempdir().unwrap();
    let state = Arc::new(dataport_state::StateStore::open(tmp.path()).unwrap());
    let sync = SyncFiles::new(state, tmp.path());
    let share = who("share-user", &["share"]);
    let manifest = sync
        .manifest(&engine.catalog_view(&share), &SyncSettings::default())
        .await
        .unwrap();
    assert!(manifest.tables[0].restricted);
    let copy = tmp.path().join(&manifest.tables[0].files[0].path);
    assert!(copy.is_file());
    // still granted: kept, however old
    assert_eq!(
        sync.prune_views(&[engine.catalog_view(&share)], Duration::ZERO),
        0
    );
    assert!(copy.is_file());
    grants.0.lock().unwrap().clear();
    // no longer listed, but young: a copy being written or first downloaded stays
    assert_eq!(
        sync.prune_views(&[engine.catalog_view(&share)], Duration::from_secs(3600)),
        0
    );
    assert_eq!(
        sync.prune_views(&[engine.catalog_view(&share)], Duration::ZERO),
        1
    );
    assert!(!copy.exists());
}
