//! The `tollgate` command: serve, validate.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::{Parser, Subcommand};

use tollgate::admin::control::{load_state_file, state_file_name, Base, Control, Saved};
use tollgate::config;

/// mimalloc (cargo feature `mimalloc`): fewer cycles per allocation than glibc's malloc, at
/// the price of more resident memory per open stream; off by default.
#[cfg(feature = "mimalloc")]
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;
use tollgate::server::{self, ServeOptions};

#[derive(Parser)]
#[command(
    name = "tollgate",
    version,
    about = "An AI gateway with Kong-compatible config"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

// Parsed once at start-up: the size of the largest variant does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Subcommand)]
enum Command {
    /// Run the gateway (proxy and Admin API).
    Serve {
        /// Declarative config (kong.yaml, YAML or JSON); the embedded default when absent.
        #[arg(long, short = 'c', env = "TOLLGATE_CONFIG")]
        config: Option<PathBuf>,
        /// Proxy listen address.
        #[arg(long, env = "TOLLGATE_PROXY_LISTEN", default_value = "0.0.0.0:8000")]
        proxy_listen: SocketAddr,
        /// Admin API listen address (loopback by default; `off` disables it).
        #[arg(long, env = "TOLLGATE_ADMIN_LISTEN", default_value = "127.0.0.1:8001")]
        admin_listen: String,
        /// Log filter (tracing's EnvFilter syntax, e.g. `info` or `tollgate=debug`).
        #[arg(long, env = "TOLLGATE_LOG", default_value = "info")]
        log_level: String,
        /// Log format for the process log.
        #[arg(long, env = "TOLLGATE_LOG_FORMAT", default_value = "text", value_parser = ["text", "json"])]
        log_format: String,
        /// Microseconds to keep polling for I/O after request activity before the worker
        /// sleeps (0 disables). Trades a little CPU right after traffic for not paying a
        /// core wake-up on every request; costs nothing when the gateway is idle.
        #[arg(long, env = "TOLLGATE_BUSY_POLL_US", default_value_t = 100)]
        busy_poll_us: u64,
        /// Proxy worker threads, each with its own single-threaded runtime (0: one per core
        /// the process may run on; at most 1024). See docs/architecture.md, "Runtime model".
        #[arg(long, env = "TOLLGATE_WORKERS", default_value_t = 0,
              value_parser = clap::value_parser!(u16).range(0..=1024))]
        workers: u16,
        /// Seconds to let in-flight requests and streams finish on SIGTERM/SIGINT.
        #[arg(long, env = "TOLLGATE_DRAIN_SECONDS", default_value_t = 30)]
        drain_seconds: u64,
        /// Seconds a client may take to send a request's headers (Kong's
        /// `client_header_timeout`); it also bounds the TLS handshake and the wait for a new
        /// connection's first request. 0 disables it.
        #[arg(long, env = "TOLLGATE_CLIENT_HEADER_TIMEOUT", default_value_t = 60)]
        client_header_timeout: u64,
        /// Seconds a client may pause between two reads of a request body before it gets
        /// a 408 (Kong's `client_body_timeout`). 0 disables it.
        #[arg(long, env = "TOLLGATE_CLIENT_BODY_TIMEOUT", default_value_t = 60)]
        client_body_timeout: u64,
        /// Seconds a client connection may stay open with no request in flight (nginx's
        /// `keepalive_timeout`). 0 disables it.
        #[arg(long, env = "TOLLGATE_KEEPALIVE_TIMEOUT", default_value_t = 60)]
        keepalive_timeout: u64,
        /// Most client connections open at once (all listeners together); at the cap the
        /// connection idle the longest is closed to admit a new one. 0: half the process's
        /// open-file limit.
        #[arg(long, env = "TOLLGATE_MAX_CONNECTIONS", default_value_t = 0)]
        max_connections: usize,
        /// Reload the config file when it changes (checked every second) or on SIGHUP; a
        /// file with errors is logged and the running config kept.
        #[arg(long, env = "TOLLGATE_WATCH")]
        watch: bool,
        /// Proxy TLS listen address (HTTP/2 and HTTP/1.1 by ALPN; `off` disables it). As in
        /// Kong it is on by default; without --tls-cert a self-signed certificate is made.
        #[arg(
            long,
            env = "TOLLGATE_PROXY_TLS_LISTEN",
            default_value = "0.0.0.0:8443"
        )]
        proxy_tls_listen: String,
        /// Admin API TLS listen address, with the proxy's certificate (`off` disables it).
        #[arg(long, env = "TOLLGATE_ADMIN_TLS_LISTEN", default_value = "off")]
        admin_tls_listen: String,
        /// PEM certificate chain for the TLS listener (leaf first); with --tls-key.
        #[arg(long, env = "TOLLGATE_TLS_CERT", requires = "tls_key")]
        tls_cert: Option<PathBuf>,
        /// PEM private key of --tls-cert.
        #[arg(long, env = "TOLLGATE_TLS_KEY", requires = "tls_cert")]
        tls_key: Option<PathBuf>,
        /// Where generated state lives (Admin API writes, the self-signed certificate, usage
        /// analytics), created 0700. Default: $XDG_DATA_HOME/tollgate or
        /// ~/.local/share/tollgate.
        #[arg(long, env = "TOLLGATE_DATA_DIR")]
        data_dir: Option<PathBuf>,
        /// Token the Admin API requires as `Authorization: Bearer …` (required when it
        /// listens beyond loopback). Prefer the environment variable: arguments are visible
        /// to other local users.
        #[arg(long, env = "TOLLGATE_ADMIN_TOKEN", hide_env_values = true)]
        admin_token: Option<String>,
        /// Extra CA certificates (PEM) upstream TLS trusts, besides the system's and the
        /// Mozilla roots (e.g. a company proxy's CA).
        #[arg(long, env = "TOLLGATE_UPSTREAM_CA_BUNDLE")]
        upstream_ca_bundle: Option<PathBuf>,
        /// Where per-request usage records go: `sqlite` (analytics.db in the data
        /// directory), `postgres` (with --analytics-postgres) or `off`.
        #[arg(long, env = "TOLLGATE_ANALYTICS", default_value = "sqlite")]
        analytics: String,
        /// PostgreSQL connection string for `--analytics postgres`, e.g.
        /// `host=127.0.0.1 user=postgres dbname=postgres` or a postgres:// URL.
        #[arg(long, env = "TOLLGATE_ANALYTICS_POSTGRES", hide_env_values = true)]
        analytics_postgres: Option<String>,
        /// Try the gateway offline: the embedded default routes in front of a built-in mock
        /// upstream on 127.0.0.1 (no provider key; Admin API writes are not saved).
        #[arg(long, env = "TOLLGATE_DEMO", conflicts_with = "config")]
        demo: bool,
        /// Save Admin API writes by rewriting the --config file (Kong's flat form; the
        /// previous version kept as FILE.bak) instead of the data directory's state file.
        #[arg(long, env = "TOLLGATE_ADMIN_WRITES_TO_CONFIG", requires = "config")]
        admin_writes_to_config: bool,
        /// Where the configuration lives: `file` (the --config file or the embedded
        /// default; Admin API writes in the data directory) or `postgres` (shared by every
        /// node of a cluster, with --store-postgres; --config seeds an empty store).
        #[arg(long, env = "TOLLGATE_STORE", default_value = "file", value_parser = ["file", "postgres"])]
        store: String,
        /// Kong's status listener: `GET /status` and `GET /status/ready` (503 until a
        /// configuration is loaded) on their own address, for probes; `off` by default.
        #[arg(long, env = "TOLLGATE_STATUS_LISTEN", default_value = "off")]
        status_listen: String,
        /// PostgreSQL connection string for `--store postgres`, e.g.
        /// `host=127.0.0.1 user=postgres dbname=tollgate` or a postgres:// URL.
        #[arg(long, env = "TOLLGATE_STORE_POSTGRES", hide_env_values = true)]
        store_postgres: Option<String>,
    },
    /// Check a declarative config file; prints every error with its field path.
    Validate {
        /// The file to check.
        file: PathBuf,
    },
    /// Where semantic routing sends each prompt, and how near the nearest target
    /// descriptions and utterances are (calls the configuration's embeddings provider).
    RouteTest {
        /// The config file.
        file: PathBuf,
        /// The prompts to route.
        #[arg(required = true)]
        prompts: Vec<String>,
    },
    /// Print the embedded default config.
    DefaultConfig,
    /// API keys (key-auth credentials) through a running gateway's Admin API.
    Keys {
        #[command(subcommand)]
        action: KeysAction,
    },
    /// The schema of a cluster's configuration store (`serve --store postgres`).
    Migrations {
        #[command(subcommand)]
        action: MigrationsAction,
    },
    /// A cluster's stored configuration, in and out of a declarative file.
    Config {
        #[command(subcommand)]
        action: ConfigAction,
    },
}

#[derive(Subcommand)]
enum MigrationsAction {
    /// Create the store's tables if they are not there (nodes also do this on start).
    Up {
        /// The cluster's PostgreSQL (as for `serve --store-postgres`).
        #[arg(long, env = "TOLLGATE_STORE_POSTGRES", hide_env_values = true)]
        store_postgres: String,
    },
}

#[derive(Subcommand)]
enum ConfigAction {
    /// Check FILE and make it the cluster's configuration (every node swaps it in).
    Import {
        /// The declarative file (kong.yaml, YAML or JSON).
        file: PathBuf,
        /// The cluster's PostgreSQL (as for `serve --store-postgres`).
        #[arg(long, env = "TOLLGATE_STORE_POSTGRES", hide_env_values = true)]
        store_postgres: String,
    },
    /// Print the cluster's configuration (Kong's flat form, as the Admin API keeps it).
    Export {
        /// The cluster's PostgreSQL (as for `serve --store-postgres`).
        #[arg(long, env = "TOLLGATE_STORE_POSTGRES", hide_env_values = true)]
        store_postgres: String,
    },
}

#[derive(Subcommand)]
enum KeysAction {
    /// Create a key for a consumer and print it (only this once: the gateway keeps its
    /// digest).
    Create {
        /// The consumer's username or id.
        #[arg(long)]
        consumer: String,
        /// Seconds until the key expires (none: never).
        #[arg(long)]
        ttl: Option<u64>,
        /// Create the consumer first if it does not exist.
        #[arg(long)]
        create_consumer: bool,
        /// The Admin API.
        #[arg(
            long,
            env = "TOLLGATE_ADMIN_URL",
            default_value = "http://127.0.0.1:8001"
        )]
        admin: String,
        /// The admin token, if the gateway requires one.
        #[arg(long, env = "TOLLGATE_ADMIN_TOKEN", hide_env_values = true)]
        admin_token: Option<String>,
    },
}

fn init_logs(level: &str, format: &str) {
    let filter = tracing_subscriber::EnvFilter::try_new(level)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // Colours only for a terminal: piped into a file or journald they are noise.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let b = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi)
        .with_writer(std::io::stderr);
    if format == "json" {
        b.json().init();
    } else {
        b.init();
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Validate { file } => match std::fs::read_to_string(&file)
            .map_err(|e| {
                config::ConfigErrors::single("", format!("cannot read {}: {e}", file.display()))
            })
            .and_then(|text| tollgate::gateway::validate_str(&text))
        {
            Ok(snap) => {
                for w in &snap.warnings {
                    eprintln!("warning: {w}");
                }
                println!(
                    "{}: OK ({} services, {} routes, {} plugins)",
                    file.display(),
                    snap.services.len(),
                    snap.routes.len(),
                    snap.plugins.len()
                );
                println!("compiled only: vault references were resolved; nothing was started or connected (exporters, log senders and vector stores start with `tollgate serve`)");
                ExitCode::SUCCESS
            }
            Err(errors) => {
                for e in &errors.0 {
                    eprintln!("{}: {e}", file.display());
                }
                eprintln!("{} error(s)", errors.0.len());
                ExitCode::from(1)
            }
        },
        Command::RouteTest { file, prompts } => {
            let snap = match std::fs::read_to_string(&file)
                .map_err(|e| format!("cannot read {}: {e}", file.display()))
                .and_then(|t| tollgate::gateway::validate_str(&t).map_err(|e| e.to_string()))
            {
                Ok(s) => s,
                Err(e) => {
                    eprintln!("{}: {e}", file.display());
                    return ExitCode::from(1);
                }
            };
            match block_on(tollgate::cli::route_test::report(&snap, &prompts)) {
                Ok(Ok(text)) => {
                    print!("{text}");
                    ExitCode::SUCCESS
                }
                Ok(Err(e)) | Err(e) => {
                    eprintln!("route-test: {e}");
                    ExitCode::from(1)
                }
            }
        }
        Command::Migrations {
            action: MigrationsAction::Up { store_postgres },
        } => match block_on(tollgate::cli::store::migrations_up(&store_postgres)) {
            Ok(Ok(said)) => {
                println!("{said}");
                ExitCode::SUCCESS
            }
            Ok(Err(e)) | Err(e) => {
                eprintln!("migrations up: {e}");
                ExitCode::from(1)
            }
        },
        Command::Config {
            action:
                ConfigAction::Import {
                    file,
                    store_postgres,
                },
        } => {
            let text = match std::fs::read_to_string(&file) {
                Ok(t) => t,
                Err(e) => {
                    eprintln!("{}: cannot read it: {e}", file.display());
                    return ExitCode::from(1);
                }
            };
            // Checked as a node will load it: a file that does not load is not stored.
            if let Err(errors) = tollgate::load(&text) {
                for e in &errors.0 {
                    eprintln!("{}: {e}", file.display());
                }
                return ExitCode::from(1);
            }
            match block_on(tollgate::cli::store::import(&store_postgres, &text)) {
                Ok(Ok(v)) => {
                    println!("imported {} as configuration version {v}", file.display());
                    ExitCode::SUCCESS
                }
                Ok(Err(e)) | Err(e) => {
                    eprintln!("config import: {e}");
                    ExitCode::from(1)
                }
            }
        }
        Command::Config {
            action: ConfigAction::Export { store_postgres },
        } => match block_on(tollgate::cli::store::export(&store_postgres)) {
            Ok(Ok((v, text))) => {
                eprintln!("configuration version {v}");
                print!("{text}");
                ExitCode::SUCCESS
            }
            Ok(Err(e)) | Err(e) => {
                eprintln!("config export: {e}");
                ExitCode::from(1)
            }
        },
        Command::Keys {
            action:
                KeysAction::Create {
                    consumer,
                    ttl,
                    create_consumer,
                    admin,
                    admin_token,
                },
        } => {
            let rt = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => {
                    eprintln!("cannot start the runtime: {e}");
                    return ExitCode::from(1);
                }
            };
            let made = rt.block_on(tollgate::cli::keys::create(
                &admin,
                admin_token.as_deref(),
                &consumer,
                ttl,
                create_consumer,
            ));
            match made {
                Ok(key) => {
                    println!("{key}");
                    eprintln!("key created for consumer {consumer}; it is shown only now");
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("tollgate keys create: {e}");
                    ExitCode::from(1)
                }
            }
        }
        Command::DefaultConfig => {
            print!("{}", config::EMBEDDED_DEFAULT);
            ExitCode::SUCCESS
        }
        Command::Serve {
            config,
            proxy_listen,
            admin_listen,
            log_level,
            log_format,
            drain_seconds,
            busy_poll_us,
            workers,
            client_header_timeout,
            client_body_timeout,
            keepalive_timeout,
            max_connections,
            watch,
            proxy_tls_listen,
            admin_tls_listen,
            tls_cert,
            tls_key,
            data_dir,
            admin_token,
            upstream_ca_bundle,
            analytics,
            analytics_postgres,
            demo,
            admin_writes_to_config,
            store,
            store_postgres,
            status_listen,
        } => {
            init_logs(&log_level, &log_format);
            if let Some(bundle) = &upstream_ca_bundle {
                match tollgate::net::upstream_tls::set_extra_bundle(bundle) {
                    Ok(n) => {
                        tracing::info!(file = %bundle.display(), certificates = n, "upstream CA bundle")
                    }
                    Err(e) => {
                        eprintln!("--upstream-ca-bundle: {e}");
                        return ExitCode::from(1);
                    }
                }
            }
            let tls_addr = |flag: &str, v: &str| -> Result<Option<SocketAddr>, ExitCode> {
                if v == "off" {
                    return Ok(None);
                }
                v.parse::<SocketAddr>().map(Some).map_err(|e| {
                    eprintln!("{flag}: {e} (expected ADDR:PORT or 'off')");
                    ExitCode::from(2)
                })
            };
            let proxy_tls_addr = match tls_addr("--proxy-tls-listen", &proxy_tls_listen) {
                Ok(a) => a,
                Err(code) => return code,
            };
            let admin_tls_addr = match tls_addr("--admin-tls-listen", &admin_tls_listen) {
                Ok(a) => a,
                Err(code) => return code,
            };
            let watch = match (watch, &config) {
                (false, _) => None,
                (true, Some(path)) => Some(path.clone()),
                (true, None) => {
                    eprintln!("--watch needs --config FILE (the embedded default never changes)");
                    return ExitCode::from(2);
                }
            };
            let admin_listen = if admin_listen == "off" {
                None
            } else {
                match admin_listen.parse::<SocketAddr>() {
                    Ok(a) => Some(a),
                    Err(e) => {
                        eprintln!("--admin-listen: {e} (expected ADDR:PORT or 'off')");
                        return ExitCode::from(2);
                    }
                }
            };
            let admin_token = admin_token.filter(|t| !t.is_empty());
            let exposed = admin_listen
                .iter()
                .chain(admin_tls_addr.iter())
                .find(|a| !a.ip().is_loopback());
            if let (Some(a), None) = (exposed, &admin_token) {
                eprintln!("the Admin API on {a} is reachable beyond this host: set an admin token (TOLLGATE_ADMIN_TOKEN or --admin-token), or listen on 127.0.0.1");
                return ExitCode::from(2);
            }
            // Records http-log cannot deliver are kept in the data directory.
            tollgate::observe::http_log::set_spill_dir(
                data_dir
                    .clone()
                    .unwrap_or_else(tollgate::rt::data_dir::default_data_dir),
            );
            let dir = data_dir
                .clone()
                .unwrap_or_else(tollgate::rt::data_dir::default_data_dir);
            private_data_dir(&dir, data_dir.is_none());
            // The demo's mock listens before the config is built, so the routes can name
            // its port; it serves once the runtime runs.
            let demo = if demo {
                match std::net::TcpListener::bind(("127.0.0.1", 0))
                    .and_then(|l| l.set_nonblocking(true).map(|()| l))
                    .and_then(|l| l.local_addr().map(|a| (l, a)))
                {
                    Ok(l) => Some(l),
                    Err(e) => {
                        eprintln!("--demo: cannot listen on 127.0.0.1 for the mock upstream: {e}");
                        return ExitCode::from(1);
                    }
                }
            } else {
                None
            };
            // One proxy worker per core the process may run on unless told. Each is a
            // thread with a single-threaded runtime (this one is the first; it also runs
            // the Admin API and the background tasks): see `server::start_worker`.
            let workers = match workers {
                0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
                n => usize::from(n),
            };
            let rt = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => {
                    eprintln!("cannot start the runtime: {e}");
                    return ExitCode::from(1);
                }
            };
            let status = match tls_addr("--status-listen", &status_listen) {
                Ok(None) => None,
                Ok(Some(a)) => match rt.block_on(server::status::start(a)) {
                    Ok(l) => {
                        println!("tollgate status on http://{}", l.addr);
                        Some(l)
                    }
                    Err(e) => {
                        eprintln!("{e}");
                        return ExitCode::from(1);
                    }
                },
                Err(code) => return code,
            };
            let cluster = match cluster_store(&store, store_postgres, demo.is_some(), &watch) {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("{e}");
                    return ExitCode::from(2);
                }
            };
            let chosen = choose_config(
                config.as_deref(),
                demo.as_ref().map(|(_, a)| *a),
                (admin_writes_to_config, cluster.is_some()),
                &dir,
            );
            let (name, text, persist) = match chosen {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("{e}");
                    return ExitCode::from(1);
                }
            };
            if config.is_none() && demo.is_none() {
                let var = config::DEFAULT_KEY_VARIABLE;
                if std::env::var_os(var).is_none_or(|v| v.is_empty()) {
                    tracing::warn!("{var} is not set: the default OpenAI routes answer 500 until it is; set it, or try the gateway offline with `tollgate serve --demo`");
                }
            }
            let (snap, state) = match tollgate::load(&text) {
                Ok(s) => s,
                Err(errors) => {
                    for e in &errors.0 {
                        eprintln!("{name}: {e}");
                    }
                    return ExitCode::from(1);
                }
            };
            let token = admin_token.map(tollgate::secret::Secret::new);
            let (snap, control) = match (cluster, persist) {
                (Some(url), _) => match rt
                    .block_on(tollgate::admin::cluster::boot(&url, &dir, &text))
                {
                    Ok((snap, state, cluster)) => (snap, Control::clustered(state, cluster, token)),
                    Err(e) => {
                        eprintln!("--store postgres: {e}");
                        return ExitCode::from(1);
                    }
                },
                (None, Persist::Memory) => (snap, Control::new(state, None, token)),
                (None, Persist::Config(path)) => (snap, Control::new(state, Some(path), token)),
                (None, Persist::State(file, base)) => {
                    (snap, Control::with_state_file(state, file, base, token))
                }
            };
            for w in &snap.warnings {
                tracing::warn!("config: {w}");
            }
            let gw = Arc::new(tollgate::gateway::Gateway::new(snap));
            let node = Arc::new(tollgate::admin::Admin {
                gw: gw.clone(),
                control,
            });
            if let Some(l) = &status {
                l.serve_node(node.clone());
            }
            let dir = data_dir
                .clone()
                .unwrap_or_else(tollgate::rt::data_dir::default_data_dir);
            let backend = match (analytics.as_str(), analytics_postgres) {
                ("off", _) => None,
                ("sqlite", _) => Some(tollgate::observe::analytics::Backend::Sqlite(
                    dir.join("analytics.db"),
                )),
                ("postgres", Some(url)) => {
                    Some(tollgate::observe::analytics::Backend::Postgres(url))
                }
                ("postgres", None) => {
                    eprintln!("--analytics postgres needs --analytics-postgres (or TOLLGATE_ANALYTICS_POSTGRES)");
                    return ExitCode::from(2);
                }
                (other, _) => {
                    eprintln!("--analytics {other}: expected sqlite, postgres or off");
                    return ExitCode::from(2);
                }
            };
            if let Some(b) = backend {
                match tollgate::observe::analytics::Analytics::start(b, dir.clone()) {
                    Ok(a) => {
                        tracing::info!(store = %a.backend.describe(), "usage analytics");
                        let _ = gw.analytics.set(Arc::new(a));
                    }
                    Err(e) => {
                        eprintln!("analytics: {e}");
                        return ExitCode::from(1);
                    }
                }
            }
            let proxy_tls = if proxy_tls_addr.is_none() && admin_tls_addr.is_none() {
                None
            } else {
                let addr = proxy_tls_addr;
                let src = match (tls_cert, tls_key) {
                    (Some(cert), Some(key)) => server::tls::CertSource::Files { cert, key },
                    _ => server::tls::CertSource::SelfSigned {
                        data_dir: data_dir
                            .clone()
                            .unwrap_or_else(tollgate::rt::data_dir::default_data_dir),
                    },
                };
                match server::tls::load(&src, Some(gw.snapshot.clone())) {
                    Ok(t) => {
                        let how = if t.generated {
                            "generated a self-signed certificate"
                        } else {
                            "certificate"
                        };
                        println!("tollgate tls {how}: {}", t.cert_file.display());
                        let live = Arc::new(arc_swap::ArcSwap::from_pointee(t.acceptor));
                        Some((addr, live, src, t.cert_file, t.key_file))
                    }
                    Err(e) => {
                        eprintln!("TLS: {e}");
                        return ExitCode::from(1);
                    }
                }
            };
            rt.block_on(serve(
                node,
                watch,
                ServeOptions {
                    proxy_listen,
                    admin_listen,
                    drain_timeout: Duration::from_secs(drain_seconds),
                    busy_poll: Duration::from_micros(busy_poll_us),
                    workers,
                    proxy_tls: proxy_tls
                        .as_ref()
                        .and_then(|(addr, live, ..)| addr.map(|a| (a, live.clone()))),
                    admin_tls: proxy_tls
                        .as_ref()
                        .and_then(|(_, live, ..)| admin_tls_addr.map(|a| (a, live.clone()))),
                    limits: server::conns::Limits {
                        header_timeout: seconds(client_header_timeout),
                        body_timeout: seconds(client_body_timeout),
                        keepalive_timeout: seconds(keepalive_timeout),
                        max_connections,
                    },
                },
                proxy_tls.map(|(_, live, src, cert, key)| (src, cert, key, live)),
                demo.map(|(l, _)| l),
            ))
        }
    }
}

/// The cluster store's connection string with `--store postgres` (None: file mode), or
/// why the flags do not go together.
fn cluster_store(
    store: &str,
    url: Option<String>,
    demo: bool,
    watch: &Option<PathBuf>,
) -> Result<Option<String>, String> {
    if store != "postgres" {
        return Ok(None);
    }
    let url = url.filter(|u| !u.is_empty()).ok_or(
        "--store postgres needs --store-postgres (or TOLLGATE_STORE_POSTGRES): the cluster's PostgreSQL",
    )?;
    if demo {
        return Err(
            "--store postgres and --demo do not go together (the demo keeps its routes in memory)"
                .into(),
        );
    }
    if watch.is_some() {
        return Err("--store postgres and --watch do not go together: the store is the configuration (change it through the Admin API or `tollgate config import`)".into());
    }
    Ok(Some(url))
}

/// Runs `work` on a runtime of its own (the commands that do one thing and exit).
fn block_on<T>(work: impl std::future::Future<Output = T>) -> Result<T, String> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map(|rt| rt.block_on(work))
        .map_err(|e| format!("cannot start the runtime: {e}"))
}

/// Where Admin API writes are saved.
enum Persist {
    /// Nowhere (`--demo`).
    Memory,
    /// Rewritten into the `--config` file (`--admin-writes-to-config`).
    Config(PathBuf),
    /// The data directory's state file, made from this base config.
    State(PathBuf, Base),
}

/// The data directory is created owner-only; an existing one open to others is tightened
/// when it is the default one, and reported when the user chose it.
fn private_data_dir(dir: &std::path::Path, default: bool) {
    match tollgate::rt::data_dir::private_dir(dir) {
        Ok(true) => {}
        Ok(false) => {
            let bits = tollgate::rt::data_dir::shared_bits(dir);
            if bits == 0 {
                return;
            }
            if default {
                if let Err(e) = tollgate::rt::data_dir::set_mode(dir, 0o700) {
                    tracing::warn!(
                        "data directory {}: cannot make it owner-only: {e}",
                        dir.display()
                    );
                }
            } else {
                tracing::warn!(
                    "data directory {} is open to other users (mode bits {bits:03o} for group/others): its files are created 0600, but consider chmod 700",
                    dir.display()
                );
            }
        }
        Err(e) => tracing::warn!("data directory {}: cannot create it: {e}", dir.display()),
    }
}

/// The config to run (its name for messages and its text) and where Admin API writes go.
fn choose_config(
    file: Option<&std::path::Path>,
    demo: Option<SocketAddr>,
    (writes_to_config, clustered): (bool, bool),
    dir: &std::path::Path,
) -> Result<(String, String, Persist), String> {
    if let Some(mock) = demo {
        let text = config::demo_config(&format!("http://{mock}"))?;
        return Ok(("demo config".into(), text, Persist::Memory));
    }
    let (source, text) = match file {
        Some(path) => (
            path.display().to_string(),
            std::fs::read_to_string(path)
                .map_err(|e| format!("{}: cannot read it: {e}", path.display()))?,
        ),
        None => (
            "embedded default".to_string(),
            config::EMBEDDED_DEFAULT.to_string(),
        ),
    };
    if clustered {
        // The store holds the writes; the file only seeds an empty store.
        return Ok((source, text, Persist::Memory));
    }
    if let (true, Some(path)) = (writes_to_config, file) {
        return Ok((source, text, Persist::Config(path.to_path_buf())));
    }
    let base = Base::of(&text, &source);
    let state_file = dir.join(state_file_name(file));
    if file.is_none() {
        adopt_legacy(dir, &state_file, &base)?;
    }
    let saved = load_state_file(&state_file, &base)
        .map_err(|e| format!("{}: {e}", state_file.display()))?;
    tracing::info!(
        "Admin API writes are saved to {} (the config itself is not rewritten)",
        state_file.display()
    );
    let persist = Persist::State(state_file.clone(), base);
    match saved {
        Saved::None => Ok((source, text, persist)),
        Saved::Current(saved) => {
            println!(
                "tollgate config: {} (Admin API writes on top of {source})",
                state_file.display()
            );
            Ok((state_file.display().to_string(), saved, persist))
        }
        Saved::SetAside(old) => {
            tracing::warn!(
                "{source} changed since the Admin API last saved: running it as it is now; the earlier Admin API writes are kept in {} (not loaded)",
                old.display()
            );
            Ok((source, text, persist))
        }
    }
}

/// Earlier versions saved Admin API writes over the embedded default as `kong.yaml` in the
/// data directory (mode 0644): it becomes the state file.
fn adopt_legacy(
    dir: &std::path::Path,
    state_file: &std::path::Path,
    base: &Base,
) -> Result<(), String> {
    let legacy = dir.join("kong.yaml");
    if !legacy.exists() || state_file.exists() {
        return Ok(());
    }
    let text = std::fs::read_to_string(&legacy)
        .map_err(|e| format!("{}: cannot read it: {e}", legacy.display()))?;
    tollgate::admin::control::adopt(state_file, &text, base)
        .and_then(|()| std::fs::remove_file(&legacy))
        .map_err(|e| {
            format!(
                "{}: cannot move it to {}: {e}",
                legacy.display(),
                state_file.display()
            )
        })?;
    tracing::info!(
        "moved {} (Admin API writes saved by an earlier version) to {}",
        legacy.display(),
        state_file.display()
    );
    Ok(())
}

/// A timeout flag's value (0 = off).
fn seconds(n: u64) -> Option<Duration> {
    (n > 0).then(|| Duration::from_secs(n))
}

/// The TLS certificate source, its files and the live acceptor to renew.
type TlsWatch = (
    server::tls::CertSource,
    PathBuf,
    PathBuf,
    server::tls::LiveAcceptor,
);

async fn serve(
    node: Arc<tollgate::admin::Admin>,
    watch: Option<PathBuf>,
    opts: ServeOptions,
    tls: Option<TlsWatch>,
    demo: Option<std::net::TcpListener>,
) -> ExitCode {
    // Kept for the life of the process: dropping it stops the mock.
    let mock = match demo
        .map(|l| tokio::net::TcpListener::from_std(l).and_then(mock_llm::MockLlm::start_with))
    {
        None => None,
        Some(Ok(m)) => Some(m),
        Some(Err(e)) => {
            eprintln!("--demo: cannot start the mock upstream: {e}");
            return ExitCode::from(1);
        }
    };
    if let Some((src, cert, key, live)) = tls {
        let snaps = Some(node.gw.snapshot.clone());
        server::tls::watch(src, cert, key, live, snaps, Duration::from_secs(2));
    }
    if let Some(path) = watch {
        server::reload::spawn(node.clone(), path, Duration::from_secs(1));
    }
    tollgate::admin::cluster::spawn_follower(node.clone());
    let running = match server::start(node, opts).await {
        Ok(r) => r,
        Err(e) => {
            tracing::error!("cannot listen: {e}");
            return ExitCode::from(1);
        }
    };
    println!("tollgate proxy on http://{}", running.proxy_addr);
    if let Some(a) = running.proxy_tls_addr {
        println!("tollgate proxy tls on https://{a}");
    }
    if let Some(a) = running.admin_tls_addr {
        println!("tollgate admin tls on https://{a}");
    }
    if let Some(m) = &mock {
        println!(
            "tollgate demo: the default routes answer from a built-in mock upstream on {} (no provider key; nothing leaves this machine), e.g. curl http://{}/openai/v1/chat/completions -H 'content-type: application/json' -d '{{\"model\":\"gpt-4o-mini\",\"messages\":[{{\"role\":\"user\",\"content\":\"hi\"}}]}}'",
            m.url(),
            running.proxy_addr
        );
    }
    if let Some(a) = running.admin_addr {
        println!("tollgate admin on http://{a}");
    }
    wait_for_signal().await;
    tracing::info!("shutting down: draining in-flight requests");
    running.shutdown().await;
    tracing::info!("stopped");
    ExitCode::SUCCESS
}

async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = tokio::signal::ctrl_c() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
