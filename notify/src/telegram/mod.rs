//! Telegram: a Bot API client (`getUpdates` long polling, `sendMessage`, `sendPhoto`,
//! `answerCallbackQuery`) with the API's rate limit honoured (`429` with `retry_after`), and
//! the bot's conversation ([`bot`]). The base URL is configuration, so tests point it at a
//! double. The bot token is part of every request's URL: no URL is ever logged or put in an
//! error.

pub mod bot;
pub mod format;

use std::time::Duration;

use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

/// Attempts of one call (rate limits and server errors are retried).
const ATTEMPTS: u32 = 4;

/// How to reach the Bot API.
#[derive(Clone)]
pub struct TelegramOptions {
    /// `https://api.telegram.org` (or a test double).
    pub base_url: String,
    /// The bot's token (from BotFather); a secret.
    pub token: String,
    /// How long one `getUpdates` waits for an update.
    pub poll_timeout: Duration,
    /// The longest `retry_after` waited for; a longer one fails the call.
    pub max_retry_wait: Duration,
    /// One request's time limit (a poll gets `poll_timeout` on top).
    pub request_timeout: Duration,
}

impl std::fmt::Debug for TelegramOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TelegramOptions")
            .field("base_url", &self.base_url)
            .field("token", &"<redacted>")
            .field("poll_timeout", &self.poll_timeout)
            .finish_non_exhaustive()
    }
}

/// Why a Bot API call failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum TelegramError {
    /// The user blocked the bot (403).
    #[error("Telegram: the user blocked the bot ({description})")]
    Blocked { description: String },
    /// The chat no longer exists or the bot was removed from it.
    #[error("Telegram: the chat is gone ({description})")]
    ChatGone { description: String },
    /// Telegram refused the request (a 4xx other than the above).
    #[error("Telegram refused {method} ({code}: {description})")]
    Rejected {
        method: String,
        code: u16,
        description: String,
    },
    /// Still rate limited after the retries, or asked to wait longer than allowed.
    #[error("Telegram rate limit: retry after {retry_after} s")]
    RateLimited { retry_after: u64 },
    /// The API could not be reached, or kept failing (5xx, timeouts).
    #[error("Telegram unavailable: {message}")]
    Unavailable { message: String },
}

impl TelegramError {
    /// Telegram could not read the message's Markdown.
    pub fn is_parse_error(&self) -> bool {
        matches!(self, Self::Rejected { code: 400, description, .. }
            if description.contains("can't parse entities"))
    }

    /// The chat cannot receive messages any more: unlink it.
    pub fn unlinks(&self) -> bool {
        matches!(self, Self::Blocked { .. } | Self::ChatGone { .. })
    }
}

#[derive(Debug, Clone, Deserialize)]
pub struct Update {
    pub update_id: i64,
    #[serde(default)]
    pub message: Option<Message>,
    #[serde(default)]
    pub callback_query: Option<CallbackQuery>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Message {
    pub message_id: i64,
    pub chat: Chat,
    #[serde(default)]
    pub text: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Chat {
    pub id: i64,
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default)]
    pub username: Option<String>,
    #[serde(default)]
    pub first_name: Option<String>,
}

impl Chat {
    /// How the chat is shown: `@username`, else its first name.
    pub fn display(&self) -> String {
        match (&self.username, &self.first_name) {
            (Some(u), _) => format!("@{u}"),
            (None, Some(n)) => n.clone(),
            (None, None) => format!("chat {}", self.id),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
pub struct CallbackQuery {
    pub id: String,
    #[serde(default)]
    pub message: Option<Message>,
    #[serde(default)]
    pub data: Option<String>,
}

/// A photo to send.
#[derive(Debug, Clone)]
pub struct Photo {
    pub bytes: Vec<u8>,
    pub file_name: String,
    pub mime: &'static str,
}

#[derive(Deserialize)]
struct Answer {
    ok: bool,
    #[serde(default)]
    result: Option<Value>,
    #[serde(default)]
    error_code: Option<u16>,
    #[serde(default)]
    description: Option<String>,
    #[serde(default)]
    parameters: Option<Parameters>,
}

#[derive(Deserialize)]
struct Parameters {
    #[serde(default)]
    retry_after: Option<u64>,
}

/// A Bot API client.
#[derive(Clone)]
pub struct Telegram {
    http: reqwest::Client,
    options: TelegramOptions,
}

impl std::fmt::Debug for Telegram {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Telegram")
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

enum Body {
    Json(Value),
    Photo {
        fields: Vec<(&'static str, String)>,
        photo: Photo,
    },
}

impl Telegram {
    pub fn new(options: TelegramOptions) -> Result<Self, TelegramError> {
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .build()
            .map_err(|e| TelegramError::Unavailable {
                message: e.without_url().to_string(),
            })?;
        Ok(Self { http, options })
    }

    pub fn options(&self) -> &TelegramOptions {
        &self.options
    }

    fn url(&self, method: &str) -> String {
        format!(
            "{}/bot{}/{method}",
            self.options.base_url.trim_end_matches('/'),
            self.options.token
        )
    }

    async fn call<T: DeserializeOwned>(
        &self,
        method: &str,
        body: Body,
        timeout: Duration,
    ) -> Result<T, TelegramError> {
        let mut backoff = Duration::from_millis(500);
        let mut last = TelegramError::Unavailable {
            message: "no attempt made".into(),
        };
        for attempt in 1..=ATTEMPTS {
            let request = self.http.post(self.url(method)).timeout(timeout);
            let request = match &body {
                Body::Json(v) => request.json(v),
                Body::Photo { fields, photo } => {
                    let mut form = reqwest::multipart::Form::new();
                    for (k, v) in fields {
                        form = form.text(*k, v.clone());
                    }
                    let part = reqwest::multipart::Part::bytes(photo.bytes.clone())
                        .file_name(photo.file_name.clone())
                        .mime_str(photo.mime)
                        .map_err(|e| TelegramError::Unavailable {
                            message: e.without_url().to_string(),
                        })?;
                    request.multipart(form.part("photo", part))
                }
            };
            let wait = match request.send().await {
                Err(e) => {
                    last = TelegramError::Unavailable {
                        message: e.without_url().to_string(),
                    };
                    backoff
                }
                Ok(response) => {
                    let status = response.status().as_u16();
                    let answer: Option<Answer> = response.json().await.ok();
                    match answer {
                        Some(a) if a.ok => {
                            return serde_json::from_value(a.result.unwrap_or(Value::Null))
                                .map_err(|e| TelegramError::Unavailable {
                                    message: format!("{method}: unexpected answer: {e}"),
                                });
                        }
                        Some(a) => {
                            let code = a.error_code.unwrap_or(status);
                            let description = a.description.unwrap_or_default();
                            if code == 429 {
                                let after = a.parameters.and_then(|p| p.retry_after).unwrap_or(1);
                                last = TelegramError::RateLimited { retry_after: after };
                                if Duration::from_secs(after) > self.options.max_retry_wait {
                                    return Err(last);
                                }
                                tracing::info!(
                                    method,
                                    retry_after = after,
                                    "Telegram rate limit; waiting"
                                );
                                Duration::from_secs(after)
                            } else if code >= 500 {
                                last = TelegramError::Unavailable {
                                    message: format!("{method}: {code} {description}"),
                                };
                                backoff
                            } else {
                                return Err(classify(method, code, description));
                            }
                        }
                        None if status >= 500 || status == 429 => {
                            last = TelegramError::Unavailable {
                                message: format!("{method}: HTTP {status}"),
                            };
                            backoff
                        }
                        None => {
                            return Err(TelegramError::Rejected {
                                method: method.to_string(),
                                code: status,
                                description: "not a Bot API answer".into(),
                            });
                        }
                    }
                }
            };
            if attempt < ATTEMPTS {
                tokio::time::sleep(wait).await;
                backoff = (backoff * 2).min(Duration::from_secs(8));
            }
        }
        Err(last)
    }

    /// Updates after `offset`, waiting up to the poll timeout for one.
    pub async fn get_updates(&self, offset: i64) -> Result<Vec<Update>, TelegramError> {
        let poll = self.options.poll_timeout;
        self.call(
            "getUpdates",
            Body::Json(json!({
                "offset": offset,
                "timeout": poll.as_secs(),
                "allowed_updates": ["message", "callback_query"],
            })),
            poll + self.options.request_timeout,
        )
        .await
    }

    /// Send `text`; with `markdown`, in Telegram's Markdown. `buttons` is an inline keyboard.
    pub async fn send_message(
        &self,
        chat_id: i64,
        text: &str,
        markdown: bool,
        buttons: Option<Value>,
    ) -> Result<(), TelegramError> {
        let mut body = json!({"chat_id": chat_id, "text": text});
        if markdown {
            body["parse_mode"] = json!("Markdown");
        }
        if let Some(keyboard) = buttons {
            body["reply_markup"] = json!({"inline_keyboard": keyboard});
        }
        self.call::<Value>(
            "sendMessage",
            Body::Json(body),
            self.options.request_timeout,
        )
        .await
        .map(drop)
    }

    /// Send a photo with a caption.
    pub async fn send_photo(
        &self,
        chat_id: i64,
        photo: Photo,
        caption: &str,
        markdown: bool,
    ) -> Result<(), TelegramError> {
        let mut fields = vec![
            ("chat_id", chat_id.to_string()),
            ("caption", caption.to_string()),
        ];
        if markdown {
            fields.push(("parse_mode", "Markdown".into()));
        }
        self.call::<Value>(
            "sendPhoto",
            Body::Photo { fields, photo },
            self.options.request_timeout,
        )
        .await
        .map(drop)
    }

    /// The bot's command menu in Telegram's clients.
    pub async fn set_commands(&self, commands: &[(&str, &str)]) -> Result<(), TelegramError> {
        let list: Vec<Value> = commands
            .iter()
            .map(|(command, description)| json!({"command": command, "description": description}))
            .collect();
        self.call::<Value>(
            "setMyCommands",
            Body::Json(json!({"commands": list})),
            self.options.request_timeout,
        )
        .await
        .map(drop)
    }

    /// Remove a webhook left by another deployment (it makes `getUpdates` answer 409).
    pub async fn delete_webhook(&self) -> Result<(), TelegramError> {
        self.call::<Value>(
            "deleteWebhook",
            Body::Json(json!({"drop_pending_updates": false})),
            self.options.request_timeout,
        )
        .await
        .map(drop)
    }

    pub async fn answer_callback(&self, id: &str, text: &str) -> Result<(), TelegramError> {
        self.call::<Value>(
            "answerCallbackQuery",
            Body::Json(json!({"callback_query_id": id, "text": text})),
            self.options.request_timeout,
        )
        .await
        .map(drop)
    }

    /// Deliver a notification: a photo with the text as its caption (cut cleanly; then the
    /// whole text follows), or the text alone in messages of at most 4096 characters. When
    /// Telegram cannot parse the script's Markdown, the message goes again taken literally.
    pub async fn send_notification(
        &self,
        chat_id: i64,
        title: &str,
        message: &str,
        photo: Option<Photo>,
    ) -> Result<(), TelegramError> {
        let md = format::markdown(title, message);
        let mut rest_as_text = true;
        if let Some(photo) = photo {
            let (caption, cut) = format::caption(&md, format::CAPTION_LIMIT);
            match self
                .send_photo(chat_id, photo.clone(), &caption, true)
                .await
            {
                Err(e) if e.is_parse_error() => {
                    let (caption, _) =
                        format::caption(&format::literal(title, message), format::CAPTION_LIMIT);
                    self.send_photo(chat_id, photo, &caption, true).await?;
                }
                other => other?,
            }
            rest_as_text = cut;
        }
        if !rest_as_text {
            return Ok(());
        }
        let parts = format::split(&md, format::MESSAGE_LIMIT);
        for (i, part) in parts.iter().enumerate() {
            match self.send_message(chat_id, part, true, None).await {
                Ok(()) => {}
                Err(e) if e.is_parse_error() => {
                    // Nothing sent yet: the whole text, its message taken literally; else the
                    // rest without markup.
                    if i == 0 {
                        for p in
                            format::split(&format::literal(title, message), format::MESSAGE_LIMIT)
                        {
                            self.send_message(chat_id, &p, true, None).await?;
                        }
                    } else {
                        for p in &parts[i..] {
                            self.send_message(chat_id, p, false, None).await?;
                        }
                    }
                    return Ok(());
                }
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }
}

fn classify(method: &str, code: u16, description: String) -> TelegramError {
    let d = description.to_ascii_lowercase();
    if code == 403 && d.contains("blocked") {
        TelegramError::Blocked { description }
    } else if (code == 400 && d.contains("chat not found"))
        || (code == 403
            && (d.contains("deactivated") || d.contains("kicked") || d.contains("not a member")))
    {
        TelegramError::ChatGone { description }
    } else {
        TelegramError::Rejected {
            method: method.to_string(),
            code,
            description,
        }
    }
}
