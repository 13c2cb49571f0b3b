use std::sync::Arc;
use std::time::Duration;

use super::*;

fn auth(ttl: Duration) -> Authenticator {
    Authenticator::new(Arc::new(BootstrapAdmin::new("password")), ttl)
}

#[test]
fn basic_with_and_without_padding() {
    // admin:password, padded and as the ADBC Go driver sends it.
    for header in [
        "Basic YWRtaW46cGFzc3dvcmQ=",
        "Basic YWRtaW46cGFzc3dvcmQ",
        "basic   YWRtaW46cGFzc3dvcmQ",
    ] {
        let creds = parse_authorization(header).unwrap();
        assert_eq!(
            creds,
            Credentials::Basic {
                user: "admin".into(),
                password: "password".into()
            }
        );
        assert_eq!(
            auth(Duration::from_secs(60)).authenticate(&creds).unwrap(),
            Principal::local_admin()
        );
    }
}

#[test]
fn passwords_may_contain_colons() {
    // user "u", password "a:b"
    let creds = parse_authorization("Basic dTphOmI=").unwrap();
    assert_eq!(
        creds,
        Credentials::Basic {
            user: "u".into(),
            password: "a:b".into()
        }
    );
}

#[test]
fn malformed_headers_are_refused_without_echoing_them() {
    for header in [
        "Basic",
        "Basic !!!",
        "Basic YWRtaW4",
        "Bearer",
        "Digest abc",
        "",
    ] {
        let e = parse_authorization(header).unwrap_err();
        assert!(matches!(e, AuthError::Malformed { .. }), "{header}: {e}");
    }
    let e = parse_authorization("Basic c2VjcmV0LXZhbHVl!").unwrap_err();
    assert!(!e.to_string().contains("c2VjcmV0"), "{e}");
}

#[test]
fn wrong_user_or_password() {
    let a = auth(Duration::from_secs(60));
    for (user, password) in [("admin", "nope"), ("bob", "password"), ("admin", "")] {
        let e = a
            .authenticate(&Credentials::Basic {
                user: user.into(),
                password: password.into(),
            })
            .unwrap_err();
        assert_eq!(e, AuthError::InvalidCredentials);
    }
    assert_eq!(a.authenticate_header(None).unwrap_err(), AuthError::Missing);
}

#[test]
fn tokens_issue_lookup_expire_revoke() {
    let a = auth(Duration::from_secs(60));
    let token = a.issue_token(&Principal::local_admin());
    let bearer = parse_authorization(&format!("Bearer {token}")).unwrap();
    assert_eq!(a.authenticate(&bearer).unwrap(), Principal::local_admin());
    assert_ne!(token, a.issue_token(&Principal::local_admin()));
    a.revoke_token(&token);
    assert_eq!(
        a.authenticate(&bearer).unwrap_err(),
        AuthError::InvalidToken
    );
    assert_eq!(
        a.authenticate(&Credentials::Bearer("dpt_bogus".into()))
            .unwrap_err(),
        AuthError::InvalidToken
    );

    let short = auth(Duration::from_millis(1));
    let token = short.issue_token(&Principal::local_admin());
    std::thread::sleep(Duration::from_millis(5));
    assert_eq!(
        short.authenticate(&Credentials::Bearer(token)).unwrap_err(),
        AuthError::InvalidToken
    );
}

#[test]
fn debug_output_hides_secrets() {
    let creds = parse_authorization("Basic YWRtaW46cGFzc3dvcmQ").unwrap();
    assert!(!format!("{creds:?}").contains("password"));
    assert!(!format!("{:?}", BootstrapAdmin::new("hunter2")).contains("hunter2"));
    assert!(!format!("{:?}", Credentials::Bearer("dpt_x".into())).contains("dpt_x"));
}

#[test]
fn constant_time_eq_is_eq() {
    assert!(constant_time_eq(b"abc", b"abc"));
    assert!(!constant_time_eq(b"abc", b"abd"));
    assert!(!constant_time_eq(b"abc", b"ab"));
    assert!(!constant_time_eq(b"", b"a"));
    assert!(constant_time_eq(b"", b""));
}
