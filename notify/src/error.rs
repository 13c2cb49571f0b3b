//! What can go wrong with notifications, said so that the reader knows what to do.

use std::path::PathBuf;

use dataport_common::{ErrorKind, HasKind};

#[derive(Debug, thiserror::Error)]
pub enum NotifyError {
    #[error(
        "'{name}' is not a script name: use 1 to 64 letters, digits, '.', '_' or '-', not starting with '.' or '-'"
    )]
    BadName { name: String },
    #[error(
        "no script '{name}': list yours with GET /api/v1/notify/scripts or `dataport notify list`"
    )]
    NoSuchScript { name: String },
    #[error("{message}")]
    Refused { message: String },
    #[error("the script is {bytes} bytes; the limit is {limit} (notify.max_script_bytes)")]
    TooLarge { bytes: usize, limit: usize },
    #[error("no notification '{id}' of yours")]
    NoSuchNotification { id: String },
    #[error("that code is wrong or expired: send /start to the bot for a new one")]
    BadCode,
    #[error("Telegram is not configured on this server (notify.telegram_token_env)")]
    TelegramOff,
    #[error("{0}")]
    Telegram(#[from] crate::telegram::TelegramError),
    #[error("account {0} is disabled or gone")]
    NoAccount(i64),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    State(#[from] dataport_state::StateError),
    #[error(transparent)]
    Auth(#[from] dataport_auth::AuthError),
    #[error("{0}")]
    Fs(#[from] dataport_common::fs::FsError),
}

impl NotifyError {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Self::Io {
            path: path.into(),
            source,
        }
    }

    pub(crate) fn refused(message: impl Into<String>) -> Self {
        Self::Refused {
            message: message.into(),
        }
    }
}

impl HasKind for NotifyError {
    fn kind(&self) -> ErrorKind {
        match self {
            Self::BadName { .. } | Self::Refused { .. } | Self::BadCode => {
                ErrorKind::InvalidArgument
            }
            Self::TooLarge { .. } => ErrorKind::ResourceExhausted,
            Self::NoSuchScript { .. } | Self::NoSuchNotification { .. } => ErrorKind::NotFound,
            Self::TelegramOff => ErrorKind::Unavailable,
            Self::NoAccount(_) => ErrorKind::PermissionDenied,
            Self::Auth(e) => e.kind(),
            Self::Telegram(_) => ErrorKind::Unavailable,
            Self::Io { .. } | Self::State(_) | Self::Fs(_) => ErrorKind::Internal,
        }
    }
}

pub type Result<T, E = NotifyError> = std::result::Result<T, E>;
