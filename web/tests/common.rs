use dataport_catalog::CatalogOptions;
use dataport_engine::{Engine, EngineOptions};
use dataport_web::{AppState, WebOptions};

pub(crate) use dataport_testkit::tpch_dir;

pub(crate) const PASSWORD: &str = "Test-Password-1";

pub(crate) struct Server {
    pub(crate) base: String,
    pub(crate) client: reqwest::Client,
    _shutdown: tokio::sync::oneshot::Sender<()>,
}

impl Server {
    pub(crate) async fn start(web: WebOptions) -> Self {
        let dir = tpch_dir();
        let mut options = EngineOptions::new(dir);
        options.target_partitions = 2;
        let mut catalog = CatalogOptions::new(dir);
        catalog.watch = false;
        let engine = Engine::try_new(options, catalog).await.unwrap();
        let state_dir = tempfile::tempdir().unwrap().keep();
        let store = std::sync::Arc::new(dataport_auth::StateStore::open(&state_dir).unwrap());
        dataport_auth::Accounts::new(std::sync::Arc::clone(&store))
            .add_user("admin", PASSWORD, &[dataport_auth::DATA_OPS.to_string()])
            .unwrap();
        let auth = dataport_auth::Authenticator::new(store, dataport_auth::AuthOptions::default())
            .unwrap();
        let token = auth.login("admin", PASSWORD, "127.0.0.1").unwrap().token;
        let jobs = dataport_engine::jobs::Scheduler::new(
            std::sync::Arc::clone(auth.store()),
            vec![dataport_engine::jobs::JobSpec {
                name: "refresh:catalog".into(),
                schedule: None,
                jitter: std::time::Duration::ZERO,
                action: std::sync::Arc::new(dataport_engine::jobs::RefreshCatalogJob {
                    catalog: engine.catalog().clone(),
                }),
            }],
        )
        .unwrap();
        let profiler = std::sync::Arc::new(dataport_engine::profiles::Profiler::new(
            std::sync::Arc::clone(auth.store()),
        ));
        let sync = std::sync::Arc::new(dataport_engine::sync::SyncFiles::new(
            std::sync::Arc::clone(auth.store()),
            dir,
        ));
        let app = dataport_web::router(AppState {
            engine,
            accounts: dataport_auth::Accounts::new(std::sync::Arc::clone(auth.store())),
            mailer: dataport_mail::Mailer::new(&Default::default()).unwrap(),
            oidc: std::sync::Arc::new(
                dataport_auth::oidc::OidcClient::new(&[], &|_| None, Default::default()).unwrap(),
            ),
            auth,
            jobs,
            profiler,
            sync,
            notify: None,
            memory: None,
            options: web,
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(dataport_web::serve(
            listener,
            app,
            async move {
                let _ = rx.await;
            },
            std::time::Duration::from_secs(1),
        ));
        Self {
            base: format!("http://{addr}"),
            client: reqwest::Client::builder()
                .default_headers(
                    [(
                        reqwest::header::AUTHORIZATION,
                        format!("Bearer {token}").parse().unwrap(),
                    )]
                    .into_iter()
                    .collect(),
                )
                .build()
                .unwrap(),
            _shutdown: tx,
        }
    }

    pub(crate) async fn query(&self, body: serde_json::Value, format: &str) -> reqwest::Response {
        self.client
            .post(format!("{}/api/v1/query?format={format}", self.base))
            .json(&body)
            .send()
            .await
            .unwrap()
    }

    pub(crate) async fn get(&self, path: &str) -> reqwest::Response {
        self.client
            .get(format!("{}{path}", self.base))
            .send()
            .await
            .unwrap()
    }
}
