//! [`FlightSqlServer`]: the Flight SQL commands, each answered through the engine or the
//! caller's view of the catalog.

use dataport_common::ErrorKind;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use arrow::array::RecordBatch;
use arrow::datatypes::Schema;
use arrow::error::ArrowError;
use arrow::ipc::writer::IpcWriteOptions;
use arrow_flight::decode::FlightRecordBatchStream;
use arrow_flight::encode::FlightDataEncoderBuilder;
use arrow_flight::error::FlightError;
use arrow_flight::sql::metadata::{SqlInfoData, XdbcTypeInfoData};
use arrow_flight::sql::server::{FlightSqlService, PeekableFlightDataStream};
use arrow_flight::sql::{
    ActionBeginSavepointRequest, ActionBeginSavepointResult, ActionBeginTransactionRequest,
    ActionBeginTransactionResult, ActionCancelQueryRequest, ActionCancelQueryResult,
    ActionClosePreparedStatementRequest, ActionCreatePreparedStatementRequest,
    ActionCreatePreparedStatementResult, ActionCreatePreparedSubstraitPlanRequest,
    ActionEndSavepointRequest, ActionEndTransactionRequest, Any, Command, CommandGetCatalogs,
    CommandGetCrossReference, CommandGetDbSchemas, CommandGetExportedKeys, CommandGetImportedKeys,
    CommandGetPrimaryKeys, CommandGetSqlInfo, CommandGetTableTypes, CommandGetTables,
    CommandGetXdbcTypeInfo, CommandPreparedStatementQuery, CommandPreparedStatementUpdate,
    CommandStatementIngest, CommandStatementQuery, CommandStatementSubstraitPlan,
    CommandStatementUpdate, DoPutPreparedStatementResult, ProstMessageExt, SqlInfo,
    TicketStatementQuery,
};
use arrow_flight::{
    Action, ActionType, CancelFlightInfoRequest, CancelFlightInfoResult, CancelStatus, FlightData,
    FlightDescriptor, FlightEndpoint, FlightInfo, HandshakeRequest, HandshakeResponse, IpcMessage,
    SchemaAsIpc, Ticket, flight_service_server::FlightService,
};
use bytes::Bytes;
use dataport_auth::Authenticator;
use dataport_engine::telemetry::Tally;
use dataport_engine::{Engine, QueryRequest, RequestContext, Surface};
use futures::{Stream, StreamExt, TryStreamExt};
use prost::Message;
use tokio_util::sync::WaitForCancellationFutureOwned;
use tonic::{Request, Response, Status, Streaming};

use crate::FlightOptions;
use crate::auth::Caller;
use crate::doget::{Outgoing, OutgoingStream, encode_results};
use crate::error::{invalid, status_of};
use crate::metadata;
use crate::state::{Executions, PreparedStatements, RunGuard};
use crate::ticket::{QueryTicket, row_values};

/// The standard Flight action for cancelling a query (Flight RPC, not Flight SQL).
const CANCEL_FLIGHT_INFO: &str = "CancelFlightInfo";

type DoGetStream = <FlightSqlServer as FlightService>::DoGetStream;
type DoActionStream = <FlightSqlServer as FlightService>::DoActionStream;

/// The Flight SQL service over one [`Engine`]. Cheap to clone.
#[derive(Clone)]
pub struct FlightSqlServer {
    inner: Arc<Inner>,
}

struct Inner {
    engine: Engine,
    auth: Authenticator,
    options: FlightOptions,
    prepared: PreparedStatements,
    executions: Arc<Executions>,
    sql_info: SqlInfoData,
    xdbc: XdbcTypeInfoData,
}

impl std::fmt::Debug for FlightSqlServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FlightSqlServer")
            .field("options", &self.inner.options)
            .finish_non_exhaustive()
    }
}

impl FlightSqlServer {
    pub fn try_new(
        engine: Engine,
        auth: Authenticator,
        options: FlightOptions,
    ) -> Result<Self, FlightError> {
        let millis = |d: std::time::Duration| i32::try_from(d.as_millis()).unwrap_or(i32::MAX);
        let sql_info = crate::sql_info::sql_info(
            &engine.sql_functions(),
            millis(options.prepared_statement_idle),
        )?;
        let xdbc = crate::sql_info::xdbc_type_info()?;
        Ok(Self {
            inner: Arc::new(Inner {
                prepared: PreparedStatements::new(options.prepared_statement_idle),
                executions: Arc::new(Executions::default()),
                engine,
                auth,
                options,
                sql_info,
                xdbc,
            }),
        })
    }

    pub(crate) fn authenticator(&self) -> &Authenticator {
        &self.inner.auth
    }

    pub(crate) fn options(&self) -> &FlightOptions {
        &self.inner.options
    }

    pub(crate) fn engine(&self) -> &Engine {
        &self.inner.engine
    }

    /// Target size of one encoded batch: below the configured maximum message size, leaving
    /// room for the IPC header and the encoder's estimate being approximate.
    fn target_message_bytes(&self) -> usize {
        (self.inner.options.max_message_bytes / 4 * 3).max(1024)
    }

    /// Announce `ticket` and describe where to fetch it.
    fn query_info(
        &self,
        ticket: QueryTicket,
        schema: &Schema,
        descriptor: FlightDescriptor,
        ctx: &RequestContext,
    ) -> Result<Response<FlightInfo>, Status> {
        self.inner.executions.announce(&ticket.id, &ctx.principal);
        let handle = TicketStatementQuery {
            statement_handle: ticket.encode()?.into(),
        };
        let info = FlightInfo::new()
            .try_with_schema(schema)
            .map_err(|e| crate::error::internal(format!("encoding the result schema: {e}")))?
            .with_endpoint(
                FlightEndpoint::new().with_ticket(Ticket::new(handle.as_any().encode_to_vec())),
            )
            .with_descriptor(descriptor)
            .with_ordered(true);
        Ok(Response::new(info))
    }

    /// Run a ticket's query and stream its batches as Flight messages.
    async fn run(
        &self,
        ticket: QueryTicket,
        ctx: RequestContext,
    ) -> Result<Response<OutgoingStream>, Status> {
        let params = ticket.params()?;
        let guard = self.inner.executions.start(&ticket.id, &ctx.principal)?;
        let request = QueryRequest {
            sql: ticket.sql,
            params,
            max_rows: None,
        };
        let stream = self
            .engine()
            .execute(request, &ctx)
            .await
            .map_err(|e| status_of(&e, &ctx.request_id))?;
        let schema = stream.schema();
        let request_id = ctx.request_id;
        let batches = stream.map_err(move |e| status_of(&e, &request_id));
        let encoded = encode_results(schema, batches, self.target_message_bytes());
        Ok(Response::new(Box::pin(Cancellable::new(encoded, guard))))
    }

    /// `DoGet` as the messages [`crate::doget`] frames: query results without copying their
    /// buffers, every other command's result as the Flight SQL dispatcher answers it.
    pub(crate) async fn do_get_outgoing(
        &self,
        request: Request<Ticket>,
    ) -> Result<Response<OutgoingStream>, Status> {
        match crate::command::parse_command(request.get_ref().ticket.as_ref(), "the ticket")? {
            Command::TicketStatementQuery(ticket) => {
                let ctx = context(&request)?;
                self.run(QueryTicket::decode(&ticket.statement_handle)?, ctx)
                    .await
            }
            Command::CommandPreparedStatementQuery(command) => {
                let ctx = context(&request)?;
                let ticket = self.prepared_ticket(&command, &ctx)?;
                self.run(ticket, ctx).await
            }
            _ => {
                let response = FlightService::do_get(self, request).await?;
                Ok(response
                    .map(|stream| -> OutgoingStream { Box::pin(stream.map_ok(Outgoing::from)) }))
            }
        }
    }

    /// The query a prepared statement runs, with its bound values.
    fn prepared_ticket(
        &self,
        command: &CommandPreparedStatementQuery,
        ctx: &RequestContext,
    ) -> Result<QueryTicket, Status> {
        let prepared = self
            .inner
            .prepared
            .get(&command.prepared_statement_handle, &ctx.principal)?;
        QueryTicket::new(prepared.sql, &prepared.params)
    }

    /// A metadata result: its schema now, its rows at `DoGet` of the same command.
    fn metadata_info(
        &self,
        command: Any,
        batch: Result<RecordBatch, FlightError>,
        descriptor: FlightDescriptor,
    ) -> Result<Response<FlightInfo>, Status> {
        let batch = batch.map_err(metadata_error)?;
        let info = FlightInfo::new()
            .try_with_schema(&batch.schema())
            .map_err(metadata_error)?
            .with_endpoint(FlightEndpoint::new().with_ticket(Ticket::new(command.encode_to_vec())))
            .with_descriptor(descriptor)
            .with_total_records(i64::try_from(batch.num_rows()).unwrap_or(-1))
            .with_ordered(true);
        Ok(Response::new(info))
    }

    fn metadata_stream(
        &self,
        batch: Result<RecordBatch, FlightError>,
    ) -> Result<Response<DoGetStream>, Status> {
        let batch = batch.map_err(metadata_error)?;
        let stream = FlightDataEncoderBuilder::new()
            .with_schema(batch.schema())
            .with_max_flight_data_size(self.target_message_bytes())
            .build(futures::stream::iter([Ok(batch)]))
            .map_err(crate::error::internal);
        Ok(Response::new(Box::pin(stream)))
    }

    fn view(&self, ctx: &RequestContext) -> dataport_catalog::SnapshotCatalogProvider {
        self.engine().catalog_view(ctx)
    }

    /// Why an update cannot run: the policy's refusal for a statement that changes data,
    /// or a pointer to the query path for one that does not.
    async fn refuse_update(&self, sql: &str, ctx: &RequestContext) -> Status {
        match self.engine().describe(sql, &[], ctx).await {
            Err(e) => status_of(&e, &ctx.request_id),
            Ok(_) => crate::error::status(
                ErrorKind::PermissionDenied,
                "Dataport is read-only and runs no updates; this statement is a query: execute it as a query (CommandStatementQuery / cursor.execute)",
            ),
        }
    }

    /// Cancel every query named by `info`'s tickets.
    fn cancel(&self, info: &FlightInfo, ctx: &RequestContext) -> Result<CancelStatus, Status> {
        let mut status = CancelStatus::NotCancellable;
        for endpoint in &info.endpoint {
            let Some(ticket) = &endpoint.ticket else {
                continue;
            };
            let any = Any::decode(ticket.ticket.as_ref()).map_err(|_| {
                invalid("the FlightInfo to cancel has a ticket that is not a Flight SQL ticket")
            })?;
            let Some(handle) = any
                .unpack::<TicketStatementQuery>()
                .map_err(|e| invalid(format!("unreadable ticket: {e}")))?
            else {
                continue;
            };
            let ticket = QueryTicket::decode(&handle.statement_handle)?;
            if self.inner.executions.cancel(&ticket.id, &ctx.principal) == CancelStatus::Cancelled {
                tracing::info!(request_id = %ctx.request_id, query = %ticket.id, "query cancelled by the client");
                status = CancelStatus::Cancelled;
            }
        }
        Ok(status)
    }
}

fn metadata_error(e: impl std::fmt::Display) -> Status {
    crate::error::internal(format!("building a metadata result: {e}"))
}

/// The caller the interceptor authenticated, as an engine request context.
fn context<T>(request: &Request<T>) -> Result<RequestContext, Status> {
    let caller = request.extensions().get::<Caller>().ok_or_else(|| {
        crate::error::status(ErrorKind::Unauthenticated, "the call was not authenticated")
    })?;
    let context = RequestContext::new(
        caller.principal.clone(),
        Surface::Flight,
        caller.request_id.clone(),
    );
    Ok(match request.extensions().get::<Arc<Tally>>() {
        Some(tally) => context.with_tally(Arc::clone(tally)),
        None => context,
    })
}

fn ipc_schema(schema: &Schema) -> Result<Bytes, Status> {
    let IpcMessage(bytes) = SchemaAsIpc::new(schema, &IpcWriteOptions::default())
        .try_into()
        .map_err(|e: ArrowError| crate::error::internal(format!("encoding a schema: {e}")))?;
    Ok(bytes)
}

/// Messages as `FlightData`, for the generated service (which [`crate::doget`] bypasses).
fn one_flight_data_each(response: Response<OutgoingStream>) -> Response<DoGetStream> {
    response.map(|stream| -> DoGetStream { Box::pin(stream.map_ok(FlightData::from)) })
}

fn unsupported_transactions() -> Status {
    crate::error::status(
        ErrorKind::Unimplemented,
        "transactions are not supported: Dataport is read-only, and every query reads one consistent catalog snapshot",
    )
}

fn one_result(body: Vec<u8>) -> Response<DoActionStream> {
    let result = arrow_flight::Result { body: body.into() };
    Response::new(Box::pin(futures::stream::iter([Ok(result)])))
}

#[tonic::async_trait]
impl FlightSqlService for FlightSqlServer {
    type FlightService = FlightSqlServer;

    async fn do_handshake(
        &self,
        request: Request<Streaming<HandshakeRequest>>,
    ) -> Result<
        Response<Pin<Box<dyn Stream<Item = Result<HandshakeResponse, Status>> + Send>>>,
        Status,
    > {
        let ctx = context(&request)?;
        let token = self
            .inner
            .auth
            .issue(ctx.principal.clone())
            .map_err(|e| crate::error::auth_status(&e))?
            .token;
        tracing::info!(request_id = %ctx.request_id, principal = %ctx.principal.name, "flight login");
        let header = format!("Bearer {token}")
            .parse()
            .map_err(|_| crate::error::internal("token is not a valid header value"))?;
        let reply = HandshakeResponse {
            protocol_version: 0,
            payload: token.into(),
        };
        let stream: Pin<Box<dyn Stream<Item = Result<HandshakeResponse, Status>> + Send>> =
            Box::pin(futures::stream::iter([Ok(reply)]));
        let mut response = Response::new(stream);
        response.metadata_mut().insert("authorization", header);
        Ok(response)
    }

    // ---- statements --------------------------------------------------------------------

    async fn get_flight_info_statement(
        &self,
        query: CommandStatementQuery,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let ctx = context(&request)?;
        if query.transaction_id.is_some() {
            return Err(unsupported_transactions());
        }
        let described = self
            .engine()
            .describe(&query.query, &[], &ctx)
            .await
            .map_err(|e| status_of(&e, &ctx.request_id))?;
        let n = described.parameters.fields().len();
        if n > 0 {
            return Err(invalid(format!(
                "the statement has {n} parameter(s): prepare it and bind values (ADBC and JDBC do this when you pass parameters)"
            )));
        }
        let ticket = QueryTicket::new(query.query, &[])?;
        self.query_info(ticket, &described.schema, request.into_inner(), &ctx)
    }

    async fn do_get_statement(
        &self,
        ticket: TicketStatementQuery,
        request: Request<Ticket>,
    ) -> Result<Response<DoGetStream>, Status> {
        let ctx = context(&request)?;
        let ticket = QueryTicket::decode(&ticket.statement_handle)?;
        Ok(one_flight_data_each(self.run(ticket, ctx).await?))
    }

    async fn get_flight_info_prepared_statement(
        &self,
        cmd: CommandPreparedStatementQuery,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let ctx = context(&request)?;
        let prepared = self
            .inner
            .prepared
            .get(&cmd.prepared_statement_handle, &ctx.principal)?;
        let described = self
            .engine()
            .describe(&prepared.sql, &prepared.params, &ctx)
            .await
            .map_err(|e| status_of(&e, &ctx.request_id))?;
        let expected = described.parameters.fields().len();
        if expected != prepared.params.len() {
            return Err(invalid(format!(
                "the prepared statement takes {expected} parameter(s) but {} value(s) are bound; bind them with DoPut first",
                prepared.params.len()
            )));
        }
        let ticket = QueryTicket::new(prepared.sql, &prepared.params)?;
        self.query_info(ticket, &described.schema, request.into_inner(), &ctx)
    }

    async fn do_get_prepared_statement(
        &self,
        cmd: CommandPreparedStatementQuery,
        request: Request<Ticket>,
    ) -> Result<Response<DoGetStream>, Status> {
        let ctx = context(&request)?;
        let ticket = self.prepared_ticket(&cmd, &ctx)?;
        Ok(one_flight_data_each(self.run(ticket, ctx).await?))
    }

    async fn do_action_create_prepared_statement(
        &self,
        query: ActionCreatePreparedStatementRequest,
        request: Request<Action>,
    ) -> Result<ActionCreatePreparedStatementResult, Status> {
        let ctx = context(&request)?;
        if query.transaction_id.is_some() {
            return Err(unsupported_transactions());
        }
        let described = self
            .engine()
            .describe(&query.query, &[], &ctx)
            .await
            .map_err(|e| status_of(&e, &ctx.request_id))?;
        let parameter_schema = if described.parameters.fields().is_empty() {
            Bytes::new()
        } else {
            ipc_schema(&described.parameters)?
        };
        let handle = self.inner.prepared.insert(query.query, &ctx.principal);
        Ok(ActionCreatePreparedStatementResult {
            prepared_statement_handle: handle.into(),
            dataset_schema: ipc_schema(&described.schema)?,
            parameter_schema,
        })
    }

    async fn do_action_close_prepared_statement(
        &self,
        query: ActionClosePreparedStatementRequest,
        request: Request<Action>,
    ) -> Result<(), Status> {
        let ctx = context(&request)?;
        // Closing is idempotent: a handle that expired or died with a restart is closed too.
        let _ = self
            .inner
            .prepared
            .close(&query.prepared_statement_handle, &ctx.principal);
        Ok(())
    }

    async fn do_put_prepared_statement_query(
        &self,
        query: CommandPreparedStatementQuery,
        request: Request<PeekableFlightDataStream>,
    ) -> Result<DoPutPreparedStatementResult, Status> {
        let ctx = context(&request)?;
        // Check the handle before reading the values.
        self.inner
            .prepared
            .get(&query.prepared_statement_handle, &ctx.principal)?;
        let data = request.into_inner().map_err(FlightError::from);
        let mut batches = FlightRecordBatchStream::new_from_flight_data(data);
        let mut row: Option<RecordBatch> = None;
        let mut rows = 0usize;
        while let Some(batch) = batches.next().await {
            let batch = batch.map_err(|e| invalid(format!("reading parameter values: {e}")))?;
            rows += batch.num_rows();
            if rows > 1 {
                return Err(invalid(
                    "bind exactly one row of parameter values to a query (more were sent); run the statement once per row",
                ));
            }
            if batch.num_rows() == 1 {
                row = Some(batch);
            }
        }
        let values = match row {
            Some(batch) => row_values(&batch)?,
            None => {
                return Err(invalid(
                    "no parameter values were sent; bind one row with a column per parameter",
                ));
            }
        };
        self.inner
            .prepared
            .bind(&query.prepared_statement_handle, &ctx.principal, values)?;
        Ok(DoPutPreparedStatementResult {
            prepared_statement_handle: Some(query.prepared_statement_handle),
        })
    }

    // ---- writes: refused -----------------------------------------------------------------

    async fn do_put_statement_update(
        &self,
        cmd: CommandStatementUpdate,
        request: Request<PeekableFlightDataStream>,
    ) -> Result<i64, Status> {
        let ctx = context(&request)?;
        Err(self.refuse_update(&cmd.query, &ctx).await)
    }

    async fn do_put_prepared_statement_update(
        &self,
        cmd: CommandPreparedStatementUpdate,
        request: Request<PeekableFlightDataStream>,
    ) -> Result<i64, Status> {
        let ctx = context(&request)?;
        let prepared = self
            .inner
            .prepared
            .get(&cmd.prepared_statement_handle, &ctx.principal)?;
        Err(self.refuse_update(&prepared.sql, &ctx).await)
    }

    async fn do_put_statement_ingest(
        &self,
        _cmd: CommandStatementIngest,
        request: Request<PeekableFlightDataStream>,
    ) -> Result<i64, Status> {
        context(&request)?;
        Err(crate::error::status(
            ErrorKind::PermissionDenied,
            "bulk ingestion is not allowed: Dataport is read-only; data arrives through its connectors",
        ))
    }

    async fn do_put_substrait_plan(
        &self,
        _cmd: CommandStatementSubstraitPlan,
        request: Request<PeekableFlightDataStream>,
    ) -> Result<i64, Status> {
        context(&request)?;
        Err(crate::error::status(
            ErrorKind::Unimplemented,
            "Substrait plans are not supported; send SQL",
        ))
    }

    async fn get_flight_info_substrait_plan(
        &self,
        _cmd: CommandStatementSubstraitPlan,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        context(&request)?;
        Err(crate::error::status(
            ErrorKind::Unimplemented,
            "Substrait plans are not supported; send SQL",
        ))
    }

    async fn do_action_create_prepared_substrait_plan(
        &self,
        _query: ActionCreatePreparedSubstraitPlanRequest,
        request: Request<Action>,
    ) -> Result<ActionCreatePreparedStatementResult, Status> {
        context(&request)?;
        Err(crate::error::status(
            ErrorKind::Unimplemented,
            "Substrait plans are not supported; send SQL",
        ))
    }

    async fn do_action_begin_transaction(
        &self,
        _query: ActionBeginTransactionRequest,
        _request: Request<Action>,
    ) -> Result<ActionBeginTransactionResult, Status> {
        Err(unsupported_transactions())
    }

    async fn do_action_end_transaction(
        &self,
        _query: ActionEndTransactionRequest,
        _request: Request<Action>,
    ) -> Result<(), Status> {
        Err(unsupported_transactions())
    }

    async fn do_action_begin_savepoint(
        &self,
        _query: ActionBeginSavepointRequest,
        _request: Request<Action>,
    ) -> Result<ActionBeginSavepointResult, Status> {
        Err(unsupported_transactions())
    }

    async fn do_action_end_savepoint(
        &self,
        _query: ActionEndSavepointRequest,
        _request: Request<Action>,
    ) -> Result<(), Status> {
        Err(unsupported_transactions())
    }

    // ---- cancellation --------------------------------------------------------------------

    async fn do_action_cancel_query(
        &self,
        query: ActionCancelQueryRequest,
        request: Request<Action>,
    ) -> Result<ActionCancelQueryResult, Status> {
        let ctx = context(&request)?;
        let info = FlightInfo::decode(query.info.as_ref())
            .map_err(|_| invalid("CancelQuery.info is not a serialized FlightInfo"))?;
        // ActionCancelQueryResult.CancelResult numbers its values like CancelStatus.
        let status = self.cancel(&info, &ctx)?;
        Ok(ActionCancelQueryResult {
            result: status as i32,
        })
    }

    async fn do_action_fallback(
        &self,
        request: Request<Action>,
    ) -> Result<Response<DoActionStream>, Status> {
        let ctx = context(&request)?;
        let action = request.get_ref();
        if action.r#type == CANCEL_FLIGHT_INFO {
            let cancel = CancelFlightInfoRequest::decode(action.body.as_ref())
                .map_err(|_| invalid("CancelFlightInfo body is not a CancelFlightInfoRequest"))?;
            let info = cancel
                .info
                .ok_or_else(|| invalid("CancelFlightInfoRequest has no FlightInfo"))?;
            let status = self.cancel(&info, &ctx)?;
            let result = CancelFlightInfoResult {
                status: status as i32,
            };
            return Ok(one_result(result.encode_to_vec()));
        }
        Err(invalid(format!(
            "unknown action '{}'; ListActions lists the supported ones",
            action.r#type
        )))
    }

    async fn list_custom_actions(&self) -> Option<Vec<Result<ActionType, Status>>> {
        Some(vec![Ok(ActionType {
            r#type: CANCEL_FLIGHT_INFO.into(),
            description:
                "Cancel a query: request CancelFlightInfoRequest, result CancelFlightInfoResult"
                    .into(),
        })])
    }

    // ---- metadata ------------------------------------------------------------------------

    async fn get_flight_info_catalogs(
        &self,
        cmd: CommandGetCatalogs,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        context(&request)?;
        let batch = metadata::catalogs(cmd);
        self.metadata_info(cmd.as_any(), batch, request.into_inner())
    }

    async fn do_get_catalogs(
        &self,
        cmd: CommandGetCatalogs,
        request: Request<Ticket>,
    ) -> Result<Response<DoGetStream>, Status> {
        context(&request)?;
        self.metadata_stream(metadata::catalogs(cmd))
    }

    async fn get_flight_info_schemas(
        &self,
        cmd: CommandGetDbSchemas,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let ctx = context(&request)?;
        let batch = metadata::db_schemas(cmd.clone(), &self.view(&ctx));
        self.metadata_info(cmd.as_any(), batch, request.into_inner())
    }

    async fn do_get_schemas(
        &self,
        cmd: CommandGetDbSchemas,
        request: Request<Ticket>,
    ) -> Result<Response<DoGetStream>, Status> {
        let ctx = context(&request)?;
        self.metadata_stream(metadata::db_schemas(cmd, &self.view(&ctx)))
    }

    async fn get_flight_info_tables(
        &self,
        cmd: CommandGetTables,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let ctx = context(&request)?;
        let batch = metadata::tables(cmd.clone(), &self.view(&ctx));
        self.metadata_info(cmd.as_any(), batch, request.into_inner())
    }

    async fn do_get_tables(
        &self,
        cmd: CommandGetTables,
        request: Request<Ticket>,
    ) -> Result<Response<DoGetStream>, Status> {
        let ctx = context(&request)?;
        self.metadata_stream(metadata::tables(cmd, &self.view(&ctx)))
    }

    async fn get_flight_info_table_types(
        &self,
        cmd: CommandGetTableTypes,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        context(&request)?;
        let batch = metadata::table_types(cmd);
        self.metadata_info(cmd.as_any(), batch, request.into_inner())
    }

    async fn do_get_table_types(
        &self,
        cmd: CommandGetTableTypes,
        request: Request<Ticket>,
    ) -> Result<Response<DoGetStream>, Status> {
        context(&request)?;
        self.metadata_stream(metadata::table_types(cmd))
    }

    async fn get_flight_info_sql_info(
        &self,
        cmd: CommandGetSqlInfo,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        context(&request)?;
        let batch = cmd.clone().into_builder(&self.inner.sql_info).build();
        self.metadata_info(cmd.as_any(), batch, request.into_inner())
    }

    async fn do_get_sql_info(
        &self,
        cmd: CommandGetSqlInfo,
        request: Request<Ticket>,
    ) -> Result<Response<DoGetStream>, Status> {
        context(&request)?;
        self.metadata_stream(cmd.into_builder(&self.inner.sql_info).build())
    }

    async fn get_flight_info_xdbc_type_info(
        &self,
        cmd: CommandGetXdbcTypeInfo,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        context(&request)?;
        let batch = cmd.into_builder(&self.inner.xdbc).build();
        self.metadata_info(cmd.as_any(), batch, request.into_inner())
    }

    async fn do_get_xdbc_type_info(
        &self,
        cmd: CommandGetXdbcTypeInfo,
        request: Request<Ticket>,
    ) -> Result<Response<DoGetStream>, Status> {
        context(&request)?;
        self.metadata_stream(cmd.into_builder(&self.inner.xdbc).build())
    }

    async fn get_flight_info_primary_keys(
        &self,
        cmd: CommandGetPrimaryKeys,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let ctx = context(&request)?;
        let batch = metadata::primary_keys(cmd.clone(), &self.view(&ctx));
        self.metadata_info(cmd.as_any(), batch, request.into_inner())
    }

    async fn do_get_primary_keys(
        &self,
        cmd: CommandGetPrimaryKeys,
        request: Request<Ticket>,
    ) -> Result<Response<DoGetStream>, Status> {
        let ctx = context(&request)?;
        self.metadata_stream(metadata::primary_keys(cmd, &self.view(&ctx)))
    }

    async fn get_flight_info_imported_keys(
        &self,
        cmd: CommandGetImportedKeys,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let ctx = context(&request)?;
        let batch = metadata::imported_keys(cmd.clone(), &self.view(&ctx));
        self.metadata_info(cmd.as_any(), batch, request.into_inner())
    }

    async fn do_get_imported_keys(
        &self,
        cmd: CommandGetImportedKeys,
        request: Request<Ticket>,
    ) -> Result<Response<DoGetStream>, Status> {
        let ctx = context(&request)?;
        self.metadata_stream(metadata::imported_keys(cmd, &self.view(&ctx)))
    }

    async fn get_flight_info_exported_keys(
        &self,
        cmd: CommandGetExportedKeys,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let ctx = context(&request)?;
        let batch = metadata::exported_keys(cmd.clone(), &self.view(&ctx));
        self.metadata_info(cmd.as_any(), batch, request.into_inner())
    }

    async fn do_get_exported_keys(
        &self,
        cmd: CommandGetExportedKeys,
        request: Request<Ticket>,
    ) -> Result<Response<DoGetStream>, Status> {
        let ctx = context(&request)?;
        self.metadata_stream(metadata::exported_keys(cmd, &self.view(&ctx)))
    }

    async fn get_flight_info_cross_reference(
        &self,
        cmd: CommandGetCrossReference,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let ctx = context(&request)?;
        let batch = metadata::cross_reference(cmd.clone(), &self.view(&ctx));
        self.metadata_info(cmd.as_any(), batch, request.into_inner())
    }

    async fn do_get_cross_reference(
        &self,
        cmd: CommandGetCrossReference,
        request: Request<Ticket>,
    ) -> Result<Response<DoGetStream>, Status> {
        let ctx = context(&request)?;
        self.metadata_stream(metadata::cross_reference(cmd, &self.view(&ctx)))
    }

    // ---- anything else -------------------------------------------------------------------

    async fn get_flight_info_fallback(
        &self,
        cmd: Command,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        context(&request)?;
        Err(invalid(format!(
            "GetFlightInfo: '{}' is not a Flight SQL command Dataport supports",
            cmd.type_url()
        )))
    }

    async fn do_get_fallback(
        &self,
        request: Request<Ticket>,
        message: Any,
    ) -> Result<Response<DoGetStream>, Status> {
        context(&request)?;
        Err(invalid(format!(
            "DoGet: {} is not a ticket Dataport issued; use the ticket from GetFlightInfo unchanged",
            message.type_url
        )))
    }

    async fn register_sql_info(&self, _id: i32, _result: &SqlInfo) {}
}

/// A query's Flight data that ends with `CANCELLED` as soon as the query is cancelled, and
/// unregisters the execution when it ends or is dropped.
struct Cancellable<S> {
    inner: Option<S>,
    cancelled: Pin<Box<WaitForCancellationFutureOwned>>,
    _guard: RunGuard,
}

impl<S> Cancellable<S> {
    fn new(inner: S, guard: RunGuard) -> Self {
        Self {
            inner: Some(inner),
            cancelled: Box::pin(guard.token().clone().cancelled_owned()),
            _guard: guard,
        }
    }
}

impl<S, T> Stream for Cancellable<S>
where
    S: Stream<Item = Result<T, Status>> + Unpin,
{
    type Item = Result<T, Status>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if self.inner.is_none() {
            return Poll::Ready(None);
        }
        if self.cancelled.as_mut().poll(cx).is_ready() {
            // Drop the query now rather than when the client goes away.
            self.inner = None;
            return Poll::Ready(Some(Err(crate::error::status(
                ErrorKind::Cancelled,
                "the query was cancelled",
            ))));
        }
        let Some(inner) = self.inner.as_mut() else {
            return Poll::Ready(None);
        };
        let next = inner.poll_next_unpin(cx);
        if let Poll::Ready(None) = next {
            self.inner = None;
        }
        next
    }
}
