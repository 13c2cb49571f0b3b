//! Mail from Dataport: the messages it sends (password set-up and reset links) and their
//! delivery over SMTP (plain, STARTTLS or TLS from the first byte; optional login; a private
//! CA). Without an SMTP host a [`Mailer`] writes each message to the server log at `warn`, so a
//! one-machine install still gets its links.
//!
//! It owns message wording (a plain-text and an HTML part), addresses and the SMTP session;
//! it knows nothing of accounts or tokens beyond the link and names it is given, and nothing of
//! HTTP or the state store.
//!
//! ```
//! use dataport_mail::{Mailer, MailConfig, Delivery, password_message, LinkKind};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! // No SMTP host: the message goes to the log.
//! let mailer = Mailer::new(&MailConfig::default())?;
//! let message = password_message(
//!     LinkKind::Setup,
//!     "ann@example.com",
//!     "Ann",
//!     "https://data.example.com/auth/password?token=abc",
//! );
//! assert!(message.text.contains("https://data.example.com/auth/password?token=abc"));
//! assert_eq!(mailer.send(&message).await?, Delivery::Logged);
//! # Ok(())
//! # }
//! ```

use std::path::PathBuf;
use std::time::Duration;

use dataport_common::{ErrorKind, HasKind};
use lettre::message::{Mailbox, MultiPart};
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Certificate, CertificateStore, Tls, TlsParameters};
use lettre::{AsyncSmtpTransport, AsyncTransport, Tokio1Executor};

/// How the SMTP connection is secured.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Security {
    /// Plain, then `STARTTLS`, which the server must offer (port 587).
    #[default]
    StartTls,
    /// TLS from the first byte (port 465).
    Tls,
    /// No encryption: only for a relay on the same machine or in tests.
    None,
}

impl std::str::FromStr for Security {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s.trim().to_ascii_lowercase().as_str() {
            "starttls" => Ok(Self::StartTls),
            "tls" => Ok(Self::Tls),
            "none" => Ok(Self::None),
            other => Err(format!("'{other}' is not one of starttls, tls, none")),
        }
    }
}

/// Where and how mail is sent.
#[derive(Clone, Default)]
pub struct MailConfig {
    /// The SMTP server; none: messages go to the log.
    pub host: Option<String>,
    /// Default: 587 for STARTTLS, 465 for TLS, 25 without encryption.
    pub port: Option<u16>,
    pub security: Security,
    pub user: Option<String>,
    pub password: Option<String>,
    /// The sender, `Dataport <dataport@example.com>`.
    pub from: String,
    /// PEM certificates of a private CA that signs the SMTP server's certificate (in addition
    /// to the public roots).
    pub ca_file: Option<PathBuf>,
    /// Per SMTP command.
    pub timeout: Duration,
}

impl std::fmt::Debug for MailConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MailConfig")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("security", &self.security)
            .field("user", &self.user)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .field("from", &self.from)
            .field("ca_file", &self.ca_file)
            .finish()
    }
}

/// Why mail could not be sent; the message says what to check.
#[derive(Debug, thiserror::Error)]
pub enum MailError {
    #[error("mail.from: '{from}' is not an address like 'Dataport <dataport@example.com>'")]
    From { from: String },
    #[error("'{to}' is not an email address")]
    To { to: String },
    #[error("cannot read mail.smtp_ca_file {path}: {message}")]
    Ca { path: PathBuf, message: String },
    #[error("cannot build the message: {0}")]
    Build(String),
    #[error(
        "the SMTP server {host} did not take the message: {message}; check mail.smtp_host, the port, the security mode and the credentials"
    )]
    Send { host: String, message: String },
}

impl HasKind for MailError {
    fn kind(&self) -> ErrorKind {
        match self {
            Self::To { .. } => ErrorKind::InvalidArgument,
            Self::From { .. } | Self::Ca { .. } | Self::Build(_) => ErrorKind::Internal,
            Self::Send { .. } => ErrorKind::Unavailable,
        }
    }
}

/// One message: a plain-text and an HTML part.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    pub to: String,
    pub subject: String,
    pub text: String,
    pub html: String,
}

/// What [`Mailer::send`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delivery {
    /// Handed to the SMTP server.
    Sent,
    /// No SMTP server is configured: written to the log.
    Logged,
}

/// Sends [`Message`]s. Clone it freely.
#[derive(Clone)]
pub struct Mailer {
    smtp: Option<(String, AsyncSmtpTransport<Tokio1Executor>)>,
    from: Mailbox,
}

impl std::fmt::Debug for Mailer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mailer")
            .field("smtp", &self.smtp.as_ref().map(|(host, _)| host))
            .field("from", &self.from.to_string())
            .finish()
    }
}

/// The sender when `mail.from` is not set.
pub const DEFAULT_FROM: &str = "Dataport <dataport@localhost>";

impl Mailer {
    /// Checks the configuration (the sender, the CA file) and prepares the SMTP transport; no
    /// connection is made until the first message.
    pub fn new(config: &MailConfig) -> Result<Self, MailError> {
        let from_text = if config.from.trim().is_empty() {
            DEFAULT_FROM
        } else {
            config.from.trim()
        };
        let from: Mailbox = from_text.parse().map_err(|_| MailError::From {
            from: from_text.to_string(),
        })?;
        let smtp = match config.host.as_deref().map(str::trim) {
            None | Some("") => None,
            Some(host) => Some((host.to_string(), transport(host, config)?)),
        };
        Ok(Self { smtp, from })
    }

    /// Whether messages go to an SMTP server (else to the log).
    pub fn delivers(&self) -> bool {
        self.smtp.is_some()
    }

    /// Sends `message`, or logs it at `warn` when no SMTP server is configured.
    pub async fn send(&self, message: &Message) -> Result<Delivery, MailError> {
        let Some((host, transport)) = &self.smtp else {
            tracing::warn!(
                to = %message.to,
                subject = %message.subject,
                "no SMTP server is configured (mail.smtp_host), so this message is logged instead of sent:\n{}",
                message.text
            );
            return Ok(Delivery::Logged);
        };
        let to: Mailbox = message.to.parse().map_err(|_| MailError::To {
            to: message.to.clone(),
        })?;
        let email = lettre::Message::builder()
            .from(self.from.clone())
            .to(to)
            .subject(&message.subject)
            .multipart(MultiPart::alternative_plain_html(
                message.text.clone(),
                message.html.clone(),
            ))
            .map_err(|e| MailError::Build(e.to_string()))?;
        transport.send(email).await.map_err(|e| MailError::Send {
            host: host.clone(),
            message: e.to_string(),
        })?;
        tracing::info!(to = %message.to, subject = %message.subject, "mail sent");
        Ok(Delivery::Sent)
    }
}

fn transport(
    host: &str,
    config: &MailConfig,
) -> Result<AsyncSmtpTransport<Tokio1Executor>, MailError> {
    let tls = || -> Result<TlsParameters, MailError> {
        let mut builder = TlsParameters::builder(host.to_string())
            .certificate_store(CertificateStore::WebpkiRoots);
        if let Some(path) = &config.ca_file {
            let ca = |message: String| MailError::Ca {
                path: path.clone(),
                message,
            };
            let pem = std::fs::read(path).map_err(|e| ca(e.to_string()))?;
            let cert = Certificate::from_pem(&pem).map_err(|e| ca(e.to_string()))?;
            builder = builder.add_root_certificate(cert);
        }
        builder.build_rustls().map_err(|e| MailError::Ca {
            path: config.ca_file.clone().unwrap_or_default(),
            message: e.to_string(),
        })
    };
    let (tls, default_port) = match config.security {
        Security::StartTls => (Tls::Required(tls()?), 587),
        Security::Tls => (Tls::Wrapper(tls()?), 465),
        Security::None => (Tls::None, 25),
    };
    let mut builder = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(host)
        .port(config.port.unwrap_or(default_port))
        .tls(tls)
        .timeout(Some(if config.timeout.is_zero() {
            Duration::from_secs(30)
        } else {
            config.timeout
        }));
    if let Some(user) = config.user.as_deref().filter(|u| !u.is_empty()) {
        builder = builder.credentials(Credentials::new(
            user.to_string(),
            config.password.clone().unwrap_or_default(),
        ));
    }
    Ok(builder.build())
}

/// What a password link does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinkKind {
    /// The first password of an invited account.
    Setup,
    /// A forgotten password.
    Reset,
}

/// The mail with a password link for `to` (greeted as `name`, or by the address).
pub fn password_message(kind: LinkKind, to: &str, name: &str, link: &str) -> Message {
    let greeting = if name.trim().is_empty() {
        to
    } else {
        name.trim()
    };
    let (subject, lead, action) = match kind {
        LinkKind::Setup => (
            "Your Dataport account: set your password",
            "An administrator has invited you to Dataport, the team's data server.",
            "Set your password",
        ),
        LinkKind::Reset => (
            "Reset your Dataport password",
            "Someone (we hope you) asked to reset the password of your Dataport account.",
            "Choose a new password",
        ),
    };
    let text = format!(
        "Hello {greeting},\n\n{lead}\n\n{action} here (the link works once, for one hour):\n\n{link}\n\n\
         If you did not expect this message, ignore it: nothing changes until the link is used.\n"
    );
    let html = format!(
        "<!doctype html><html><body style=\"font-family:sans-serif;line-height:1.5;color:#1f2933\">\
         <p>Hello {},</p><p>{}</p>\
         <p><a href=\"{}\" style=\"display:inline-block;padding:10px 16px;background:#1d4ed8;color:#fff;\
         border-radius:6px;text-decoration:none\">{}</a></p>\
         <p style=\"color:#52606d;font-size:90%\">The link works once, for one hour: {}</p>\
         <p style=\"color:#52606d;font-size:90%\">If you did not expect this message, ignore it: \
         nothing changes until the link is used.</p></body></html>",
        escape(greeting),
        escape(lead),
        escape(link),
        escape(action),
        escape(link),
    );
    Message {
        to: to.to_string(),
        subject: subject.to_string(),
        text,
        html,
    }
}

/// `s` safe inside HTML text and attribute values.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_message_has_the_link_in_both_parts_and_escapes_names() {
        let m = password_message(
            LinkKind::Reset,
            "ann@example.com",
            "<Ann>",
            "https://d.example.com/auth/password?token=t&x=1",
        );
        assert_eq!(m.subject, "Reset your Dataport password");
        assert!(
            m.text
                .contains("https://d.example.com/auth/password?token=t&x=1")
        );
        assert!(m.html.contains("token=t&amp;x=1"));
        assert!(m.html.contains("&lt;Ann&gt;") && !m.html.contains("<Ann>"));
        let nameless = password_message(LinkKind::Setup, "bo@x.io", " ", "l");
        assert!(nameless.text.starts_with("Hello bo@x.io,"));
    }

    #[test]
    fn the_configuration_is_checked_when_the_mailer_is_made() {
        let bad_from = MailConfig {
            from: "not an address".into(),
            ..MailConfig::default()
        };
        assert!(matches!(
            Mailer::new(&bad_from),
            Err(MailError::From { .. })
        ));
        let missing_ca = MailConfig {
            host: Some("smtp.example.com".into()),
            ca_file: Some("/nonexistent/ca.pem".into()),
            ..MailConfig::default()
        };
        assert!(matches!(
            Mailer::new(&missing_ca),
            Err(MailError::Ca { .. })
        ));
        assert!(!Mailer::new(&MailConfig::default()).unwrap().delivers());
        assert!(
            !format!(
                "{:?}",
                MailConfig {
                    password: Some("hunter2".into()),
                    ..MailConfig::default()
                }
            )
            .contains("hunter2")
        );
    }
}
