//! Statements, prepared statements, parameters, types, errors and message sizes.

use std::sync::Arc;

use arrow::array::{Array, Int64Array, RecordBatch, StringArray};
use arrow::datatypes::{DataType, Field, Schema};
use arrow_flight::FlightData;
use arrow_flight::sql::{CommandStatementQuery, ProstMessageExt};
use dataport_flight::FlightOptions;
use futures::StreamExt;
use prost::Message;
use tonic::Code;

use crate::common::{SLOW, client, code_of, fetch, pretty, query, rows, start, start_with};

#[tokio::test]
async fn statement_query_returns_rows() {
    let server = start(FlightOptions::default()).await;
    let mut c = client(server.addr).await;
    let batches = query(
        &mut c,
        "select n_name from tpch.nation order by n_nationkey",
    )
    .await;
    assert_eq!(rows(&batches), 25);
    assert!(pretty(&batches).contains("ALGERIA"));
    // unqualified names resolve through the search path too
    assert_eq!(rows(&query(&mut c, "select * from region").await), 5);
}

#[tokio::test]
async fn prepared_statements_bind_parameters() {
    let server = start(FlightOptions::default()).await;
    let mut c = client(server.addr).await;

    let mut ps = c
        .prepare(
            "select n_name from tpch.nation where n_nationkey = $1 or n_name = $2".into(),
            None,
        )
        .await
        .unwrap();
    let params = ps.parameter_schema().unwrap().clone();
    assert_eq!(params.fields().len(), 2, "{params:?}");
    assert_eq!(ps.dataset_schema().unwrap().field(0).name(), "n_name");
    let schema = Arc::new(Schema::new(vec![
        Field::new("a", DataType::Int64, true),
        Field::new("b", DataType::Utf8, true),
    ]));
    let binding = RecordBatch::try_new(
        schema,
        vec![
            Arc::new(Int64Array::from(vec![1])),
            Arc::new(StringArray::from(vec!["FRANCE"])),
        ],
    )
    .unwrap();
    ps.set_parameters(binding).unwrap();
    let info = ps.execute().await.unwrap();
    let batches = fetch(&mut c, info).await;
    let text = pretty(&batches);
    assert_eq!(rows(&batches), 2, "{text}");
    assert!(
        text.contains("ARGENTINA") && text.contains("FRANCE"),
        "{text}"
    );
    ps.close().await.unwrap();

    // JDBC/ADBC style `?` placeholders
    let mut ps = c
        .prepare(
            "select count(*) as n from tpch.nation where n_regionkey = ?".into(),
            None,
        )
        .await
        .unwrap();
    let schema = Arc::new(Schema::new(vec![Field::new("p", DataType::Int64, true)]));
    ps.set_parameters(
        RecordBatch::try_new(schema, vec![Arc::new(Int64Array::from(vec![0]))]).unwrap(),
    )
    .unwrap();
    let info = ps.execute().await.unwrap();
    assert!(pretty(&fetch(&mut c, info).await).contains("| 5 |"));

    // executing without binding is a clear error, not a crash
    let mut ps = c.prepare("select $1 + 1".into(), None).await.unwrap();
    let e = ps.execute().await.unwrap_err();
    assert_eq!(code_of(&e), Code::InvalidArgument, "{e}");

    // a prepared statement without parameters
    let mut ps = c.prepare("select 42 as x".into(), None).await.unwrap();
    let info = ps.execute().await.unwrap();
    assert!(pretty(&fetch(&mut c, info).await).contains("42"));
    ps.close().await.unwrap();
}

#[tokio::test]
async fn no_view_types_on_the_wire() {
    let server = start(FlightOptions::default()).await;
    let mut c = client(server.addr).await;
    let sql = "select arrow_cast('a', 'Utf8View') as s, arrow_cast(X'01', 'BinaryView') as b, c_name from tpch.customer limit 3";
    let info = c.execute(sql.into(), None).await.unwrap();
    let announced = info.clone().try_decode_schema().unwrap();
    let batches = fetch(&mut c, info).await;
    for schema in [announced, batches[0].schema().as_ref().clone()] {
        assert_eq!(schema.field(0).data_type(), &DataType::Utf8);
        assert_eq!(schema.field(1).data_type(), &DataType::Binary);
        assert_eq!(schema.field(2).data_type(), &DataType::Utf8);
    }
}

#[tokio::test]
async fn errors_have_meaningful_codes_and_the_server_keeps_serving() {
    let server = start(FlightOptions::default()).await;
    let mut c = client(server.addr).await;
    for (sql, code) in [
        ("selec 1", Code::InvalidArgument),
        ("select 1 +", Code::InvalidArgument),
        ("select nope from tpch.nation", Code::InvalidArgument),
        ("select * from tpch.no_such_table", Code::NotFound),
        ("select * from '/etc/passwd'", Code::NotFound),
        ("create table t as select 1", Code::PermissionDenied),
        ("drop table tpch.nation", Code::PermissionDenied),
        ("copy (select 1) to '/tmp/x.csv'", Code::PermissionDenied),
        (
            "select * from read_parquet('/etc/passwd')",
            Code::PermissionDenied,
        ),
        ("select 1/0", Code::InvalidArgument),
    ] {
        let result = match c.execute(sql.into(), None).await {
            Ok(info) => {
                // errors found while running arrive on the stream
                let ticket = info.endpoint[0].ticket.clone().unwrap();
                match c.do_get(ticket).await {
                    Err(e) => Err(e),
                    Ok(mut s) => loop {
                        match s.next().await {
                            None => break Ok(()),
                            Some(Ok(_)) => {}
                            Some(Err(e)) => break Err(e),
                        }
                    },
                }
            }
            Err(e) => Err(e),
        };
        let e = result.expect_err(sql);
        assert_eq!(code_of(&e), code, "{sql}: {e}");
    }
    // prepare refuses writes with the policy error too
    let e = c
        .prepare("insert into tpch.nation values (1)".into(), None)
        .await
        .unwrap_err();
    assert_eq!(code_of(&e), Code::PermissionDenied, "{e}");
    let e = c
        .execute_update("delete from tpch.nation".into(), None)
        .await
        .unwrap_err();
    assert_eq!(code_of(&e), Code::PermissionDenied, "{e}");
    let e = c.execute_update("select 1".into(), None).await.unwrap_err();
    assert_eq!(code_of(&e), Code::PermissionDenied, "{e}");
    assert_eq!(rows(&query(&mut c, "select 1").await), 1);
}

#[tokio::test]
async fn timeouts_are_deadline_exceeded() {
    let server = start_with(FlightOptions::default(), |o| {
        o.query_timeout = std::time::Duration::from_millis(500);
    })
    .await;
    let mut c = client(server.addr).await;
    let info = c.execute(SLOW.into(), None).await.unwrap();
    let ticket = info.endpoint[0].ticket.clone().unwrap();
    let mut s = c.do_get(ticket).await.unwrap();
    let e = loop {
        match s.next().await {
            Some(Ok(_)) => {}
            Some(Err(e)) => break e,
            None => panic!("the slow query finished"),
        }
    };
    assert_eq!(code_of(&e), Code::DeadlineExceeded);
    assert_eq!(rows(&query(&mut c, "select 1").await), 1);
}

#[tokio::test]
async fn large_results_are_split_under_the_message_limit() {
    let limit = 64 * 1024;
    let server = start(FlightOptions {
        max_message_bytes: limit,
        ..FlightOptions::default()
    })
    .await;
    let mut c = client(server.addr).await;
    let sql = "select * from tpch.lineitem";
    let info = c.execute(sql.into(), None).await.unwrap();
    let ticket = info.endpoint[0].ticket.clone().unwrap();
    // read the raw messages to see their sizes
    let mut request = tonic::Request::new(ticket);
    let token = c.token().unwrap().clone();
    request
        .metadata_mut()
        .insert("authorization", format!("Bearer {token}").parse().unwrap());
    let mut stream = c.inner_mut().do_get(request).await.unwrap().into_inner();
    let (mut messages, mut biggest, mut total) = (0usize, 0usize, 0usize);
    let mut data: Vec<FlightData> = Vec::new();
    while let Some(m) = stream.next().await {
        let m = m.unwrap();
        let size = m.encoded_len();
        biggest = biggest.max(size);
        total += size;
        messages += 1;
        data.push(m);
    }
    assert!(
        total > 20 * limit,
        "the result should be much bigger than one message: {total}"
    );
    assert!(
        biggest <= limit,
        "a message of {biggest} bytes exceeds the {limit} byte limit"
    );
    assert!(messages > 20);
    let batches = arrow_flight::utils::flight_data_to_batches(&data).unwrap();
    let n: usize = batches.iter().map(|b| b.num_rows()).sum();
    let expected = query(&mut c, "select count(*) from tpch.lineitem").await;
    let count = expected[0]
        .column(0)
        .as_any()
        .downcast_ref::<Int64Array>()
        .unwrap()
        .value(0);
    assert_eq!(n as i64, count);
    assert!(batches.iter().all(|b| b.column(0).len() == b.num_rows()));
}

#[tokio::test]
async fn statement_tickets_are_self_contained() {
    let server = start(FlightOptions::default()).await;
    let mut c = client(server.addr).await;
    let info = c.execute("select 7 as x".into(), None).await.unwrap();
    // the same ticket can be fetched twice, and from another connection
    let first = fetch(&mut c, info.clone()).await;
    let mut other = client(server.addr).await;
    let second = fetch(&mut other, info).await;
    assert_eq!(pretty(&first), pretty(&second));
    // the descriptor echoes the command
    let info = c.execute("select 1".into(), None).await.unwrap();
    let cmd = info.flight_descriptor.unwrap().cmd;
    let any = arrow_flight::sql::Any::decode(cmd).unwrap();
    let q: CommandStatementQuery = any.unpack().unwrap().unwrap();
    assert_eq!(q.query, "select 1");
    let _ = q.as_any();
}
