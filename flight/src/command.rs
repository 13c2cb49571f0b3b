//! Reading a Flight SQL command from a descriptor or a ticket: a malformed one is the client's
//! error (`INVALID_ARGUMENT`), refused before the Flight SQL dispatcher, which would answer
//! `INTERNAL`, sees it.

use arrow_flight::sql::{Any, Command};
use prost::Message;
use tonic::Status;

use crate::error::invalid;

/// The Flight SQL command in `bytes`; a malformed one is `INVALID_ARGUMENT` naming `what`.
pub(crate) fn parse_command(bytes: &[u8], what: &str) -> Result<Command, Status> {
    let any = Any::decode(bytes).map_err(|e| {
        invalid(format!(
            "{what} is not a Flight SQL message (protobuf Any): {e}"
        ))
    })?;
    Command::try_from(any)
        .map_err(|e| invalid(format!("{what} is not a valid Flight SQL message: {e}")))
}
