//! The bot's side of the conversation, read by long polling (`getUpdates`):
//!
//! - `/start`: a 6-digit code, valid for 600 s, that the user enters in the portal to link
//!   this chat to their account (only its SHA-256 is kept);
//! - `/status`: which account the chat is linked to, and its scripts;
//! - `/test`: a test message, so the user sees notifications arrive;
//! - `/scripts`: the linked account's scripts, each with a "Run" button whose callback data
//!   is `run:{script}`; a button runs the script of the chat's own account only.
//!
//! Only private chats are answered. The update offset is kept in the state store, so a
//! restart neither answers an update twice nor misses one that Telegram still holds.

use std::time::Duration;

use serde_json::json;
use tokio_util::sync::CancellationToken;

use super::{CallbackQuery, Message, Telegram, TelegramError};
use crate::runner::{Notifier, Trigger};

const OFFSET_SETTING: &str = "telegram_update_offset";
/// The bot's command menu.
const COMMANDS: &[(&str, &str)] = &[
    ("start", "a code to link this chat to your Dataport account"),
    ("status", "which account this chat is linked to"),
    ("test", "send a test notification"),
    ("scripts", "your scripts, with buttons to run them"),
];
/// Telegram's limit on callback data.
const MAX_CALLBACK_DATA: usize = 64;

/// Answers the bot's updates until `cancel`.
pub async fn run(notifier: Notifier, cancel: CancellationToken) {
    let Some(telegram) = notifier.telegram().cloned() else {
        return;
    };
    let store = std::sync::Arc::clone(notifier.store());
    let mut offset: i64 = store
        .setting(OFFSET_SETTING)
        .ok()
        .flatten()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let mut backoff = Duration::from_secs(1);
    if let Err(e) = telegram.set_commands(COMMANDS).await {
        tracing::warn!(error = %e, "cannot set the Telegram bot's command menu");
    }
    tracing::info!("Telegram bot polling for updates");
    loop {
        let updates = tokio::select! {
            () = cancel.cancelled() => break,
            r = telegram.get_updates(offset) => r,
        };
        match updates {
            Ok(updates) => {
                backoff = Duration::from_secs(1);
                for update in updates {
                    offset = offset.max(update.update_id + 1);
                    // Kept before the update is handled: an update that crashes the handler
                    // is not handled again and again.
                    if let Err(e) = store.put_setting(OFFSET_SETTING, &offset.to_string()) {
                        tracing::error!(error = %e, "cannot keep the Telegram update offset");
                    }
                    if let Some(message) = update.message {
                        handle_message(&notifier, &telegram, message).await;
                    } else if let Some(query) = update.callback_query {
                        let (n, t) = (notifier.clone(), telegram.clone());
                        tokio::spawn(async move { handle_callback(&n, &t, query).await });
                    }
                }
            }
            Err(TelegramError::Rejected {
                code: 409,
                description,
                ..
            }) if description.contains("webhook") => {
                // A webhook of another deployment blocks polling: this server polls.
                tracing::warn!(
                    "a Telegram webhook is set for this bot; removing it to poll for updates"
                );
                if let Err(e) = telegram.delete_webhook().await {
                    tracing::warn!(error = %e, "cannot remove the Telegram webhook");
                    tokio::select! {
                        () = cancel.cancelled() => break,
                        () = tokio::time::sleep(backoff) => {}
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(60));
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, retry_in_s = backoff.as_secs(), "Telegram getUpdates failed");
                tokio::select! {
                    () = cancel.cancelled() => break,
                    () = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(Duration::from_secs(60));
            }
        }
    }
    tracing::info!("Telegram bot stopped");
}

/// Six random digits.
fn link_code() -> Option<String> {
    loop {
        let mut b = [0u8; 4];
        getrandom::fill(&mut b).ok()?;
        let n = u32::from_le_bytes(b);
        // Rejection keeps every code equally likely.
        if n < 4_294_000_000 {
            return Some(format!("{:06}", n % 1_000_000));
        }
    }
}

async fn reply(
    notifier: &Notifier,
    telegram: &Telegram,
    chat: i64,
    text: &str,
    buttons: Option<serde_json::Value>,
) {
    if let Err(e) = telegram.send_message(chat, text, false, buttons).await {
        tracing::warn!(error = %e, "cannot answer in Telegram");
        if e.unlinks()
            && let Ok(Some(link)) = notifier.store().telegram_link_by_chat(chat)
        {
            notifier.unlink_if_gone(link.account_id, &e);
        }
    }
}

async fn handle_message(notifier: &Notifier, telegram: &Telegram, message: Message) {
    if message.chat.kind != "private" {
        tracing::debug!(
            chat = message.chat.id,
            "Telegram message outside a private chat ignored"
        );
        return;
    }
    let chat = message.chat.id;
    let text = message.text.unwrap_or_default();
    let command = text
        .split_whitespace()
        .next()
        .unwrap_or_default()
        .split('@')
        .next()
        .unwrap_or_default()
        .to_ascii_lowercase();
    let linked = notifier
        .store()
        .telegram_link_by_chat(chat)
        .ok()
        .flatten()
        .and_then(|l| notifier.principal(l.account_id).map(|p| (l, p)));
    let portal = format!(
        "{}/notifications",
        notifier.options().public_url.trim_end_matches('/')
    );
    match command.as_str() {
        "/start" => {
            let Some(code) = link_code() else {
                reply(
                    notifier,
                    telegram,
                    chat,
                    "Sorry, no code could be made; try again.",
                    None,
                )
                .await;
                return;
            };
            if let Err(e) = notifier.put_link_code(chat, &message.chat.display(), &code) {
                tracing::error!(error = %e, "cannot keep a Telegram link code");
                reply(
                    notifier,
                    telegram,
                    chat,
                    "Sorry, the server could not keep a code; try again later.",
                    None,
                )
                .await;
                return;
            }
            let already = linked
                .as_ref()
                .map(|(_, p)| format!("\nThis chat is linked to {} now; the code links it to the account that enters it.", p.name))
                .unwrap_or_default();
            let text = format!(
                "Your link code: {code}\nEnter it within 10 minutes on the portal's notifications page: {portal}{already}"
            );
            reply(notifier, telegram, chat, &text, None).await;
        }
        "/status" => {
            let text = match &linked {
                Some((link, p)) => {
                    let scripts = notifier.scripts(p.id).map(|s| s.len()).unwrap_or(0);
                    let last = notifier
                        .notifications(p.id, None, 1)
                        .ok()
                        .and_then(|n| n.into_iter().next())
                        .map(|n| {
                            format!(
                                "\nLast notification: {} ({})",
                                n.title,
                                crate::runner::timestamp(n.created_ms).unwrap_or_default()
                            )
                        })
                        .unwrap_or_default();
                    format!(
                        "Linked to {} since {}.\nScripts: {scripts}.{last}",
                        p.name,
                        link.linked_ms
                            .and_then(crate::runner::timestamp)
                            .unwrap_or_default()
                    )
                }
                None => format!(
                    "This chat is not linked to a Dataport account. Send /start for a code and enter it at {portal}"
                ),
            };
            reply(notifier, telegram, chat, &text, None).await;
        }
        "/test" => match &linked {
            Some((_, p)) => {
                let message = format!("This chat receives Dataport notifications for {}.", p.name);
                if let Err(e) = telegram
                    .send_notification(chat, "Test notification", &message, None)
                    .await
                {
                    tracing::warn!(error = %e, "Telegram test message failed");
                    notifier.unlink_if_gone(p.id, &e);
                }
            }
            None => {
                reply(
                    notifier,
                    telegram,
                    chat,
                    "This chat is not linked yet: send /start.",
                    None,
                )
                .await
            }
        },
        "/scripts" => match &linked {
            Some((_, p)) => {
                let scripts = notifier.scripts(p.id).unwrap_or_default();
                if scripts.is_empty() {
                    reply(notifier, telegram, chat, "You have no scripts yet. Put them in your notifications/ folder and run `dataport push`, or upload them in the portal.", None).await;
                    return;
                }
                let mut lines = vec![format!("Scripts of {}:", p.name)];
                let mut buttons = Vec::new();
                for s in &scripts {
                    let last = s
                        .last_run
                        .as_ref()
                        .map(|r| format!(" (last run: {})", r.outcome))
                        .unwrap_or_default();
                    lines.push(format!("• {}{last}", s.script.name));
                    let data = format!("run:{}", s.script.name);
                    if data.len() <= MAX_CALLBACK_DATA {
                        buttons.push(json!([{"text": format!("Run {}", s.script.name), "callback_data": data}]));
                    }
                }
                reply(
                    notifier,
                    telegram,
                    chat,
                    &lines.join("\n"),
                    Some(json!(buttons)),
                )
                .await;
            }
            None => {
                reply(
                    notifier,
                    telegram,
                    chat,
                    "This chat is not linked yet: send /start.",
                    None,
                )
                .await
            }
        },
        _ => {
            let text = "Commands: /start (a code to link this chat to your Dataport account), /status, /test, /scripts";
            reply(notifier, telegram, chat, text, None).await;
        }
    }
}

async fn answer(telegram: &Telegram, id: &str, text: &str) {
    if let Err(e) = telegram.answer_callback(id, text).await {
        tracing::warn!(error = %e, "cannot answer a Telegram button");
    }
}

async fn handle_callback(notifier: &Notifier, telegram: &Telegram, query: CallbackQuery) {
    let Some(chat) = query.message.as_ref().map(|m| m.chat.id) else {
        answer(telegram, &query.id, "This button has expired.").await;
        return;
    };
    let Some(name) = query.data.as_deref().and_then(|d| d.strip_prefix("run:")) else {
        answer(telegram, &query.id, "Unknown button.").await;
        return;
    };
    let owner = notifier
        .store()
        .telegram_link_by_chat(chat)
        .ok()
        .flatten()
        .and_then(|l| notifier.principal(l.account_id));
    let Some(principal) = owner else {
        answer(
            telegram,
            &query.id,
            "This chat is not linked to an account.",
        )
        .await;
        return;
    };
    // Only the chat's own account's scripts: another account's name is simply not found.
    if !matches!(
        notifier.store().notify_script(principal.id, name),
        Ok(Some(_))
    ) {
        answer(telegram, &query.id, "You have no script by that name.").await;
        return;
    }
    answer(telegram, &query.id, &format!("Running {name}…")).await;
    let text = match notifier
        .run_script(&principal, name, Trigger::Telegram)
        .await
    {
        Ok(report) => match report.run.outcome.as_str() {
            // The notification itself went to the chat.
            "sent" => return,
            "quiet" => format!(
                "{name}: nothing to report ({}).",
                report.run.reason.unwrap_or_default()
            ),
            other => format!(
                "{name}: {other}{}",
                report
                    .run
                    .reason
                    .map(|r| format!(" — {r}"))
                    .unwrap_or_default()
            ),
        },
        Err(e) => format!("{name} could not run: {e}"),
    };
    reply(notifier, telegram, chat, &text, None).await;
}
