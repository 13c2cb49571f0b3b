use super::layers::substitute_env;
use super::value::{parse_memory, parse_size};
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

/// No environment variable is set.
fn no_env(_: &str) -> Option<String> {
    None
}

fn load_yaml(yaml: &str, o: Overrides) -> Result<Config, ConfigError> {
    load_yaml_env(yaml, o, &no_env)
}

fn load_yaml_env(
    yaml: &str,
    o: Overrides,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Config, ConfigError> {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("dataport.yaml");
    std::fs::write(&path, yaml).unwrap();
    Config::resolve(
        &Overrides {
            config: Some(path),
            ..o
        },
        env,
    )
}

#[test]
fn precedence_is_defaults_file_overrides() {
    let c = Config::resolve(&Overrides::default(), &no_env).unwrap();
    assert_eq!(c.settings.http_addr.to_string(), "127.0.0.1:8080");
    // The default, like any relative path, is resolved against the working directory once.
    let cwd = std::env::current_dir().unwrap();
    assert_eq!(c.settings.data_dir, cwd.join("dataport-data"));
    assert_eq!(c.spill_dir, cwd.join("dataport-data").join("spill"));
    let yaml = "server:\n  http_addr: 127.0.0.1:9000\nengine:\n  query_timeout: 10s\n";
    let c = load_yaml(yaml, Overrides::default()).unwrap();
    assert_eq!(c.settings.http_addr.port(), 9000);
    assert_eq!(c.settings.query_timeout, Duration::from_secs(10));
    let c = load_yaml(
        yaml,
        Overrides::default().with("server.http_addr", "127.0.0.1:0"),
    )
    .unwrap();
    assert_eq!(c.settings.http_addr.port(), 0);
}

#[test]
fn relative_paths_become_absolute_against_the_working_directory() {
    let cwd = std::env::current_dir().unwrap();
    let c = load_yaml(
        "catalog:\n  data_dir: data/here\nengine:\n  spill_dir: ../spill\nserver:\n  flight_tls_cert: tls/c.pem\n  flight_tls_key: /abs/k.pem\n",
        Overrides::default(),
    )
    .unwrap();
    assert_eq!(c.settings.data_dir, cwd.join("data/here"));
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
    assert_eq!(c.settings.flight_max_message_bytes.0, 2 << 20);
    assert_eq!(
        c.flight_tls,
        Some((PathBuf::from("/c.pem"), PathBuf::from("/k.pem")))
    );
    assert_eq!(
        c.settings.admin_password,
        Some(Secret("Long-enough1".into()))
    );
    assert!(!format!("{c:?}").contains("Long-enough1"));
    assert_eq!(c.settings.token_ttl, Duration::from_secs(3600));

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
    let env = |k: &str| (k == "DATAPORT_ADMIN_PASSWORD").then(|| "From-the-env1".to_string());
    assert_eq!(
        load_yaml_env("", Overrides::default(), &env)
            .unwrap()
            .settings
            .admin_password,
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
    assert_eq!(c.settings.token_ttl, Duration::from_secs(30 * 86400));
    assert_eq!(c.settings.refresh_grace, Duration::from_secs(2 * 86400));
    assert_eq!(c.settings.issuer, "corp");
    assert_eq!(c.settings.max_failed_logins, 9);
    assert_eq!(c.settings.metrics_allow.len(), 2);
    assert!(
        c.settings.metrics_allow[1].contains(&"127.0.0.1".parse::<std::net::IpAddr>().unwrap())
    );
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
        Overrides::default()
            .with("catalog.memory_tables", "tpch.*")
            .with("catalog.memory_budget", "25%"),
    )
    .unwrap();
    assert_eq!(c.memory_tables.tables, ["tpch.*"]);
    assert!(c.memory_tables.budget > 0);
    let e = load_yaml("catalog:\n  memory_tables: [tpch]\n", Overrides::default()).unwrap_err();
    assert!(e.to_string().contains("catalog.memory_tables"), "{e}");
}

#[test]
fn an_unknown_key_is_refused_with_the_nearest_known_one() {
    for (yaml, suggestion) in [
        ("server:\n  htp_addr: x\n", "did you mean server.http_addr?"),
        ("http_addr: 127.0.0.1:1\n", "did you mean server.http_addr?"),
        (
            "engine:\n  data_dir: /d\n",
            "did you mean catalog.data_dir?",
        ),
        ("servr:\n  http_addr: x\n", "did you mean server?"),
        (
            "catalog:\n  memory_table: ['*']\n",
            "did you mean catalog.memory_tables?",
        ),
    ] {
        let e = load_yaml(yaml, Overrides::default()).unwrap_err();
        assert!(e.to_string().contains(suggestion), "{yaml}: {e}");
    }
    let e = load_yaml("nothing_like_it: 1\n", Overrides::default()).unwrap_err();
    assert!(
        e.to_string()
            .contains("unknown key nothing_like_it; `dataport config --reference`"),
        "{e}"
    );
}

#[test]
fn each_value_says_where_it_came_from() {
    let env = |k: &str| match k {
        "DATAPORT_QUERY_TIMEOUT" => Some("20s".to_string()),
        "DATAPORT_HTTP_ADDR" => Some("127.0.0.1:7000".to_string()),
        "DATAPORT_SIGNING_KEY" => Some("k".repeat(40)),
        _ => None,
    };
    let yaml = "server:\n  http_addr: 127.0.0.1:9000\n  shutdown_grace: 5s\nengine:\n  query_timeout: 10s\n";
    let c = load_yaml_env(
        yaml,
        Overrides::default().with("server.http_addr", "127.0.0.1:0"),
        &env,
    )
    .unwrap();
    // flag > env > file > default
    assert_eq!(c.settings.http_addr.port(), 0);
    assert_eq!(c.settings.query_timeout, Duration::from_secs(20));
    assert_eq!(c.settings.shutdown_grace, Duration::from_secs(5));
    let shown = |path: &str| {
        let e = c.effective.iter().find(|e| e.key.path == path).unwrap();
        (e.value.clone(), e.source.to_string())
    };
    assert_eq!(
        shown("server.http_addr"),
        ("127.0.0.1:0".into(), "flag --http-addr".into())
    );
    assert_eq!(
        shown("engine.query_timeout"),
        ("20s".into(), "env DATAPORT_QUERY_TIMEOUT".into())
    );
    assert_eq!(shown("server.shutdown_grace"), ("5s".into(), "file".into()));
    assert_eq!(shown("auth.token_ttl"), ("30d".into(), "default".into()));
    assert_eq!(
        shown("auth.admin_password"),
        ("(generated)".into(), "default".into())
    );
    let (key, source) = shown("auth.signing_key");
    assert_eq!(source, "env DATAPORT_SIGNING_KEY");
    assert!(!key.contains("kkkk"), "{key}");
    assert!(
        c.effective.iter().all(|e| !e.value.contains("kkkk")),
        "a secret is shown"
    );
    // every key is shown once, in the declarations' order
    let paths: Vec<&str> = c.effective.iter().map(|e| e.key.path).collect();
    let declared: Vec<&str> = keys::KEYS.iter().map(|k| k.path).collect();
    assert_eq!(paths, declared);
}

#[test]
fn environment_names_and_flags_are_derived_from_the_path_and_unique() {
    let key = |p: &str| keys::Key::named(p).unwrap();
    assert_eq!(
        key("server.http_addr").env().as_deref(),
        Some("DATAPORT_HTTP_ADDR")
    );
    assert_eq!(key("server.http_addr").flag().as_deref(), Some("http-addr"));
    assert_eq!(
        key("catalog.data_dir").env().as_deref(),
        Some("DATAPORT_DATA_DIR")
    );
    assert_eq!(
        key("log.format").env().as_deref(),
        Some("DATAPORT_LOG_FORMAT")
    );
    assert_eq!(key("log.format").flag().as_deref(), Some("log-format"));
    // a secret has an environment variable but never a flag; structures neither
    assert_eq!(
        key("auth.signing_key").env().as_deref(),
        Some("DATAPORT_SIGNING_KEY")
    );
    assert_eq!(key("auth.signing_key").flag(), None);
    assert_eq!(key("sources").env(), None);
    assert_eq!(key("engine.datafusion").flag(), None);
    let envs: Vec<String> = keys::KEYS.iter().filter_map(|k| k.env()).collect();
    let unique: std::collections::BTreeSet<&String> = envs.iter().collect();
    assert_eq!(envs.len(), unique.len(), "{envs:?}");
    // the names the server used before the declarations still work
    for name in [
        "DATAPORT_DATA_DIR",
        "DATAPORT_HTTP_ADDR",
        "DATAPORT_FLIGHT_ADDR",
        "DATAPORT_MEMORY_LIMIT",
        "DATAPORT_SPILL_DIR",
        "DATAPORT_QUERY_TIMEOUT",
        "DATAPORT_MAX_JSON_ROWS",
        "DATAPORT_REFRESH_INTERVAL",
        "DATAPORT_MEMORY_TABLES",
        "DATAPORT_MEMORY_BUDGET",
        "DATAPORT_LOG_FORMAT",
        "DATAPORT_FLIGHT_MAX_MESSAGE_BYTES",
        "DATAPORT_FLIGHT_TLS_CERT",
        "DATAPORT_FLIGHT_TLS_KEY",
        "DATAPORT_ADMIN_PASSWORD",
        "DATAPORT_MAX_FAILED_LOGINS",
        "DATAPORT_SIGNING_KEY",
    ] {
        assert!(envs.iter().any(|e| e == name), "{name} is gone");
    }
}

#[test]
fn lists_come_from_yaml_or_comma_separated_text() {
    let env = |k: &str| (k == "DATAPORT_METRICS_ALLOW").then(|| "10.0.0.0/8, ::1".to_string());
    let c = load_yaml_env(
        "catalog:\n  memory_tables: [tpch.lineitem, 'sales.*']\n",
        Overrides::default(),
        &env,
    )
    .unwrap();
    assert_eq!(c.memory_tables.tables, ["tpch.lineitem", "sales.*"]);
    assert_eq!(c.settings.metrics_allow.len(), 2);
    let e = load_yaml("server:\n  http_addr: [a, b]\n", Overrides::default()).unwrap_err();
    assert!(e.to_string().starts_with("server.http_addr:"), "{e}");
    let e = load_yaml("server: 3\n", Overrides::default()).unwrap_err();
    assert!(e.to_string().contains("server: must be a map"), "{e}");
}

#[test]
fn a_mistyped_environment_variable_is_named() {
    let found = layers::mistyped_env(
        [
            "DATAPORT_HTTP_ADRR",
            "DATAPORT_TOKEN",
            "DATAPORT_DIR",
            "DATAPORT_HTTP_ADDR",
        ]
        .into_iter()
        .map(String::from),
    );
    assert_eq!(
        found,
        [(
            "DATAPORT_HTTP_ADRR".to_string(),
            "DATAPORT_HTTP_ADDR".to_string()
        )]
    );
}

/// The README's configuration reference is the declarations' table.
/// `DATAPORT_BLESS=1 cargo test` rewrites it.
#[test]
fn the_readme_reference_is_generated_from_the_declarations() {
    const BEGIN: &str = "<!-- config-reference:begin";
    const END: &str = "<!-- config-reference:end -->";
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../README.md");
    let readme = std::fs::read_to_string(&path).unwrap();
    let start = readme
        .find(BEGIN)
        .expect("README has the reference markers");
    let body = start + readme[start..].find('\n').unwrap() + 1;
    let end = readme.find(END).expect("README has the end marker");
    let want = show::reference();
    if readme[body..end] == want {
        return;
    }
    if std::env::var_os("DATAPORT_BLESS").is_some() {
        let updated = format!("{}{want}{}", &readme[..body], &readme[end..]);
        std::fs::write(&path, updated).unwrap();
        return;
    }
    panic!(
        "README.md's configuration reference differs from the key declarations \
         (dataport/src/config/keys.rs): run `DATAPORT_BLESS=1 cargo test --workspace the_readme_reference` \
         or paste `dataport config --reference`"
    );
}
