//! Raw Flight: authentication, cancellation, GetSchema/PollFlightInfo and bad input.

use std::time::Duration;

use arrow_flight::sql::{ActionCancelQueryRequest, CommandStatementQuery, ProstMessageExt};
use arrow_flight::{
    Action, CancelFlightInfoRequest, CancelFlightInfoResult, CancelStatus, FlightDescriptor,
    FlightInfo, Ticket, flight_service_client::FlightServiceClient,
};
use dataport_flight::FlightOptions;
use futures::StreamExt;
use prost::Message;
use tonic::transport::Channel;
use tonic::{Code, Request};

use crate::common::{PASSWORD, SLOW, channel, client, query, rows, start};

fn with_auth<T>(message: T, header: &str) -> Request<T> {
    let mut r = Request::new(message);
    r.metadata_mut()
        .insert("authorization", header.parse().unwrap());
    r
}

fn statement(sql: &str) -> FlightDescriptor {
    FlightDescriptor::new_cmd(
        CommandStatementQuery {
            query: sql.into(),
            transaction_id: None,
        }
        .as_any()
        .encode_to_vec(),
    )
}

async fn raw(addr: std::net::SocketAddr) -> FlightServiceClient<Channel> {
    FlightServiceClient::new(channel(addr).await)
}

#[tokio::test]
async fn basic_credentials_padded_or_not_and_bearer_tokens() {
    let server = start(FlightOptions::default()).await;
    let mut f = raw(server.addr).await;
    // admin:PASSWORD, unpadded as the ADBC Go driver sends it, and padded
    use base64::Engine as _;
    let padded = base64::engine::general_purpose::STANDARD.encode(format!("admin:{PASSWORD}"));
    let unpadded = padded.trim_end_matches('=').to_string();
    assert_ne!(
        padded, unpadded,
        "the test needs credentials whose base64 is padded"
    );
    for encoded in [unpadded, padded] {
        let header = format!("Basic {encoded}");
        let info = f
            .get_flight_info(with_auth(statement("select 1"), &header))
            .await
            .unwrap();
        assert_eq!(info.into_inner().endpoint.len(), 1);
    }
    // the handshake answers a bearer token that later calls can carry
    let mut c = client(server.addr).await;
    let token = c.token().unwrap().clone();
    assert!(rows(&query(&mut c, "select 1").await) == 1);
    let info = f
        .get_flight_info(with_auth(statement("select 1"), &format!("Bearer {token}")))
        .await
        .unwrap();
    assert_eq!(info.into_inner().endpoint.len(), 1);

    for (header, what) in [
        (None, "no credentials"),
        (Some("Basic YWRtaW46d3Jvbmc="), "wrong password"),
        (Some("Bearer dpt_bogus"), "bogus token"),
        (Some("Basic !!!"), "malformed"),
        (Some("Negotiate abc"), "unknown scheme"),
    ] {
        let request = match header {
            Some(h) => with_auth(statement("select 1"), h),
            None => Request::new(statement("select 1")),
        };
        let e = f.get_flight_info(request).await.unwrap_err();
        assert_eq!(e.code(), Code::Unauthenticated, "{what}: {e}");
        assert!(!e.message().contains("YWRt"), "credentials echoed: {e}");
    }
    let e = arrow_flight::sql::client::FlightSqlServiceClient::new(channel(server.addr).await)
        .handshake("admin", "wrong")
        .await
        .unwrap_err();
    assert!(e.to_string().contains("wrong user name or password"), "{e}");
    // the server still serves
    assert_eq!(rows(&query(&mut c, "select 1").await), 1);
}

async fn cancel_with_flight_info(
    f: &mut FlightServiceClient<Channel>,
    auth: &str,
    info: &FlightInfo,
) -> CancelStatus {
    let body = CancelFlightInfoRequest {
        info: Some(info.clone()),
    }
    .encode_to_vec();
    let action = Action {
        r#type: "CancelFlightInfo".into(),
        body: body.into(),
    };
    let mut results = f
        .do_action(with_auth(action, auth))
        .await
        .unwrap()
        .into_inner();
    let result = results.next().await.unwrap().unwrap();
    let decoded = CancelFlightInfoResult::decode(result.body).unwrap();
    CancelStatus::try_from(decoded.status).unwrap()
}

#[tokio::test]
async fn cancel_flight_info_stops_a_running_query() {
    let server = start(FlightOptions::default()).await;
    let c = client(server.addr).await;
    let auth = format!("Bearer {}", c.token().unwrap());
    let mut f = raw(server.addr).await;

    let info = f
        .get_flight_info(with_auth(statement(SLOW), &auth))
        .await
        .unwrap()
        .into_inner();
    let ticket = info.endpoint[0].ticket.clone().unwrap();
    let mut reader = raw(server.addr).await;
    let stream_auth = auth.clone();
    let running = tokio::spawn(async move {
        let mut s = reader
            .do_get(with_auth(ticket, &stream_auth))
            .await
            .unwrap()
            .into_inner();
        loop {
            match s.next().await {
                Some(Ok(_)) => {}
                Some(Err(e)) => return e.code(),
                None => return Code::Ok,
            }
        }
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        cancel_with_flight_info(&mut f, &auth, &info).await,
        CancelStatus::Cancelled
    );
    let code = tokio::time::timeout(Duration::from_secs(20), running)
        .await
        .expect("the cancelled stream did not end")
        .unwrap();
    assert_eq!(code, Code::Cancelled);
    // finished: nothing left to cancel
    assert_eq!(
        cancel_with_flight_info(&mut f, &auth, &info).await,
        CancelStatus::NotCancellable
    );
}

#[tokio::test]
async fn cancel_before_do_get_and_the_older_cancel_query_action() {
    let server = start(FlightOptions::default()).await;
    let c = client(server.addr).await;
    let auth = format!("Bearer {}", c.token().unwrap());
    let mut f = raw(server.addr).await;

    let info = f
        .get_flight_info(with_auth(statement(SLOW), &auth))
        .await
        .unwrap()
        .into_inner();
    let action = Action {
        r#type: "CancelQuery".into(),
        body: ActionCancelQueryRequest {
            info: info.encode_to_vec().into(),
        }
        .as_any()
        .encode_to_vec()
        .into(),
    };
    let mut results = f
        .do_action(with_auth(action, &auth))
        .await
        .unwrap()
        .into_inner();
    let body = results.next().await.unwrap().unwrap().body;
    let any = arrow_flight::sql::Any::decode(body).unwrap();
    let result: arrow_flight::sql::ActionCancelQueryResult = any.unpack().unwrap().unwrap();
    assert_eq!(result.result, 1, "CANCEL_RESULT_CANCELLED");

    let ticket = info.endpoint[0].ticket.clone().unwrap();
    let outcome = match f.do_get(with_auth(ticket, &auth)).await {
        Err(e) => e.code(),
        Ok(s) => match s.into_inner().next().await {
            Some(Err(e)) => e.code(),
            other => panic!("expected CANCELLED, got {other:?}"),
        },
    };
    assert_eq!(outcome, Code::Cancelled);
}

#[tokio::test]
async fn get_schema_and_poll_flight_info() {
    let server = start(FlightOptions::default()).await;
    let c = client(server.addr).await;
    let auth = format!("Bearer {}", c.token().unwrap());
    let mut f = raw(server.addr).await;

    let schema = f
        .get_schema(with_auth(
            statement("select n_name, n_nationkey from tpch.nation"),
            &auth,
        ))
        .await
        .unwrap()
        .into_inner();
    let schema: arrow::datatypes::Schema =
        arrow_flight::IpcMessage(schema.schema).try_into().unwrap();
    assert_eq!(schema.field(0).name(), "n_name");
    assert_eq!(schema.field(1).name(), "n_nationkey");

    let poll = f
        .poll_flight_info(with_auth(statement("select 1"), &auth))
        .await
        .unwrap()
        .into_inner();
    assert!(poll.flight_descriptor.is_none(), "complete at once");
    assert_eq!(poll.info.unwrap().endpoint.len(), 1);

    let e = f
        .get_schema(with_auth(statement("select * from tpch.nope"), &auth))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::NotFound);
}

#[tokio::test]
async fn bad_input_gets_clear_errors() {
    let server = start(FlightOptions::default()).await;
    let mut c = client(server.addr).await;
    let auth = format!("Bearer {}", c.token().unwrap());
    let mut f = raw(server.addr).await;

    // not protobuf at all
    let e = f
        .do_get(with_auth(
            Ticket::new(b"\xff\xff\xffgarbage".to_vec()),
            &auth,
        ))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument, "{e}");
    // a Flight SQL ticket whose handle is not ours
    let forged = arrow_flight::sql::TicketStatementQuery {
        statement_handle: b"not json".to_vec().into(),
    };
    let e = f
        .do_get(with_auth(
            Ticket::new(forged.as_any().encode_to_vec()),
            &auth,
        ))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument, "{e}");
    assert!(e.message().contains("ticket"), "{e}");
    // an unknown command
    let unknown = arrow_flight::sql::Any {
        type_url: "type.googleapis.com/arrow.flight.protocol.sql.CommandNope".into(),
        value: vec![1, 2, 3].into(),
    };
    let e = f
        .get_flight_info(with_auth(
            FlightDescriptor::new_cmd(unknown.encode_to_vec()),
            &auth,
        ))
        .await
        .unwrap_err();
    assert!(
        matches!(e.code(), Code::InvalidArgument | Code::Unimplemented),
        "{e}"
    );
    // an unknown action
    let e = f
        .do_action(with_auth(
            Action {
                r#type: "DropEverything".into(),
                body: Default::default(),
            },
            &auth,
        ))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument, "{e}");
    // a prepared statement handle that does not exist
    let cmd = arrow_flight::sql::CommandPreparedStatementQuery {
        prepared_statement_handle: b"ps-nope".to_vec().into(),
    };
    let e = f
        .get_flight_info(with_auth(
            FlightDescriptor::new_cmd(cmd.as_any().encode_to_vec()),
            &auth,
        ))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::NotFound, "{e}");
    // transactions are not a thing here
    let e = c.begin_transaction().await.unwrap_err();
    assert!(
        e.to_string().contains("transactions are not supported"),
        "{e}"
    );
    // and the server still serves
    assert_eq!(rows(&query(&mut c, "select 1").await), 1);
}

#[tokio::test]
async fn do_get_is_authenticated_and_framed_like_every_call() {
    let server = start(FlightOptions::default()).await;
    let c = client(server.addr).await;
    let auth = format!("Bearer {}", c.token().unwrap());
    let mut f = raw(server.addr).await;
    let sql = "select value, repeat('x', 100000) as wide from generate_series(1, 100)";
    let info = f
        .get_flight_info(with_auth(statement(sql), &auth))
        .await
        .unwrap()
        .into_inner();
    let ticket = info.endpoint[0].ticket.clone().unwrap();
    for (header, what) in [
        (None, "no credentials"),
        (Some("Bearer dpt_bogus"), "bogus token"),
    ] {
        let request = match header {
            Some(h) => with_auth(ticket.clone(), h),
            None => Request::new(ticket.clone()),
        };
        let e = f.do_get(request).await.unwrap_err();
        assert_eq!(e.code(), Code::Unauthenticated, "{what}: {e}");
    }
    // the caller's own credentials fetch the rows: 10 MB, in several messages
    let stream = f
        .do_get(with_auth(ticket, &auth))
        .await
        .unwrap()
        .into_inner();
    let messages: Vec<arrow_flight::FlightData> = stream.map(|m| m.unwrap()).collect().await;
    assert!(messages.len() > 3, "{} messages", messages.len());
    let batches = arrow_flight::utils::flight_data_to_batches(&messages).unwrap();
    let total: usize = batches.iter().map(|b| b.num_rows()).sum();
    assert_eq!(total, 100);
    assert!(messages.iter().all(|m| m.encoded_len() <= 4 << 20));
}
