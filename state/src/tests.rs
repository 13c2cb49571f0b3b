use super::*;

fn store() -> (tempfile::TempDir, StateStore) {
    let dir = tempfile::tempdir().unwrap();
    let store = StateStore::open(dir.path()).unwrap();
    (dir, store)
}

fn groups(g: &[&str]) -> Vec<String> {
    g.iter().map(|s| s.to_string()).collect()
}

#[test]
fn users_groups_and_reopen() {
    let (dir, store) = store();
    store
        .add_user("ana", "$argon2id$x", &groups(&["dataread", "team-x"]))
        .unwrap();
    assert!(matches!(
        store.add_user("ana", "h", &[]),
        Err(StateError::UserExists(_))
    ));
    let v = store.identity_version().unwrap();
    store
        .set_groups("ana", &groups(&["data-private", "dataread"]))
        .unwrap();
    assert!(store.identity_version().unwrap() > v);
    let ana = store.user("ana").unwrap().unwrap();
    assert_eq!(ana.groups, groups(&["data-private", "dataread"]));
    assert!(store.groups().unwrap().contains(&"team-x".to_string()));
    drop(store);
    // Reopening migrates nothing and keeps the data.
    let store = StateStore::open(dir.path()).unwrap();
    assert_eq!(store.user_count().unwrap(), 1);
    assert!(store.remove_user("ana").unwrap());
    assert!(!store.remove_user("ana").unwrap());
    assert!(matches!(
        store.set_password_hash("ana", "h"),
        Err(StateError::NoSuchUser(_))
    ));
}

#[cfg(unix)]
#[test]
fn database_is_private_to_the_owner() {
    use std::os::unix::fs::PermissionsExt;
    let (dir, store) = store();
    let mode = std::fs::metadata(store.path())
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o077, 0);
    let mode = std::fs::metadata(dir.path().join("state"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o077, 0);
}

#[test]
fn newer_schema_is_refused() {
    let (dir, store) = store();
    let path = store.path().to_path_buf();
    store
        .lock()
        .pragma_update(None, "user_version", 99)
        .unwrap();
    drop(store);
    let err = StateStore::open(dir.path()).unwrap_err();
    assert!(matches!(err, StateError::TooNew { found: 99, .. }), "{err}");
    assert!(err.to_string().contains(&path.display().to_string()));
}

#[test]
fn grants_upsert_and_remove() {
    let (_dir, store) = store();
    let mut g = GrantRecord {
        group: "analysts-eu".into(),
        schema: "sales".into(),
        table: Some("orders".into()),
        row_filter: Some("region = 'EU'".into()),
        hidden_columns: groups(&["email", "phone"]),
        created_at: 1,
        created_by: "admin".into(),
    };
    store.put_grant(&g).unwrap();
    g.hidden_columns = groups(&["email"]);
    store.put_grant(&g).unwrap();
    let schema_grant = GrantRecord {
        table: None,
        row_filter: None,
        hidden_columns: vec![],
        ..g.clone()
    };
    store.put_grant(&schema_grant).unwrap();
    assert_eq!(store.grants().unwrap(), vec![schema_grant, g.clone()]);
    assert!(
        store
            .remove_grant("analysts-eu", "sales", Some("orders"))
            .unwrap()
    );
    assert!(store.remove_grant("analysts-eu", "sales", None).unwrap());
    assert!(store.grants().unwrap().is_empty());
}

#[test]
fn api_tokens_and_revocation() {
    let (_dir, store) = store();
    let bo = store.add_user("bo", "h", &[]).unwrap();
    let t = ApiTokenRecord {
        id: "abc".into(),
        account_id: bo,
        user: "bo".into(),
        label: "laptop".into(),
        secret_hash: "sha".into(),
        created_at: 10,
        expires_at: None,
        last_used_at: None,
        revoked_at: None,
        scope: None,
    };
    store.add_api_token(&t).unwrap();
    assert!(matches!(
        store.add_api_token(&ApiTokenRecord {
            account_id: bo + 1,
            user: "nobody".into(),
            id: "x".into(),
            ..t.clone()
        }),
        Err(StateError::NoSuchUser(_))
    ));
    store.touch_api_token("abc", 100).unwrap();
    assert_eq!(
        store.api_token("abc").unwrap().unwrap().last_used_at,
        Some(100)
    );
    assert!(store.revoke_api_token("abc").unwrap());
    assert!(!store.revoke_api_token("abc").unwrap());
    assert!(
        store
            .api_token("abc")
            .unwrap()
            .unwrap()
            .revoked_at
            .is_some()
    );
    // Removing the user removes the tokens.
    store.remove_user("bo").unwrap();
    assert!(store.api_tokens(None).unwrap().is_empty());

    store.revoke_jti("j1", 500).unwrap();
    assert!(store.is_jti_revoked("j1").unwrap());
    assert_eq!(store.revoked_jtis(400).unwrap(), vec!["j1".to_string()]);
    store.prune(0, 501).unwrap();
    assert!(!store.is_jti_revoked("j1").unwrap());
}

#[test]
fn login_attempts_count_by_account_and_address() {
    let (_dir, store) = store();
    for (user, address, ok, at) in [
        ("a", "1.1.1.1", false, 100),
        ("a", "2.2.2.2", false, 110),
        ("b", "1.1.1.1", false, 120),
        ("a", "1.1.1.1", true, 130),
        ("a", "1.1.1.1", false, 10),
    ] {
        store
            .record_login_attempt(&LoginAttempt {
                at,
                user: user.into(),
                address: address.into(),
                ok,
            })
            .unwrap();
    }
    assert_eq!(
        store.failed_logins_since("a", "1.1.1.1", 60).unwrap(),
        (2, 2)
    );
    assert_eq!(store.login_attempts(2).unwrap()[0].at, 130);
}

#[test]
fn audit_entries_are_written_in_the_background() {
    let (_dir, store) = store();
    let log = store.audit_log().unwrap();
    let v0 = store.data_version().unwrap();
    for i in 0..3 {
        log.record(AuditEntry {
            at_ms: i,
            account_id: None,
            user: if i == 1 { "x".into() } else { "y".into() },
            surface: "http".into(),
            request_id: format!("r{i}"),
            sql: "SELECT 1".into(),
            tables: vec!["s.t".into(), "s.u".into()],
            rows: 1,
            bytes: 8,
            duration_ms: 2,
            outcome: "ok".into(),
            error: None,
            tool: None,
        });
    }
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let all = store
            .audit_entries(&AuditQuery {
                user: None,
                limit: 10,
            })
            .unwrap();
        if all.len() == 3 {
            assert_eq!(all[0].request_id, "r2");
            assert_eq!(all[0].tables, vec!["s.t".to_string(), "s.u".to_string()]);
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "audit entries not written"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    // The writer's commits are visible as a data version change to this connection.
    assert_ne!(store.data_version().unwrap(), v0);
    let only_x = store
        .audit_entries(&AuditQuery {
            user: Some("x".into()),
            limit: 10,
        })
        .unwrap();
    assert_eq!(only_x.len(), 1);
    assert_eq!(log.dropped(), 0);
    // all three on 1970-01-01; a refused sign-in (no statement) does not count
    log.record(AuditEntry {
        at_ms: 86_400_000 + 5,
        account_id: None,
        user: "z".into(),
        surface: "http".into(),
        request_id: "r3".into(),
        sql: String::new(),
        tables: vec![],
        rows: 0,
        bytes: 0,
        duration_ms: 0,
        outcome: "unauthenticated".into(),
        error: None,
        tool: None,
    });
    log.record(AuditEntry {
        at_ms: 86_400_000 + 9,
        account_id: None,
        user: "z".into(),
        surface: "flight".into(),
        request_id: "r4".into(),
        sql: "SELECT x".into(),
        tables: vec![],
        rows: 0,
        bytes: 0,
        duration_ms: 0,
        outcome: "error".into(),
        error: Some("no column x".into()),
        tool: None,
    });
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let days = loop {
        let days = store.audit_daily_counts(0).unwrap();
        if days.len() == 2 || std::time::Instant::now() > deadline {
            break days;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    assert_eq!(
        days,
        vec![
            DailyCount {
                day: "1970-01-01".into(),
                statements: 3,
                failed: 0
            },
            DailyCount {
                day: "1970-01-02".into(),
                statements: 1,
                failed: 1
            }
        ]
    );
    assert_eq!(store.audit_daily_counts(86_400_000).unwrap().len(), 1);
}

#[test]
fn settings_keep_the_first_value() {
    let (_dir, store) = store();
    assert_eq!(store.setting("k").unwrap(), None);
    assert_eq!(store.setting_or_insert("k", "one").unwrap(), "one");
    assert_eq!(store.setting_or_insert("k", "two").unwrap(), "one");
}

#[test]
fn a_login_code_is_taken_once_and_goes_with_its_account() {
    let (_dir, store) = store();
    let id = store
        .add_account(&NewAccount {
            username: "ann".into(),
            email: Some("ann@example.com".into()),
            display_name: String::new(),
            picture_url: None,
            state: AccountState::Active,
            password_hash: None,
            groups: vec![],
        })
        .unwrap();
    let code = LoginCode {
        code_hash: "c1".into(),
        account_id: id,
        challenge: "ch".into(),
        created_at: 1_000,
    };
    store.add_login_code(&code, 0).unwrap();
    assert_eq!(
        store.take_login_code("c1", 900).unwrap(),
        Some(code.clone())
    );
    assert_eq!(store.take_login_code("c1", 900).unwrap(), None, "used");
    store.add_login_code(&code, 0).unwrap();
    assert_eq!(store.take_login_code("c1", 1_001).unwrap(), None, "stale");
    store.add_login_code(&code, 0).unwrap();
    store.remove_account(id, None).unwrap();
    assert_eq!(
        store.take_login_code("c1", 0).unwrap(),
        None,
        "account deleted"
    );
}

#[test]
fn an_oidc_flow_is_taken_once() {
    let (_dir, store) = store();
    let flow = OidcFlow {
        state_hash: "h1".into(),
        provider: "google".into(),
        nonce: "n".into(),
        verifier: "v".into(),
        next: "/catalog".into(),
        created_at: 1_000,
    };
    store.add_oidc_flow(&flow, 0).unwrap();
    assert_eq!(store.take_oidc_flow("h1", 900).unwrap(), Some(flow.clone()));
    assert_eq!(store.take_oidc_flow("h1", 900).unwrap(), None, "replayed");
    // too old: taken, but not honoured
    store.add_oidc_flow(&flow, 0).unwrap();
    assert_eq!(store.take_oidc_flow("h1", 1_001).unwrap(), None);
    // stale flows are swept when a new one starts
    store.add_oidc_flow(&flow, 0).unwrap();
    store
        .add_oidc_flow(
            &OidcFlow {
                state_hash: "h2".into(),
                created_at: 5_000,
                ..flow
            },
            2_000,
        )
        .unwrap();
    assert_eq!(store.take_oidc_flow("h1", 0).unwrap(), None);
}

#[test]
fn a_push_delivery_is_queued_once_retried_and_given_up_on() {
    let (_dir, store) = store();
    let items = vec!["SUP-1".to_string()];
    let event = |delivery: &'static str| NewPushEvent {
        source: "jira",
        delivery,
        received_ms: 1_000,
        event: "jira:issue_updated",
        items: &items,
        raw_path: "raw/jira/events/x.json",
    };
    let Enqueued::New(id) = store.enqueue_push_event(&event("d1")).unwrap() else {
        panic!("a new delivery is queued");
    };
    assert_eq!(
        store.enqueue_push_event(&event("d1")).unwrap(),
        Enqueued::Duplicate {
            id,
            state: "queued".into()
        }
    );
    let due = store.due_push_events("jira", 1_000, 10).unwrap();
    assert_eq!((due.len(), due[0].items.clone()), (1, items.clone()));
    assert!(
        store
            .due_push_events("other", 1_000, 10)
            .unwrap()
            .is_empty()
    );

    assert_eq!(
        store
            .retry_push_event(id, "HTTP 503", Some(5_000), 1_000)
            .unwrap(),
        1
    );
    assert!(store.due_push_events("jira", 4_999, 10).unwrap().is_empty());
    assert_eq!(store.next_push_due("jira", &[]).unwrap(), Some(5_000));
    assert_eq!(
        store.next_push_due("jira", &[id]).unwrap(),
        None,
        "being processed"
    );
    assert_eq!(store.push_queue("jira").unwrap().queued, 1);
    store.retry_push_event(id, "HTTP 503", None, 6_000).unwrap();
    let q = store.push_queue("jira").unwrap();
    assert_eq!(
        (q.queued, q.failed, q.last_received_ms),
        (0, 1, Some(1_000))
    );
    assert_eq!(
        store.expired_push_events("jira", 2_000, 10).unwrap(),
        vec![(id, "raw/jira/events/x.json".to_string())]
    );
    store.delete_push_event(id).unwrap();
    assert!(matches!(
        store.enqueue_push_event(&event("d1")).unwrap(),
        Enqueued::New(_)
    ));
}

#[test]
fn push_items_are_written_parked_and_deleted() {
    let (_dir, store) = store();
    store
        .park_push_item("jira", "SUP-1", "HTTP 500", 10)
        .unwrap();
    store
        .park_push_item("jira", "SUP-1", "HTTP 502", 20)
        .unwrap();
    let [parked] = store.parked_push_items("jira").unwrap().try_into().unwrap();
    assert_eq!(
        (parked.parked_ms, parked.failures, parked.error.as_deref()),
        (Some(10), 2, Some("HTTP 502"))
    );
    store
        .record_push_item(&PushItem {
            source: "jira".into(),
            item: "SUP-1".into(),
            item_id: Some("10001".into()),
            partition: Some("2024-03".into()),
            version: Some("v1".into()),
            open: true,
            synced_ms: Some(30),
            ..PushItem::default()
        })
        .unwrap();
    assert!(
        store.parked_push_items("jira").unwrap().is_empty(),
        "a success un-parks"
    );
    assert_eq!(store.open_push_items("jira").unwrap().len(), 1);
    assert_eq!(
        store
            .push_item_by_id("jira", "10001")
            .unwrap()
            .unwrap()
            .item,
        "SUP-1"
    );
    store.delete_push_item("jira", "SUP-1", 40).unwrap();
    assert!(store.live_push_items("jira").unwrap().is_empty());
    assert_eq!(store.push_item_count("jira").unwrap(), 0);
    assert!(store.open_push_items("jira").unwrap().is_empty());
    assert_eq!(
        store
            .push_item("jira", "SUP-1")
            .unwrap()
            .unwrap()
            .deleted_ms,
        Some(40)
    );
}

#[test]
fn telegram_codes_expire_work_once_and_move_a_chat() {
    let (_dir, store) = store();
    store
        .add_user("ana", "$argon2id$x", &groups(&["dataread"]))
        .unwrap();
    store
        .add_user("bob", "$argon2id$x", &groups(&["dataread"]))
        .unwrap();
    let ana = store.user("ana").unwrap().unwrap().id;
    let bob = store.user("bob").unwrap().unwrap().id;
    let now = 1_000_000;
    // An expired code links nothing.
    store
        .put_telegram_code("old", 42, "@ana", now - 700_000, now - 100_000)
        .unwrap();
    assert!(store.link_telegram(ana, "old", now).unwrap().is_none());
    // A valid one links once.
    store
        .put_telegram_code("h1", 42, "@ana", now, now + 600_000)
        .unwrap();
    let linked = store.link_telegram(ana, "h1", now + 1).unwrap().unwrap();
    assert_eq!(
        (linked.chat_id, linked.chat_name.as_str()),
        (Some(42), "@ana")
    );
    assert!(store.link_telegram(ana, "h1", now + 2).unwrap().is_none());
    // A new code replaces the chat's earlier one.
    store
        .put_telegram_code("h2", 42, "@ana", now, now + 600_000)
        .unwrap();
    store
        .put_telegram_code("h3", 42, "@ana", now, now + 600_000)
        .unwrap();
    assert!(store.link_telegram(bob, "h2", now + 3).unwrap().is_none());
    // Entered by another account, the chat moves, and the first says why.
    assert!(store.link_telegram(bob, "h3", now + 4).unwrap().is_some());
    let old = store.telegram_link(ana).unwrap().unwrap();
    assert_eq!(old.chat_id, None);
    assert_eq!(
        old.unlinked_reason.as_deref(),
        Some("the chat was linked to another account")
    );
    assert_eq!(
        store.telegram_link_by_chat(42).unwrap().unwrap().account_id,
        bob
    );
    assert!(store.unlink_telegram(bob, "blocked", now + 5).unwrap());
    assert!(!store.unlink_telegram(bob, "blocked", now + 6).unwrap());
}

#[test]
fn notify_runs_are_pruned_per_script_and_interrupted_runs_marked() {
    let (_dir, store) = store();
    store
        .add_user("ana", "$argon2id$x", &groups(&["dataread"]))
        .unwrap();
    let ana = store.user("ana").unwrap().unwrap().id;
    for (i, script) in ["a.py", "a.py", "a.py", "b.py"].iter().enumerate() {
        let id = store
            .start_notify_run(&NewNotifyRun {
                account_id: ana,
                script,
                sha256: "x",
                trigger: "schedule",
                started_ms: i as i64,
            })
            .unwrap();
        if i < 3 {
            store
                .finish_notify_run(
                    id,
                    &NotifyRunEnd {
                        outcome: "quiet".into(),
                        deliveries: "[]".into(),
                        ..Default::default()
                    },
                )
                .unwrap();
        }
    }
    assert_eq!(store.interrupt_notify_runs().unwrap(), 1);
    assert_eq!(store.prune_notify_runs(2).unwrap(), 1);
    let runs = store.notify_runs(Some(ana), None, 10).unwrap();
    assert_eq!(runs.len(), 3);
    assert_eq!(runs[0].outcome, "interrupted");
    assert_eq!(
        store.last_notify_run_by(ana, "a.py", "schedule").unwrap(),
        Some(2)
    );
}

fn extracted(id: &str, findings: &str, private: bool) -> ExtractedItem {
    ExtractedItem {
        id: id.into(),
        title: format!("title {id}"),
        content: format!("content {id}"),
        category: "data_analysis".into(),
        tags: r#"["orders"]"#.into(),
        findings: findings.into(),
        private,
    }
}

fn state_of(store: &StateStore, viewer: i64, id: &str) -> String {
    store.memory_item(viewer, id).unwrap().unwrap().state
}

#[test]
fn memory_items_merge_across_accounts_and_retire_without_losing_votes() {
    let (_dir, store) = store();
    for u in ["ana", "bob"] {
        store.add_user(u, "h", &groups(&["dataread"])).unwrap();
    }
    let ana = store.user("ana").unwrap().unwrap().id;
    let bob = store.user("bob").unwrap().unwrap().id;
    let a = store
        .apply_memory_extraction(
            ana,
            "s1",
            "offline",
            &[
                extracted("km_a", "[]", false),
                extracted("km_s", r#"[{"kind":"secret"}]"#, false),
            ],
            10,
        )
        .unwrap();
    assert_eq!((a.new, a.items, a.held, a.retired), (2, 2, 1, 0));
    assert_eq!(state_of(&store, ana, "km_a"), "published");
    assert_eq!(state_of(&store, ana, "km_s"), "held");
    let notes = store.memory_notes(ana).unwrap().unwrap();
    assert_eq!(notes.collected_sha256.as_deref(), Some("s1"));

    // Bob's notes hold the same item: one item, two sources.
    let b = store
        .apply_memory_extraction(bob, "s2", "offline", &[extracted("km_a", "[]", false)], 20)
        .unwrap();
    assert_eq!((b.new, b.items), (0, 1));
    let item = store.memory_item(bob, "km_a").unwrap().unwrap();
    assert_eq!(item.sources.len(), 2);
    assert_eq!(item.updated_ms, 20);
    assert!(store.set_memory_vote("km_a", bob, 1, 21).unwrap());
    assert!(!store.set_memory_vote("km_nope", bob, 1, 21).unwrap());

    // Ana drops it, then Bob: retired, and Bob's vote is still there.
    store
        .apply_memory_extraction(ana, "s3", "offline", &[], 30)
        .unwrap();
    assert_eq!(state_of(&store, ana, "km_a"), "published");
    assert_eq!(state_of(&store, ana, "km_s"), "retired");
    let gone = store
        .apply_memory_extraction(bob, "s4", "offline", &[], 40)
        .unwrap();
    assert_eq!(gone.retired, 1);
    let item = store.memory_item(bob, "km_a").unwrap().unwrap();
    assert_eq!(
        (item.state.as_str(), item.upvotes, item.my_vote),
        ("retired", 1, 1)
    );
    // An account deleted takes its sources along; the next refresh retires what it alone held.
    store.add_user("cy", "h", &groups(&["dataread"])).unwrap();
    let cy = store.user("cy").unwrap().unwrap().id;
    store
        .apply_memory_extraction(cy, "c1", "offline", &[extracted("km_c", "[]", false)], 41)
        .unwrap();
    assert_eq!(store.refresh_memory_states(42).unwrap(), 0);
    assert!(store.remove_user("cy").unwrap());
    assert_eq!(store.refresh_memory_states(43).unwrap(), 1);
    assert_eq!(state_of(&store, bob, "km_c"), "retired");
    // It comes back when the notes do.
    store
        .apply_memory_extraction(bob, "s5", "offline", &[extracted("km_a", "[]", false)], 50)
        .unwrap();
    assert_eq!(state_of(&store, bob, "km_a"), "published");
    assert!(store.set_memory_vote("km_a", bob, 0, 51).unwrap());
    assert!(store.memory_votes(bob).unwrap().is_empty());
}

#[test]
fn memory_review_moderation_and_failures() {
    let (_dir, store) = store();
    store.add_user("ana", "h", &groups(&["dataread"])).unwrap();
    store.add_user("root", "h", &groups(&["data-ops"])).unwrap();
    let ana = store.user("ana").unwrap().unwrap().id;
    let root = store.user("root").unwrap().unwrap().id;
    let by_ana = MemoryActor {
        id: ana,
        name: "ana",
        request_id: "r1",
    };
    let by_root = MemoryActor {
        id: root,
        name: "root",
        request_id: "r2",
    };
    store
        .apply_memory_extraction(
            ana,
            "s1",
            "offline",
            &[extracted("km_e", r#"[{"kind":"email"}]"#, false)],
            1,
        )
        .unwrap();
    assert_eq!(state_of(&store, ana, "km_e"), "held");
    assert!(
        store
            .release_memory_source("km_e", &by_ana, true, 2)
            .unwrap()
    );
    assert_eq!(state_of(&store, ana, "km_e"), "published");
    assert!(
        !store
            .release_memory_source("km_e", &by_root, true, 2)
            .unwrap()
    );
    // The same findings again keep the release; new findings take it back.
    store
        .apply_memory_extraction(
            ana,
            "s2",
            "offline",
            &[extracted("km_e", r#"[{"kind":"email"}]"#, false)],
            3,
        )
        .unwrap();
    assert_eq!(state_of(&store, ana, "km_e"), "published");
    store
        .apply_memory_extraction(
            ana,
            "s3",
            "offline",
            &[extracted("km_e", r#"[{"kind":"phone"}]"#, false)],
            4,
        )
        .unwrap();
    assert_eq!(state_of(&store, ana, "km_e"), "held");

    store
        .apply_memory_extraction(ana, "s4", "offline", &[extracted("km_p", "[]", false)], 5)
        .unwrap();
    let edit = Moderation::Edit {
        title: "Better".into(),
        content: "Clearer".into(),
        category: "workflow".into(),
        tags: "[]".into(),
    };
    assert!(
        store
            .moderate_memory_item("km_p", &by_root, &edit, "", 6)
            .unwrap()
    );
    assert!(
        store
            .moderate_memory_item("km_p", &by_root, &Moderation::Pin(true), "", 7)
            .unwrap()
    );
    // A later extraction does not undo the admin's edit.
    store
        .apply_memory_extraction(ana, "s5", "offline", &[extracted("km_p", "[]", false)], 8)
        .unwrap();
    let p = store.memory_item(ana, "km_p").unwrap().unwrap();
    assert_eq!(
        (p.title.as_str(), p.category.as_str(), p.pinned),
        ("Better", "workflow", true)
    );
    assert!(
        store
            .moderate_memory_item("km_p", &by_root, &Moderation::Retire(true), "", 9)
            .unwrap()
    );
    assert_eq!(state_of(&store, ana, "km_p"), "retired");
    assert!(
        store
            .moderate_memory_item("km_p", &by_root, &Moderation::Retire(false), "", 10)
            .unwrap()
    );
    assert_eq!(state_of(&store, ana, "km_p"), "published");
    assert!(
        !store
            .moderate_memory_item("km_zz", &by_root, &Moderation::Pin(true), "", 11)
            .unwrap()
    );

    // A failure keeps the items and the collected hash.
    store
        .fail_memory_notes(ana, "the LLM answered 529", 12)
        .unwrap();
    let notes = store.memory_notes(ana).unwrap().unwrap();
    assert_eq!(notes.collected_sha256.as_deref(), Some("s5"));
    assert_eq!(notes.error.as_deref(), Some("the LLM answered 529"));
    assert_eq!(state_of(&store, ana, "km_p"), "published");

    // Transcripts are stored once per content.
    assert!(
        store
            .put_memory_transcript(ana, "abc", "s.jsonl", 10, 1)
            .unwrap()
    );
    assert!(
        !store
            .put_memory_transcript(ana, "abc", "copy.jsonl", 10, 2)
            .unwrap()
    );
    assert_eq!(store.memory_transcripts(Some(ana)).unwrap().len(), 1);
    assert!(store.memory_transcripts(Some(root)).unwrap().is_empty());
    assert_eq!(store.memory_transcripts(None).unwrap()[0].username, "ana");

    for i in 0..105 {
        store
            .record_memory_collection(&MemoryCollection {
                started_ms: i,
                finished_ms: i + 1,
                accounts: 1,
                changed: 0,
                failed: 0,
                extractor: "offline".into(),
            })
            .unwrap();
    }
    assert_eq!(
        store.last_memory_collection().unwrap().unwrap().started_ms,
        104
    );
}

/// A store at schema version 14 (before assistants), with an account, an API token and an
/// audit entry, made by the released steps themselves.
fn schema_14_store(path: &std::path::Path) {
    let conn = rusqlite::Connection::open(path).unwrap();
    conn.pragma_update(None, "foreign_keys", "ON").unwrap();
    for step in &migrations::STEPS[..14] {
        conn.execute_batch(step).unwrap();
    }
    conn.pragma_update(None, "user_version", 14).unwrap();
    conn.execute_batch(
        "INSERT INTO accounts (username, password_hash, created_at, password_changed_at,
                               updated_at) VALUES ('ana', 'h', 1, 1, 1);
         INSERT INTO account_tokens (id, account_id, label, secret_hash, created_at)
             VALUES ('t14', 1, 'laptop', 'sha', 5);
         INSERT INTO audit_log (at_ms, user_name, surface, request_id, sql, tables, rows, bytes,
                                duration_ms, outcome, account_id)
             VALUES (7, 'ana', 'http', 'r14', 'SELECT 1', '', 1, 8, 2, 'ok', 1);",
    )
    .unwrap();
}

#[test]
fn schema_15_upgrades_a_version_14_store_in_place() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("dataport.sqlite");
    schema_14_store(&path);
    let store = StateStore::open_file(&path).unwrap();
    let version: i64 = store
        .lock()
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .unwrap();
    assert_eq!(version as usize, migrations::STEPS.len());
    assert!(version >= 15);
    // What was there is kept: the token has no scope (the whole API), the entry no tool.
    let token = store.api_token("t14").unwrap().unwrap();
    assert_eq!((token.label.as_str(), token.scope), ("laptop", None));
    let entries = store
        .audit_entries(&AuditQuery {
            user: None,
            limit: 5,
        })
        .unwrap();
    assert_eq!(entries.len(), 1);
    assert_eq!(
        (entries[0].request_id.as_str(), &entries[0].tool),
        ("r14", &None)
    );
    // An entry without a tool serializes as before.
    let json = serde_json::to_value(&entries[0]).unwrap();
    assert!(json.get("tool").is_none(), "{json}");
    // The new tables are there.
    assert_eq!(store.oauth_client("none").unwrap(), None);
    assert_eq!(store.oauth_code("none").unwrap(), None);
    drop(store);
    // Opening again migrates nothing.
    StateStore::open_file(&path).unwrap();
}

#[test]
fn a_token_keeps_its_scope_and_an_audit_entry_its_tool() {
    let (_dir, store) = store();
    let ana = store.add_user("ana", "h", &[]).unwrap();
    store
        .add_api_token(&ApiTokenRecord {
            id: "as1".into(),
            account_id: ana,
            user: "ana".into(),
            label: "Claude".into(),
            secret_hash: "sha".into(),
            created_at: 10,
            expires_at: Some(100),
            last_used_at: None,
            revoked_at: None,
            scope: Some("assistant".into()),
        })
        .unwrap();
    let listed = store.api_tokens(Some("ana")).unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].scope.as_deref(), Some("assistant"));

    let log = store.audit_log().unwrap();
    log.record(AuditEntry {
        at_ms: 1,
        account_id: Some(ana),
        user: "ana".into(),
        surface: "mcp".into(),
        request_id: "r1".into(),
        sql: "SELECT 1".into(),
        tables: vec![],
        rows: 1,
        bytes: 8,
        duration_ms: 1,
        outcome: "ok".into(),
        error: None,
        tool: Some("run_query".into()),
    });
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let entry = loop {
        let all = store
            .audit_entries(&AuditQuery {
                user: None,
                limit: 1,
            })
            .unwrap();
        if let Some(e) = all.into_iter().next() {
            break e;
        }
        assert!(std::time::Instant::now() < deadline, "entry not written");
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    assert_eq!(entry.tool.as_deref(), Some("run_query"));
    assert_eq!(serde_json::to_value(&entry).unwrap()["tool"], "run_query");
}

fn oauth_client(id: &str, address: &str, at: i64) -> OAuthClient {
    OAuthClient {
        client_id: id.into(),
        client_name: format!("client {id}"),
        redirect_uris: vec![
            "http://127.0.0.1:3000/cb".into(),
            "https://x.example/cb".into(),
        ],
        created_at: at,
        last_used_at: None,
        address: address.into(),
    }
}

#[test]
fn oauth_clients_register_within_their_limits() {
    let (_dir, store) = store();
    let limit = RegistrationLimit {
        since: 1_000,
        per_address: 2,
        total: 3,
    };
    // Registered before the window: not counted.
    assert!(
        store
            .add_oauth_client(&oauth_client("old", "a", 900), &limit)
            .unwrap()
    );
    assert!(
        store
            .add_oauth_client(&oauth_client("c1", "a", 1_000), &limit)
            .unwrap()
    );
    assert!(
        store
            .add_oauth_client(&oauth_client("c2", "a", 1_001), &limit)
            .unwrap()
    );
    assert!(
        !store
            .add_oauth_client(&oauth_client("c3", "a", 1_002), &limit)
            .unwrap()
    );
    assert!(
        store
            .add_oauth_client(&oauth_client("c4", "b", 1_003), &limit)
            .unwrap()
    );
    // Three in the window: nobody else now.
    assert!(
        !store
            .add_oauth_client(&oauth_client("c5", "c", 1_004), &limit)
            .unwrap()
    );
    let c1 = store.oauth_client("c1").unwrap().unwrap();
    assert_eq!(c1, oauth_client("c1", "a", 1_000));
    assert_eq!(store.oauth_client("c3").unwrap(), None);
    // A day later, the clients that never got a token are forgotten.
    let later = RegistrationLimit {
        since: 100_000,
        ..limit
    };
    assert!(
        store
            .add_oauth_client(&oauth_client("c6", "a", 100_000), &later)
            .unwrap()
    );
    assert_eq!(store.oauth_client("c1").unwrap(), None);
    assert!(store.oauth_client("c6").unwrap().is_some());
}

#[test]
fn an_oauth_code_is_redeemed_once_and_a_second_use_revokes_its_token() {
    let (_dir, store) = store();
    let ana = store.add_user("ana", "h", &[]).unwrap();
    let limit = RegistrationLimit {
        since: 0,
        per_address: 10,
        total: 10,
    };
    assert!(
        store
            .add_oauth_client(&oauth_client("cl", "a", 1_000), &limit)
            .unwrap()
    );
    let code = OAuthCode {
        code_hash: "h1".into(),
        client_id: "cl".into(),
        account_id: ana,
        redirect_uri: "http://127.0.0.1:3000/cb".into(),
        code_challenge: "ch".into(),
        scope: "mcp".into(),
        resource: Some("http://s/mcp".into()),
        created_at: 1_000,
        expires_at: 1_060,
        used_at: None,
        token_id: None,
    };
    store.add_oauth_code(&code).unwrap();
    assert_eq!(store.oauth_code("h1").unwrap(), Some(code.clone()));
    let token = |id: &str| ApiTokenRecord {
        id: id.into(),
        account_id: ana,
        user: "ana".into(),
        label: "client cl (OAuth)".into(),
        secret_hash: "sha".into(),
        created_at: 1_010,
        expires_at: Some(9_999),
        last_used_at: None,
        revoked_at: None,
        scope: Some("assistant".into()),
    };
    assert_eq!(
        store.redeem_oauth_code("h1", 1_010, &token("tk1")).unwrap(),
        CodeRedemption::Issued
    );
    let issued = store.api_token("tk1").unwrap().unwrap();
    assert_eq!(issued.scope.as_deref(), Some("assistant"));
    assert_eq!(issued.revoked_at, None);
    let used = store.oauth_code("h1").unwrap().unwrap();
    assert_eq!(
        (used.used_at, used.token_id.as_deref()),
        (Some(1_010), Some("tk1"))
    );
    assert_eq!(
        store.oauth_client("cl").unwrap().unwrap().last_used_at,
        Some(1_010)
    );
    // The second use: refused, nothing stored, and the first token revoked.
    assert_eq!(
        store.redeem_oauth_code("h1", 1_020, &token("tk2")).unwrap(),
        CodeRedemption::Reused {
            revoked: Some("tk1".into())
        }
    );
    assert_eq!(store.api_token("tk2").unwrap(), None);
    assert!(
        store
            .api_token("tk1")
            .unwrap()
            .unwrap()
            .revoked_at
            .is_some()
    );

    // Expired, or unknown: unusable.
    store
        .add_oauth_code(&OAuthCode {
            code_hash: "h2".into(),
            ..code.clone()
        })
        .unwrap();
    assert_eq!(
        store.redeem_oauth_code("h2", 1_060, &token("tk3")).unwrap(),
        CodeRedemption::Unusable
    );
    assert_eq!(
        store
            .redeem_oauth_code("nope", 1_010, &token("tk4"))
            .unwrap(),
        CodeRedemption::Unusable
    );
    assert_eq!(store.api_token("tk3").unwrap(), None);
    // Codes expired a day ago go when a new one is kept; the client's codes go with it.
    store
        .add_oauth_code(&OAuthCode {
            code_hash: "h3".into(),
            created_at: 90_000,
            expires_at: 90_060,
            ..code
        })
        .unwrap();
    assert_eq!(store.oauth_code("h1").unwrap(), None);
    assert!(store.oauth_code("h3").unwrap().is_some());
}
