use super::*;

#[test]
fn durations_and_sizes() {
    assert_eq!(
        parse_duration("k", "250ms").unwrap(),
        Duration::from_millis(250)
    );
    assert_eq!(parse_duration("k", "30s").unwrap(), Duration::from_secs(30));
    assert_eq!(parse_duration("k", "5m").unwrap(), Duration::from_secs(300));
    assert_eq!(parse_duration("k", "2").unwrap(), Duration::from_secs(2));
    let e = parse_duration("engine.query_timeout", "soon").unwrap_err();
    assert!(e.to_string().starts_with("engine.query_timeout:"), "{e}");
    assert_eq!(parse_size("k", "1MiB").unwrap(), 1 << 20);
    assert_eq!(parse_size("k", "2GB").unwrap(), 2_000_000_000);
    assert!(parse_size("k", "12 parsecs").is_err());
    assert!(parse_memory("k", "50%").unwrap() > 0);
    assert!(parse_memory("k", "150%").is_err());
}

#[test]
fn env_references_are_substituted() {
    let env = |k: &str| (k == "HOME_DIR").then(|| "/srv/data".to_string());
    assert_eq!(
        substitute_env("catalog:\n  data_dir: ${HOME_DIR}/x\n", env).unwrap(),
        "catalog:\n  data_dir: /srv/data/x\n"
    );
    assert_eq!(substitute_env("a: ${NOPE}", env).unwrap_err(), "NOPE");
}

fn load_yaml(yaml: &str, o: Overrides) -> Result<Config, ConfigError> {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("dataport.yaml");
    std::fs::write(&path, yaml).unwrap();
    Config::load(&Overrides {
        config: Some(path),
        ..o
    })
}

#[test]
fn precedence_is_defaults_file_overrides() {
    let c = Config::load(&Overrides::default()).unwrap();
    assert_eq!(c.http_addr.to_string(), "127.0.0.1:8080");
    // The default, like any relative path, is resolved against the working directory once.
    let cwd = std::env::current_dir().unwrap();
    assert_eq!(c.data_dir, cwd.join("dataport-data"));
    assert_eq!(c.spill_dir, cwd.join("dataport-data").join("spill"));
    let yaml = "server:\n  http_addr: 127.0.0.1:9000\nengine:\n  query_timeout: 10s\n";
    let c = load_yaml(yaml, Overrides::default()).unwrap();
    assert_eq!(c.http_addr.port(), 9000);
    assert_eq!(c.query_timeout, Duration::from_secs(10));
    let c = load_yaml(
        yaml,
        Overrides {
            http_addr: Some("127.0.0.1:0".into()),
            ..Default::default()
        },
    )
    .unwrap();
    assert_eq!(c.http_addr.port(), 0);
}

#[test]
fn relative_paths_become_absolute_against_the_working_directory() {
    let cwd = std::env::current_dir().unwrap();
    let c = load_yaml(
        "catalog:\n  data_dir: data/here\nengine:\n  spill_dir: ../spill\nserver:\n  flight_tls_cert: tls/c.pem\n  flight_tls_key: /abs/k.pem\n",
        Overrides::default(),
    )
    .unwrap();
    assert_eq!(c.data_dir, cwd.join("data/here"));
    assert_eq!(c.spill_dir, cwd.join("../spill"));
    assert_eq!(
        c.flight_tls,
        Some((cwd.join("tls/c.pem"), PathBuf::from("/abs/k.pem")))
    );
    let e = load_yaml("catalog:\n  data_dir: ''\n", Overrides::default()).unwrap_err();
    assert!(e.to_string().starts_with("catalog.data_dir:"), "{e}");
}

#[test]
fn bad_files_name_the_key() {
    let e = load_yaml("server:\n  htp_addr: x\n", Overrides::default()).unwrap_err();
    assert!(e.to_string().contains("htp_addr"), "{e}");
    let e = load_yaml("engine:\n  query_timeout: forever\n", Overrides::default()).unwrap_err();
    assert!(e.to_string().contains("engine.query_timeout"), "{e}");
    let e = load_yaml("server:\n  http_addr: nowhere\n", Overrides::default()).unwrap_err();
    assert!(e.to_string().contains("server.http_addr"), "{e}");
    let e = load_yaml(
        "engine:\n  datafusion:\n    batch_size: '1'\n",
        Overrides::default(),
    )
    .unwrap_err();
    assert!(
        e.to_string().contains("engine.datafusion.batch_size"),
        "{e}"
    );
}

#[test]
fn flight_settings() {
    let c = load_yaml(
        "server:\n  flight_max_message_bytes: 2MiB\n  flight_tls_cert: /c.pem\n  flight_tls_key: /k.pem\nauth:\n  admin_password: Long-enough1\n  token_ttl: 1h\n",
        Overrides::default(),
    )
    .unwrap();
    assert_eq!(c.flight_max_message_bytes, 2 << 20);
    assert_eq!(
        c.flight_tls,
        Some((PathBuf::from("/c.pem"), PathBuf::from("/k.pem")))
    );
    assert_eq!(c.admin_password, Some(Secret("Long-enough1".into())));
    assert!(!format!("{c:?}").contains("Long-enough1"));
    assert_eq!(c.token_ttl, Duration::from_secs(3600));

    let e = load_yaml("server:\n  flight_tls_cert: /c.pem\n", Overrides::default()).unwrap_err();
    assert!(e.to_string().starts_with("server.flight_tls_key:"), "{e}");
    let e = load_yaml("auth:\n  admin_password: short\n", Overrides::default()).unwrap_err();
    assert!(e.to_string().starts_with("auth.admin_password:"), "{e}");
    let e = load_yaml(
        "server:\n  flight_max_message_bytes: 1KiB\n",
        Overrides::default(),
    )
    .unwrap_err();
    assert!(
        e.to_string()
            .starts_with("server.flight_max_message_bytes:"),
        "{e}"
    );
    let o = Overrides {
        admin_password: Some("From-the-env1".into()),
        ..Overrides::default()
    };
    assert_eq!(
        load_yaml("", o).unwrap().admin_password,
        Some(Secret("From-the-env1".into()))
    );
}

#[test]
fn auth_settings() {
    let c = load_yaml(
        "auth:
  refresh_grace: 2d
  issuer: corp
  signing_key: 0123456789abcdef0123456789abcdef
  max_failed_logins: 9
server:
  metrics_allow: [10.0.0.0/8, 127.0.0.1]
  trusted_proxies: ['::1']
",
        Overrides::default(),
    )
    .unwrap();
    assert_eq!(c.token_ttl, Duration::from_secs(30 * 86400));
    assert_eq!(c.refresh_grace, Duration::from_secs(2 * 86400));
    assert_eq!(c.issuer, "corp");
    assert_eq!(c.max_failed_logins, 9);
    assert_eq!(c.metrics_allow.len(), 2);
    assert!(c.metrics_allow[1].contains(&"127.0.0.1".parse::<std::net::IpAddr>().unwrap()));
    assert!(!format!("{c:?}").contains("0123456789abcdef"));
    for (yaml, key) in [
        (
            "auth:\n  admin_password: alllowercase1\n",
            "auth.admin_password:",
        ),
        ("auth:\n  signing_key: short\n", "auth.signing_key:"),
        ("auth:\n  max_failed_logins: 0\n", "auth.max_failed_logins:"),
        (
            "server:\n  metrics_allow: [nonsense]\n",
            "server.metrics_allow:",
        ),
    ] {
        let e = load_yaml(yaml, Overrides::default()).unwrap_err();
        assert!(e.to_string().starts_with(key), "{yaml}: {e}");
    }
}

#[test]
fn memory_tables_come_with_a_budget() {
    let none = load_yaml("catalog:\n  watch: false\n", Overrides::default()).unwrap();
    assert!(!none.memory_tables.enabled());
    let yaml = "catalog:\n  memory_tables: [tpch.lineitem, 'sales.*']\n  memory_budget: 2GiB\n";
    let c = load_yaml(yaml, Overrides::default()).unwrap();
    assert_eq!(c.memory_tables.tables, ["tpch.lineitem", "sales.*"]);
    assert_eq!(c.memory_tables.budget, 2 << 30);
    // the command line wins; the budget defaults to a share of RAM
    let c = load_yaml(
        yaml,
        Overrides {
            memory_tables: Some(vec!["tpch.*".into()]),
            memory_budget: Some("25%".into()),
            ..Overrides::default()
        },
    )
    .unwrap();
    assert_eq!(c.memory_tables.tables, ["tpch.*"]);
    assert!(c.memory_tables.budget > 0);
    let e = load_yaml("catalog:\n  memory_tables: [tpch]\n", Overrides::default()).unwrap_err();
    assert!(e.to_string().contains("catalog.memory_tables"), "{e}");
}
