use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

use super::*;

const PW: &str = "Correct-Horse-9";
const ADDR: &str = "10.0.0.1";

struct Fixture {
    _dir: tempfile::TempDir,
    store: Arc<StateStore>,
    accounts: Accounts,
}

fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(StateStore::open(dir.path()).unwrap());
    let accounts = Accounts::new(Arc::clone(&store));
    accounts
        .add_user("admin", PW, &[DATA_OPS.to_string()])
        .unwrap();
    accounts
        .add_user("ana", PW, &[DATAREAD.to_string()])
        .unwrap();
    Fixture {
        _dir: dir,
        store,
        accounts,
    }
}

fn auth(f: &Fixture, options: AuthOptions) -> Authenticator {
    Authenticator::new(Arc::clone(&f.store), options).unwrap()
}

fn options() -> AuthOptions {
    AuthOptions {
        signing_key: Some("k".repeat(32)),
        ..AuthOptions::default()
    }
}

fn sign_raw(
    header: &str,
    claims: &serde_json::Value,
    key: &[u8],
    alg: jsonwebtoken::Algorithm,
) -> String {
    let _ = header;
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(alg),
        claims,
        &jsonwebtoken::EncodingKey::from_secret(key),
    )
    .unwrap()
}

fn claims_of(token: &str) -> serde_json::Value {
    let payload = token.split('.').nth(1).unwrap();
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).unwrap()).unwrap()
}

#[test]
fn basic_with_and_without_padding() {
    // admin:password, padded and as the ADBC Go driver sends it.
    for header in [
        "Basic YWRtaW46cGFzc3dvcmQ=",
        "Basic YWRtaW46cGFzc3dvcmQ",
        "basic   YWRtaW46cGFzc3dvcmQ",
    ] {
        assert_eq!(
            parse_authorization(header).unwrap(),
            Credentials::Basic {
                user: "admin".into(),
                password: "password".into()
            }
        );
    }
    assert!(matches!(
        parse_authorization("Digest abc"),
        Err(AuthError::Malformed { .. })
    ));
    assert!(matches!(
        parse_authorization("Basic !!!"),
        Err(AuthError::Malformed { .. })
    ));
    assert!(matches!(
        parse_authorization("Bearer "),
        Err(AuthError::Malformed { .. })
    ));
    // Debug output never shows secrets.
    let creds = parse_authorization("Basic YWRtaW46cGFzc3dvcmQ=").unwrap();
    assert!(!format!("{creds:?}").contains("password\""));
    assert!(!format!("{:?}", Credentials::Bearer("sekrit".into())).contains("sekrit"));
}

#[test]
fn password_rules_and_hashes() {
    for weak in ["Short1", "alllowercase1", "ALLUPPER1", "NoDigitsHere"] {
        assert!(
            matches!(check_rules(weak), Err(AuthError::WeakPassword { .. })),
            "{weak} accepted"
        );
    }
    check_rules("Fine-Pass1").unwrap();
    check_rules(&generate_password().unwrap()).unwrap();
    let hash = password::hash_password("Fine-Pass1").unwrap();
    assert!(hash.starts_with("$argon2id$"), "{hash}");
    assert!(password::verify_password(&hash, "Fine-Pass1"));
    assert!(!password::verify_password(&hash, "Fine-Pass2"));
    assert!(!password::verify_password("not a hash", "Fine-Pass1"));
    assert_ne!(
        hash,
        password::hash_password("Fine-Pass1").unwrap(),
        "salted"
    );
}

fn check_rules(p: &str) -> Result<(), AuthError> {
    password::check_password_rules(p)
}

#[test]
fn login_issues_a_jwt_with_the_standard_claims() {
    let f = fixture();
    let a = auth(&f, options());
    let session = a.login("ana", PW, ADDR).unwrap();
    assert_eq!(session.principal.name, "ana");
    assert_eq!(session.principal.groups, vec![DATAREAD.to_string()]);
    assert!(!session.principal.admin);
    let claims = claims_of(&session.token);
    for key in ["sub", "exp", "iat", "iss", "jti"] {
        assert!(claims.get(key).is_some(), "{key} missing in {claims}");
    }
    assert_eq!(claims["iss"], "dataport");
    assert_eq!(
        claims["exp"].as_i64().unwrap() - claims["iat"].as_i64().unwrap(),
        30 * 24 * 3600
    );
    assert_eq!(a.check_bearer(&session.token).unwrap().name, "ana");
    let admin = a.login("admin", PW, ADDR).unwrap().principal;
    assert!(admin.admin);
    assert!(matches!(
        a.login("ana", "Wrong-Pass1", ADDR),
        Err(AuthError::InvalidCredentials)
    ));
    assert!(matches!(
        a.login("nobody", PW, ADDR),
        Err(AuthError::InvalidCredentials)
    ));
}

#[test]
fn forged_tokens_are_refused() {
    let f = fixture();
    let a = auth(&f, options());
    let good = a.login("ana", PW, ADDR).unwrap().token;
    let claims = claims_of(&good);
    let key = "k".repeat(32);
    // Same key, other algorithm.
    let hs384 = sign_raw("", &claims, key.as_bytes(), jsonwebtoken::Algorithm::HS384);
    // Re-signed with another key.
    let other_key = sign_raw(
        "",
        &claims,
        b"another key of enough length....",
        jsonwebtoken::Algorithm::HS256,
    );
    // alg: none, no signature.
    let none = format!(
        "{}.{}.",
        URL_SAFE_NO_PAD.encode(br#"{"alg":"none","typ":"JWT"}"#),
        good.split('.').nth(1).unwrap()
    );
    // Claims changed (sub: admin) with the original signature.
    let mut admin_claims = claims.clone();
    admin_claims["sub"] = "admin".into();
    let parts: Vec<&str> = good.split('.').collect();
    let tampered = format!(
        "{}.{}.{}",
        parts[0],
        URL_SAFE_NO_PAD.encode(serde_json::to_vec(&admin_claims).unwrap()),
        parts[2]
    );
    // Right key, wrong issuer.
    let mut foreign = claims.clone();
    foreign["iss"] = "someone-else".into();
    let foreign = sign_raw("", &foreign, key.as_bytes(), jsonwebtoken::Algorithm::HS256);
    // Right key, expired.
    let mut expired = claims.clone();
    expired["exp"] = (dataport_state::now_secs() - 10).into();
    let expired = sign_raw("", &expired, key.as_bytes(), jsonwebtoken::Algorithm::HS256);
    // Right key, unknown user.
    let mut ghost = claims.clone();
    ghost["sub"] = "ghost".into();
    let ghost = sign_raw("", &ghost, key.as_bytes(), jsonwebtoken::Algorithm::HS256);
    for (what, token) in [
        ("hs384", hs384),
        ("other key", other_key),
        ("alg none", none),
        ("tampered", tampered),
        ("wrong issuer", foreign),
        ("expired", expired),
        ("unknown user", ghost),
        ("garbage", "abc.def.ghi".to_string()),
        ("api-looking garbage", "dpk_nothing".to_string()),
    ] {
        assert_eq!(
            a.check_bearer(&token),
            Err(AuthError::InvalidToken),
            "{what} was accepted"
        );
    }
}

#[test]
fn refresh_within_grace_and_revoke() {
    let f = fixture();
    let key = "k".repeat(32);
    let a = auth(&f, options());
    let session = a.login("ana", PW, ADDR).unwrap();
    let mut claims = claims_of(&session.token);
    // Expired an hour ago: not usable, but refreshable.
    claims["exp"] = (dataport_state::now_secs() - 3600).into();
    claims["jti"] = "expired-one".into();
    let expired = sign_raw("", &claims, key.as_bytes(), jsonwebtoken::Algorithm::HS256);
    assert_eq!(a.check_bearer(&expired), Err(AuthError::InvalidToken));
    let renewed = a.refresh(&expired).unwrap();
    assert_eq!(a.check_bearer(&renewed.token).unwrap().name, "ana");
    // The refreshed-from token cannot be refreshed twice.
    assert_eq!(a.refresh(&expired), Err(AuthError::InvalidToken));
    // Expired eight days ago: past the seven-day grace.
    claims["exp"] = (dataport_state::now_secs() - 8 * 24 * 3600).into();
    claims["jti"] = "too-old".into();
    let too_old = sign_raw("", &claims, key.as_bytes(), jsonwebtoken::Algorithm::HS256);
    assert_eq!(a.refresh(&too_old), Err(AuthError::InvalidToken));
    // Revocation (logout) takes effect at once, also for another authenticator on the
    // same store (another server process).
    let other = auth(&f, options());
    assert!(other.check_bearer(&renewed.token).is_ok());
    a.revoke(&renewed.token).unwrap();
    assert_eq!(a.check_bearer(&renewed.token), Err(AuthError::InvalidToken));
    assert_eq!(
        other.check_bearer(&renewed.token),
        Err(AuthError::InvalidToken)
    );
}

#[test]
fn account_changes_apply_to_live_tokens() {
    let f = fixture();
    let a = auth(&f, options());
    let token = a.login("ana", PW, ADDR).unwrap().token;
    // Group changes show on the next call.
    f.accounts
        .set_groups("ana", &[DATAREAD.to_string(), DATA_PRIVATE.to_string()])
        .unwrap();
    assert!(a.check_bearer(&token).unwrap().in_group(DATA_PRIVATE));
    // A password change ends older sessions (tokens are issued with second precision).
    std::thread::sleep(Duration::from_millis(1100));
    f.accounts.set_password("ana", "Another-Pass2").unwrap();
    assert_eq!(a.check_bearer(&token), Err(AuthError::InvalidToken));
    let token = a.login("ana", "Another-Pass2", ADDR).unwrap().token;
    f.accounts.remove_user("ana").unwrap();
    assert_eq!(a.check_bearer(&token), Err(AuthError::InvalidToken));
}

#[test]
fn failed_logins_are_rate_limited_per_account_and_address() {
    let f = fixture();
    let a = auth(&f, options());
    for i in 0..5 {
        // From different addresses: the account limit still counts them.
        let addr = format!("10.0.1.{i}");
        assert_eq!(
            a.login("ana", "Wrong-Pass1", &addr),
            Err(AuthError::InvalidCredentials)
        );
    }
    // Even the right password is refused now, from anywhere.
    assert!(matches!(
        a.login("ana", PW, "10.9.9.9"),
        Err(AuthError::TooManyAttempts { .. })
    ));
    // Other accounts are not locked by it...
    a.login("admin", PW, "10.9.9.9").unwrap();
    // ...but one address guessing many accounts is.
    for user in ["u1", "u2", "u3", "u4", "u5"] {
        let _ = a.login(user, "Wrong-Pass1", "10.7.7.7");
    }
    assert!(matches!(
        a.login("admin", PW, "10.7.7.7"),
        Err(AuthError::TooManyAttempts { .. })
    ));
    // Every attempt is on record.
    assert!(f.store.login_attempts(100).unwrap().len() >= 11);
}

#[test]
fn api_tokens_authenticate_until_revoked_or_expired() {
    let f = fixture();
    let a = auth(&f, options());
    let t = f.accounts.create_api_token("ana", "laptop", None).unwrap();
    assert!(t.token.starts_with("dpk_"));
    assert_eq!(a.check_bearer(&t.token).unwrap().name, "ana");
    // Only the hash is stored.
    let stored = &f.accounts.api_tokens(Some("ana")).unwrap()[0];
    assert!(!t.token.contains(&stored.secret_hash));
    // The same token with its last (hex) character changed.
    let (head, last) = t.token.split_at(t.token.len() - 1);
    let wrong = format!("{head}{}", if last == "0" { "1" } else { "0" });
    assert_eq!(a.check_bearer(&wrong), Err(AuthError::InvalidToken));
    f.accounts.revoke_api_token(&t.id).unwrap();
    assert_eq!(a.check_bearer(&t.token), Err(AuthError::InvalidToken));
    let short = f
        .accounts
        .create_api_token("ana", "ci", Some(Duration::from_secs(0)))
        .unwrap();
    assert_eq!(a.check_bearer(&short.token), Err(AuthError::InvalidToken));
    assert!(f.accounts.create_api_token("ghost", "x", None).is_err());
}

#[test]
fn accounts_keep_an_administrator_and_check_names() {
    let f = fixture();
    assert!(matches!(
        f.accounts.remove_user("admin"),
        Err(AuthError::Conflict { .. })
    ));
    assert!(matches!(
        f.accounts.set_groups("admin", &[DATAREAD.to_string()]),
        Err(AuthError::Conflict { .. })
    ));
    for bad in ["", "Ana", "a b", "-x", "x/y"] {
        assert!(
            f.accounts.add_user(bad, PW, &[]).is_err(),
            "{bad:?} accepted"
        );
    }
    assert!(matches!(
        f.accounts.add_user("ana", PW, &[]),
        Err(AuthError::AlreadyExists { .. })
    ));
    assert!(matches!(
        f.accounts.add_user("bo", "weak", &[]),
        Err(AuthError::WeakPassword { .. })
    ));
    let target: TargetTable = "sales.orders".parse().unwrap();
    f.accounts
        .grant(
            "eu-team",
            &target,
            Some(" region = 'EU' "),
            &["email".into()],
            "admin",
        )
        .unwrap();
    let a = auth(&f, options());
    let grants = a.grants();
    assert_eq!(grants.len(), 1);
    assert_eq!(grants[0].row_filter.as_deref(), Some("region = 'EU'"));
    assert!("sales".parse::<TargetTable>().is_err());
    assert!("Sales.x".parse::<TargetTable>().is_err());
    assert_eq!("s.*".parse::<TargetTable>().unwrap().table, None);
    f.accounts.revoke_grant("eu-team", &target).unwrap();
    assert!(a.grants().is_empty());
    assert!(f.accounts.revoke_grant("eu-team", &target).is_err());
}

#[test]
fn generated_signing_key_is_kept() {
    let f = fixture();
    let a = auth(&f, AuthOptions::default());
    let token = a.login("ana", PW, ADDR).unwrap().token;
    // A restart (new authenticator, same store) accepts the token.
    let b = auth(&f, AuthOptions::default());
    assert_eq!(b.check_bearer(&token).unwrap().name, "ana");
    // A configured key that is too short is refused.
    assert!(
        Authenticator::new(
            Arc::clone(&f.store),
            AuthOptions {
                signing_key: Some("short".into()),
                ..AuthOptions::default()
            }
        )
        .is_err()
    );
}

#[test]
fn invited_accounts_sign_in_by_email_once_they_have_a_password() {
    let f = fixture();
    let a = auth(&f, options());
    let by = Actor::command_line();
    let accounts = f
        .accounts
        .clone()
        .with_organisation(&["@Example.com".to_string()], &[DATA_PRIVATE.to_string()]);
    let ann = accounts
        .invite(
            "Ann@Example.com",
            "Ann Lee",
            Some(&[DATAREAD.to_string()]),
            &by,
        )
        .unwrap();
    assert_eq!(ann.name, "ann");
    assert_eq!(ann.email.as_deref(), Some("ann@example.com"));
    assert_eq!(ann.state, AccountState::Invited);
    let outside = accounts.invite("bob@partner.io", "", None, &by).unwrap();
    assert_eq!(outside.name, "bob_partner_io");
    assert_eq!(outside.groups, [DATA_PRIVATE]);
    // the same email in another case is the same account
    assert!(matches!(
        accounts.invite("ANN@example.com", "", None, &by),
        Err(AuthError::AlreadyExists { .. })
    ));
    // invited: no password, no sign-in
    assert_eq!(
        a.login("ann@example.com", PW, ADDR).map(|_| ()),
        Err(AuthError::InvalidCredentials)
    );
    f.accounts.set_password("ann@example.com", PW).unwrap();
    assert_eq!(
        f.accounts.account("ann").unwrap().state,
        AccountState::Active
    );
    for login in ["ann", "ann@example.com", "ANN@EXAMPLE.COM"] {
        let session = a.login(login, PW, ADDR).unwrap();
        assert_eq!(session.principal.id, ann.id);
        assert_eq!(session.principal.name, "ann");
        assert_eq!(claims_of(&session.token)["uid"], ann.id);
    }
    let actions: Vec<String> = f
        .accounts
        .changes(Some(ann.id), 10)
        .unwrap()
        .into_iter()
        .map(|c| c.action)
        .collect();
    assert_eq!(actions, ["password", "invite"]);
}

#[test]
fn a_disabled_account_cannot_sign_in_and_its_tokens_stop() {
    let f = fixture();
    let a = auth(&f, options());
    let by = Actor::command_line();
    let session = a.login("ana", PW, ADDR).unwrap();
    let api = f.accounts.create_api_token("ana", "ci", None).unwrap();
    assert!(a.check_bearer(&api.token).is_ok());
    let disabled = f
        .accounts
        .set_state("ana", AccountState::Disabled, &by)
        .unwrap();
    assert_eq!(disabled.state, AccountState::Disabled);
    assert_eq!(a.check_bearer(&session.token), Err(AuthError::InvalidToken));
    assert_eq!(a.check_bearer(&api.token), Err(AuthError::InvalidToken));
    // the right password says why; a wrong one says nothing more
    assert_eq!(
        a.login("ana", PW, ADDR).map(|_| ()),
        Err(AuthError::Disabled)
    );
    assert_eq!(
        a.login("ana", "Wrong-Horse-9", ADDR).map(|_| ()),
        Err(AuthError::InvalidCredentials)
    );
    f.accounts
        .set_state("ana", AccountState::Active, &by)
        .unwrap();
    assert!(a.check_bearer(&api.token).is_ok());
    assert!(a.login("ana", PW, ADDR).is_ok());
}

#[test]
fn the_last_active_administrator_stays() {
    let f = fixture();
    let by = Actor::command_line();
    for result in [
        f.accounts
            .set_state("admin", AccountState::Disabled, &by)
            .map(|_| ()),
        f.accounts.delete("admin", &by),
        f.accounts
            .change_groups("admin", &[DATAREAD.to_string()], &by)
            .map(|_| ()),
    ] {
        assert!(
            matches!(result, Err(AuthError::Conflict { .. })),
            "{result:?}"
        );
    }
    // a second administrator who is disabled does not count
    f.accounts
        .add_user("ops2", PW, &[DATA_OPS.to_string()])
        .unwrap();
    f.accounts
        .set_state("ops2", AccountState::Disabled, &by)
        .unwrap();
    assert!(f.accounts.delete("admin", &by).is_err());
    f.accounts
        .set_state("ops2", AccountState::Active, &by)
        .unwrap();
    f.accounts.delete("admin", &by).unwrap();
    assert!(f.accounts.account("admin").is_err());
}

#[test]
fn a_token_from_before_account_ids_is_honoured_only_for_its_own_account() {
    let f = fixture();
    let key = "k".repeat(32);
    let a = auth(&f, options());
    let ana = f.accounts.account("ana").unwrap();
    let legacy = |iat: i64| {
        let claims = serde_json::json!({
            "sub": "ana", "iat": iat, "exp": dataport_state::now_secs() + 3600,
            "iss": "dataport", "jti": format!("legacy-{iat}"),
        });
        sign_raw("", &claims, key.as_bytes(), jsonwebtoken::Algorithm::HS256)
    };
    let principal = a.check_bearer(&legacy(ana.created_at)).unwrap();
    assert_eq!(principal.id, ana.id);
    // issued before this account existed: it was someone else's 'ana'
    assert_eq!(
        a.check_bearer(&legacy(ana.created_at - 1)),
        Err(AuthError::InvalidToken)
    );
    // a token naming one account and carrying another's id is refused
    let admin = f.accounts.account("admin").unwrap();
    let mixed = serde_json::json!({
        "sub": "ana", "uid": admin.id, "iat": dataport_state::now_secs(),
        "exp": dataport_state::now_secs() + 3600, "iss": "dataport", "jti": "mixed",
    });
    let mixed = sign_raw("", &mixed, key.as_bytes(), jsonwebtoken::Algorithm::HS256);
    assert_eq!(a.check_bearer(&mixed), Err(AuthError::InvalidToken));
}

/// A state database written by the first release (schema version 4, username-only accounts):
/// alice (dataread, API token), bob (data-ops, dataread), carol (data-private), two grants and an
/// audit entry. Migrated, every account signs in as before and keeps its groups and tokens.
#[test]
fn a_round_one_state_database_keeps_working() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("state")).unwrap();
    let fixture = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../state/tests/fixtures/round1.sqlite");
    std::fs::copy(&fixture, dir.path().join("state/dataport.sqlite")).unwrap();
    let store = Arc::new(StateStore::open(dir.path()).unwrap());
    let accounts = Accounts::new(Arc::clone(&store));
    let a = auth_on(&store);
    let users = accounts.users().unwrap();
    let names: Vec<(&str, AccountState, Vec<String>)> = users
        .iter()
        .map(|u| (u.name.as_str(), u.state, u.groups.clone()))
        .collect();
    assert_eq!(
        names,
        [
            ("alice", AccountState::Active, vec![DATAREAD.to_string()]),
            (
                "bob",
                AccountState::Active,
                vec![DATA_OPS.to_string(), DATAREAD.to_string()]
            ),
            (
                "carol",
                AccountState::Active,
                vec![DATA_PRIVATE.to_string()]
            ),
        ]
    );
    for (user, password) in [
        ("alice", "Alice-Pass1"),
        ("bob", "Bob-Pass12"),
        ("carol", "Carol-Pass1"),
    ] {
        let session = a.login(user, password, ADDR).unwrap();
        assert!(a.check_bearer(&session.token).is_ok());
    }
    let token =
        "dpk_c1b3ae4370b04638_637806097c59017b04221973eed1e9d8da1a1b88025c8cf51a1dc7edc524dc8d";
    let alice = a.check_bearer(token).unwrap();
    assert_eq!((alice.name.as_str(), alice.id), ("alice", users[0].id));
    assert_eq!(accounts.grants().unwrap().len(), 2);
    let audit = store
        .audit_entries(&dataport_state::AuditQuery {
            user: Some("alice".into()),
            limit: 10,
        })
        .unwrap();
    assert_eq!(audit.len(), 1);
    assert_eq!(audit[0].account_id, Some(users[0].id));
    // new accounts get new ids, never an old one's
    accounts.add_user("dave", PW, &[]).unwrap();
    let dave = accounts.account("dave").unwrap();
    assert!(dave.id > users.iter().map(|u| u.id).max().unwrap());
}

fn auth_on(store: &Arc<StateStore>) -> Authenticator {
    Authenticator::new(Arc::clone(store), options()).unwrap()
}

#[test]
fn a_password_link_works_once_and_ends_the_older_ones() {
    let f = fixture();
    let a = auth(&f, options());
    let by = Actor::command_line();
    let ann = f.accounts.invite("ann@example.com", "", None, &by).unwrap();
    let first = f
        .accounts
        .password_link("ann@example.com")
        .unwrap()
        .unwrap();
    assert_eq!(first.purpose, PasswordPurpose::Setup);
    let second = f
        .accounts
        .password_link("ANN@example.com")
        .unwrap()
        .unwrap();
    assert_ne!(first.token, second.token);
    assert!(matches!(
        f.accounts.set_password_with_link(&second.token, "weak"),
        Err(AuthError::WeakPassword { .. })
    ));
    let set = f
        .accounts
        .set_password_with_link(&second.token, PW)
        .unwrap();
    assert_eq!((set.id, set.state), (ann.id, AccountState::Active));
    assert!(a.login("ann@example.com", PW, ADDR).is_ok());
    for used in [&second.token, &first.token] {
        assert!(matches!(
            f.accounts.set_password_with_link(used, "Another-Pass9"),
            Err(AuthError::InvalidInput { .. })
        ));
    }
    // an active account's link resets; it ends the sessions opened before it
    let session = a.login("ann@example.com", PW, ADDR).unwrap();
    let reset = f
        .accounts
        .password_link("ann_example_com")
        .unwrap()
        .unwrap();
    assert_eq!(reset.purpose, PasswordPurpose::Reset);
    std::thread::sleep(Duration::from_millis(1100));
    f.accounts
        .set_password_with_link(&reset.token, "Another-Pass9")
        .unwrap();
    assert_eq!(a.check_bearer(&session.token), Err(AuthError::InvalidToken));
    assert!(a.login("ann@example.com", "Another-Pass9", ADDR).is_ok());
}

#[test]
fn an_allow_listed_outside_email_registers_through_a_set_up_link() {
    let f = fixture();
    let accounts = f
        .accounts
        .clone()
        .with_organisation(&["example.com".to_string()], &[DATAREAD.to_string()])
        .with_password_emails(&["Zoe@Partner.io".to_string()]);
    assert!(accounts.password_link("eve@partner.io").unwrap().is_none());
    let link = accounts.password_link("zoe@PARTNER.io").unwrap().unwrap();
    assert_eq!(link.purpose, PasswordPurpose::Setup);
    assert_eq!(
        (
            link.account.name.as_str(),
            link.account.state,
            link.account.groups.clone()
        ),
        (
            "zoe_partner_io",
            AccountState::Invited,
            vec![DATAREAD.to_string()]
        )
    );
    // asking again finds the account, not a second one
    let again = accounts.password_link("zoe@partner.io").unwrap().unwrap();
    assert_eq!(again.account.id, link.account.id);
    let zoe = accounts.set_password_with_link(&again.token, PW).unwrap();
    assert_eq!(zoe.state, AccountState::Active);
    let registered = accounts
        .changes(None, 10)
        .unwrap()
        .into_iter()
        .filter(|c| c.action == "register")
        .map(|c| (c.actor, c.account))
        .collect::<Vec<_>>();
    assert_eq!(
        registered,
        vec![(
            "self-registration".to_string(),
            "zoe_partner_io".to_string()
        )]
    );
}

#[test]
fn no_link_for_unknown_or_disabled_accounts_and_none_after_its_hour() {
    let f = fixture();
    let by = Actor::command_line();
    assert!(
        f.accounts
            .password_link("nobody@example.com")
            .unwrap()
            .is_none()
    );
    let link = f.accounts.password_link("ana").unwrap().unwrap();
    f.accounts
        .set_state("ana", AccountState::Disabled, &by)
        .unwrap();
    assert!(f.accounts.password_link("ana").unwrap().is_none());
    assert_eq!(
        f.accounts
            .set_password_with_link(&link.token, PW)
            .map(|_| ()),
        Err(AuthError::Disabled)
    );
    f.accounts
        .set_state("ana", AccountState::Active, &by)
        .unwrap();
    // a link whose hour is over
    let ana = f.accounts.account("ana").unwrap();
    let now = dataport_state::now_secs();
    f.store
        .add_password_token(
            &crate::authenticator::hash_secret("old-token"),
            ana.id,
            PasswordPurpose::Reset,
            now - 3700,
            now - 100,
        )
        .unwrap();
    assert!(matches!(
        f.accounts.set_password_with_link("old-token", PW),
        Err(AuthError::InvalidInput { .. })
    ));
}

#[test]
fn link_requests_are_limited_per_account_and_per_address() {
    let f = fixture();
    for _ in 0..5 {
        f.accounts.check_link_request("ana", "10.0.0.9").unwrap();
    }
    assert!(matches!(
        f.accounts.check_link_request("ANA", "10.0.0.8"),
        Err(AuthError::TooManyAttempts { .. })
    ));
    assert!(matches!(
        f.accounts.check_link_request("someone-else", "10.0.0.9"),
        Err(AuthError::TooManyAttempts { .. })
    ));
    f.accounts
        .check_link_request("someone-else", "10.0.0.7")
        .unwrap();
}

#[test]
fn a_browser_session_ends_when_idle_or_old_and_checks_its_csrf_token() {
    let f = fixture();
    let a = auth(
        &f,
        AuthOptions {
            session_idle: Duration::from_secs(600),
            session_lifetime: Duration::from_secs(3600),
            ..options()
        },
    );
    let ana = a.principal("ana").unwrap().unwrap();
    let cookie = a.start_session(&ana, ADDR, "test", None).unwrap();
    let checked = a.check_session(&cookie.value).unwrap();
    assert_eq!(checked.principal, ana);
    assert!(checked.csrf_matches(&cookie.csrf));
    assert!(!checked.csrf_matches("not-it"));
    // a forged secret for a real id
    let forged = format!("{}.{}", cookie.id, "0".repeat(64));
    assert_eq!(
        a.check_session(&forged).map(|_| ()),
        Err(AuthError::InvalidToken)
    );
    // idle too long, or past its absolute end
    let now = dataport_state::now_secs();
    let mut session = f.store.browser_session(&cookie.id).unwrap().unwrap();
    for (last_seen, expires) in [(now - 601, now + 100), (now, now)] {
        f.store.remove_browser_session(&session.id, None).unwrap();
        session.last_seen_at = last_seen;
        session.expires_at = expires;
        f.store.add_browser_session(&session).unwrap();
        assert_eq!(
            a.check_session(&cookie.value).map(|_| ()),
            Err(AuthError::InvalidToken),
            "last seen {last_seen}, ends {expires}"
        );
    }
    // signing in again from the same browser ends the old session
    let first = a.start_session(&ana, ADDR, "test", None).unwrap();
    let second = a
        .start_session(&ana, ADDR, "test", Some(&first.value))
        .unwrap();
    assert!(a.check_session(&first.value).is_err());
    assert!(a.check_session(&second.value).is_ok());
    assert_eq!(a.sessions(ana.id).unwrap().len(), 1);
    assert!(a.end_session_of(ana.id + 1000, &second.id).is_err());
    a.end_session_of(ana.id, &second.id).unwrap();
    assert!(a.check_session(&second.value).is_err());
}

#[test]
fn an_oidc_identity_signs_in_as_its_account_or_a_new_one_of_the_organisation() {
    let f = fixture();
    let by = Actor::command_line();
    let accounts = f
        .accounts
        .clone()
        .with_organisation(&["example.com".to_string()], &[DATAREAD.to_string()]);
    // first sign-in of someone of the organisation: a new active account
    let ann = accounts
        .oidc_sign_in(
            "google",
            "Ann@Example.com",
            Some("Ann Lee"),
            Some("https://pic/ann"),
        )
        .unwrap();
    assert_eq!(
        (ann.name.as_str(), ann.state, ann.groups.clone()),
        ("ann", AccountState::Active, vec![DATAREAD.to_string()])
    );
    assert_eq!(ann.picture_url.as_deref(), Some("https://pic/ann"));
    assert!(ann.password_hash.is_none());
    // again: the same account
    let again = accounts
        .oidc_sign_in("google", "ann@example.com", None, None)
        .unwrap();
    assert_eq!((again.id, again.display_name.as_str()), (ann.id, "Ann Lee"));
    // an invited outside email becomes active; an uninvited one is refused
    let bob = accounts.invite("bob@partner.io", "", None, &by).unwrap();
    let signed = accounts
        .oidc_sign_in("google", "bob@partner.io", Some("Bob"), None)
        .unwrap();
    assert_eq!((signed.id, signed.state), (bob.id, AccountState::Active));
    assert!(matches!(
        accounts.oidc_sign_in("google", "eve@evil.com", None, None),
        Err(AuthError::Forbidden { .. })
    ));
    // a disabled account stays out
    accounts
        .set_state("ann", AccountState::Disabled, &by)
        .unwrap();
    assert_eq!(
        accounts
            .oidc_sign_in("google", "ann@example.com", None, None)
            .map(|_| ()),
        Err(AuthError::Disabled)
    );
    let actions: Vec<(String, String)> = accounts
        .changes(None, 20)
        .unwrap()
        .into_iter()
        .map(|c| (c.actor, c.action))
        .collect();
    assert!(
        actions.contains(&("oidc:google".into(), "create".into())),
        "{actions:?}"
    );
    assert!(
        actions.contains(&("oidc:google".into(), "activate".into())),
        "{actions:?}"
    );
}

#[test]
fn a_login_code_signs_in_only_the_program_with_its_verifier_once() {
    let f = fixture();
    let a = auth(&f, options());
    let ana = a.principal("ana").unwrap().unwrap();
    let verifier = "v".repeat(64);
    let challenge = oidc::pkce_challenge(&verifier);
    assert!(matches!(
        a.grant_login_code(&ana, "short"),
        Err(AuthError::InvalidInput { .. })
    ));
    // the wrong verifier uses the code up
    let code = a.grant_login_code(&ana, &challenge).unwrap();
    assert!(matches!(
        a.redeem_login_code(&code, &"w".repeat(64)),
        Err(AuthError::InvalidInput { .. })
    ));
    assert!(a.redeem_login_code(&code, &verifier).is_err());
    let code = a.grant_login_code(&ana, &challenge).unwrap();
    let session = a.redeem_login_code(&code, &verifier).unwrap();
    assert_eq!(session.principal, ana);
    assert_eq!(a.check_bearer(&session.token).unwrap(), ana);
    assert!(a.redeem_login_code(&code, &verifier).is_err(), "used");
    // disabled in between: no token
    let code = a.grant_login_code(&ana, &challenge).unwrap();
    f.accounts
        .set_state("ana", AccountState::Disabled, &Actor::command_line())
        .unwrap();
    assert_eq!(
        a.redeem_login_code(&code, &verifier).map(|_| ()),
        Err(AuthError::Disabled)
    );
}

#[test]
fn an_assistant_token_is_good_only_where_check_bearer_is_asked() {
    let f = fixture();
    let a = auth(&f, options());
    let t = f
        .accounts
        .create_scoped_api_token(
            "ana",
            "Claude",
            Some(Duration::from_secs(600)),
            Some(ASSISTANT_SCOPE),
        )
        .unwrap();
    let stored = &f.accounts.api_tokens(Some("ana")).unwrap()[0];
    assert_eq!(stored.scope.as_deref(), Some(ASSISTANT_SCOPE));
    // The MCP endpoint's check: the account's principal, marked as an assistant.
    let p = a.check_bearer(&t.token).unwrap();
    assert_eq!(
        (p.name.as_str(), p.assistant, p.limited),
        ("ana", true, false)
    );
    assert_eq!(p.groups, [DATAREAD]);
    // Every other way in refuses it: Flight SQL and the sign-ins (authenticate), the desktop
    // routes and the gateway (check_desktop).
    let forbidden = Err(AuthError::Forbidden {
        message: ASSISTANT_ONLY_AT_MCP.into(),
    });
    assert_eq!(
        a.authenticate(&Credentials::Bearer(t.token.clone()), ADDR),
        forbidden
    );
    assert_eq!(a.check_desktop(&t.token), forbidden);
    // A token of the whole API and a session are no assistants.
    let full = f.accounts.create_api_token("ana", "laptop", None).unwrap();
    assert!(!a.check_bearer(&full.token).unwrap().assistant);
    assert!(
        !a.authenticate(&Credentials::Bearer(full.token.clone()), ADDR)
            .unwrap()
            .assistant
    );
    assert!(
        !a.check_bearer(&a.login("ana", PW, ADDR).unwrap().token)
            .unwrap()
            .assistant
    );
    assert!(!Principal::account(1, "ana", vec![]).assistant);
    // An unknown scope is refused when asked for.
    assert!(matches!(
        f.accounts
            .create_scoped_api_token("ana", "x", None, Some("admin")),
        Err(AuthError::InvalidInput { .. })
    ));
    // Revoked like any token (and then refused everywhere).
    f.accounts.revoke_own_api_token(p.id, &t.id).unwrap();
    assert_eq!(a.check_bearer(&t.token), Err(AuthError::InvalidToken));
}

#[test]
fn a_token_of_a_scope_this_binary_does_not_know_is_refused() {
    let f = fixture();
    let a = auth(&f, options());
    let t = f.accounts.create_api_token("ana", "future", None).unwrap();
    f.store
        .add_api_token(&ApiTokenRecord {
            id: "fut".into(),
            scope: Some("something-new".into()),
            ..f.accounts.api_tokens(Some("ana")).unwrap()[0].clone()
        })
        .unwrap();
    let secret = t.token.rsplit('_').next().unwrap();
    assert_eq!(
        a.check_bearer(&format!("dpk_fut_{secret}")),
        Err(AuthError::InvalidToken)
    );
}

#[test]
fn revoking_by_the_token_itself_touches_only_assistant_tokens() {
    let f = fixture();
    let a = auth(&f, options());
    let assistant = f
        .accounts
        .create_scoped_api_token("ana", "Claude", None, Some(ASSISTANT_SCOPE))
        .unwrap();
    let full = f.accounts.create_api_token("ana", "laptop", None).unwrap();
    assert!(!a.revoke_assistant_token(&full.token).unwrap());
    assert!(a.check_bearer(&full.token).is_ok());
    assert!(!a.revoke_assistant_token("dpk_nothing_here").unwrap());
    assert!(!a.revoke_assistant_token("not a token").unwrap());
    assert!(a.revoke_assistant_token(&assistant.token).unwrap());
    assert_eq!(
        a.check_bearer(&assistant.token),
        Err(AuthError::InvalidToken)
    );
    assert!(!a.revoke_assistant_token(&assistant.token).unwrap());
}

fn challenge_of(verifier: &str) -> String {
    oidc::pkce_challenge(verifier)
}

#[test]
fn an_oauth_code_gives_one_assistant_token_and_a_second_use_revokes_it() {
    let f = fixture();
    let a = auth(&f, options());
    let client = f
        .accounts
        .register_oauth_client("Claude", vec!["http://127.0.0.1:3000/cb".into()], ADDR)
        .unwrap();
    assert!(client.client_id.starts_with("dpc_"));
    assert_eq!(
        f.accounts.oauth_client(&client.client_id).unwrap(),
        Some(client.clone())
    );
    let ana = a.principal("ana").unwrap().unwrap();
    let verifier = "v".repeat(50);
    let challenge = challenge_of(&verifier);
    let grant = OAuthGrant {
        client_id: &client.client_id,
        redirect_uri: "http://127.0.0.1:3000/cb",
        code_challenge: &challenge,
        scope: "mcp",
        resource: Some("http://127.0.0.1:8080/mcp"),
    };
    // Only a person may approve, and only with a proper challenge.
    let mut assistant = ana.clone();
    assistant.assistant = true;
    assert!(matches!(
        f.accounts.grant_oauth_code(&assistant, &grant),
        Err(AuthError::Forbidden { .. })
    ));
    assert!(matches!(
        f.accounts.grant_oauth_code(
            &ana,
            &OAuthGrant {
                code_challenge: "short",
                ..grant.clone()
            }
        ),
        Err(AuthError::InvalidInput { .. })
    ));
    let code = f.accounts.grant_oauth_code(&ana, &grant).unwrap();
    let found = f.accounts.oauth_code(&code).unwrap().unwrap();
    assert_ne!(found.code_hash, code, "only the hash is kept");
    assert_eq!(found.code_challenge, challenge);
    assert_eq!(found.resource.as_deref(), Some("http://127.0.0.1:8080/mcp"));
    assert!(found.expires_at - found.created_at == OAUTH_CODE_TTL.as_secs() as i64);

    let OAuthRedemption::Issued(token) = f
        .accounts
        .redeem_oauth_code(&found, "Claude (OAuth)")
        .unwrap()
    else {
        panic!("the first exchange issues a token");
    };
    let p = a.check_bearer(&token.token).unwrap();
    assert!(p.assistant && p.name == "ana");
    let stored = f.store.api_token(&token.id).unwrap().unwrap();
    assert_eq!(stored.label, "Claude (OAuth)");
    assert_eq!(
        stored.expires_at.unwrap() - stored.created_at,
        OAUTH_TOKEN_TTL.as_secs() as i64
    );
    // Again: refused, and the first token is revoked.
    assert!(matches!(
        f.accounts
            .redeem_oauth_code(&found, "Claude (OAuth)")
            .unwrap(),
        OAuthRedemption::Reused
    ));
    assert_eq!(a.check_bearer(&token.token), Err(AuthError::InvalidToken));
    assert_eq!(f.accounts.oauth_code("unknown").unwrap(), None);

    // A code of an account disabled since gives nothing.
    let code = f.accounts.grant_oauth_code(&ana, &grant).unwrap();
    let found = f.accounts.oauth_code(&code).unwrap().unwrap();
    f.accounts
        .set_state("ana", AccountState::Disabled, &Actor::command_line())
        .unwrap();
    assert!(matches!(
        f.accounts.redeem_oauth_code(&found, "x").unwrap(),
        OAuthRedemption::Unusable
    ));
}

#[test]
fn oauth_registrations_are_limited_per_address() {
    let f = fixture();
    for n in 0..20 {
        f.accounts
            .register_oauth_client(&format!("c{n}"), vec!["https://a.example/cb".into()], ADDR)
            .unwrap();
    }
    assert!(matches!(
        f.accounts
            .register_oauth_client("one more", vec!["https://a.example/cb".into()], ADDR),
        Err(AuthError::TooManyAttempts { .. })
    ));
    assert!(
        f.accounts
            .register_oauth_client("elsewhere", vec!["https://a.example/cb".into()], "10.0.0.2")
            .is_ok()
    );
}
