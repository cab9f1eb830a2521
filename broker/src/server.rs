//! Node assembly: open the log, start the engine, serve HTTP until shutdown.

use std::{
    future::Future,
    net::{SocketAddr, TcpListener},
    path::Path,
    sync::Arc,
};

use tokio::sync::watch;

use crate::{
    auth::Authenticator,
    cluster::{ClusterEngine, ClusterError, LocalParts},
    config::Config,
    engine::{sequencer::SequencerOptions, Engine, LocalEngine, Sequencer},
    http,
    hub::presence::PollSessions,
    hub::{control::Registry, presence::Presence, Hub},
    limits::{ConnectionLimits, KeyedRates},
    log::{
        acked::AckedHeads,
        integrity::{self, Mode},
        retention,
        sled_log::SledOptions,
        LogError, MessageLog,
    },
    metrics::Metrics,
    state::{AppState, Lifecycle},
    stats,
};

/// Why a node could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// The log could not be opened.
    #[error(transparent)]
    Log(#[from] LogError),
    /// A socket or thread could not be set up.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The failure.
        source: std::io::Error,
    },
    /// A file in the data dir is damaged.
    #[error("{path}: {problem}")]
    Damaged {
        /// The file.
        path: std::path::PathBuf,
        /// What is wrong and what to do.
        problem: String,
    },
    /// Auth keys could not be loaded.
    #[error(transparent)]
    Auth(crate::auth::AuthError),
    /// The cluster could not be joined.
    #[error(transparent)]
    Cluster(#[from] ClusterError),
}

/// Reads the node id from the data dir, generating and storing one the
/// first time, so a restarted node keeps its name. A damaged one is refused
/// (a cluster would take the node for another) unless damage is accepted.
fn resolve_node_id(config: &Config) -> Result<String, ServerError> {
    if let Some(id) = &config.node_id {
        return Ok(id.clone());
    }
    let path = config.data_dir.join("node-id");
    let io = |context: String| move |source| ServerError::Io { context, source };
    match integrity::node_id_problem(&config.data_dir) {
        Some(problem) if !config.log.accept_damage => {
            return Err(ServerError::Damaged {
                path,
                problem: format!(
                    "{problem}; restore it, or start with --node-id NAME or --accept-damage (a new name)"
                ),
            })
        }
        Some(problem) => tracing::warn!(%problem, "accepted damage: a new node id is generated"),
        None => {
            if let Ok(id) = std::fs::read_to_string(&path) {
                let id = id.trim().to_string();
                if !id.is_empty() {
                    return Ok(id);
                }
            }
        }
    }
    std::fs::create_dir_all(&config.data_dir).map_err(io(format!(
        "cannot create data dir {}",
        config.data_dir.display()
    )))?;
    let id = format!("herald-{:08x}", rand::random::<u32>());
    std::fs::write(&path, &id).map_err(io(format!("cannot write {}", path.display())))?;
    Ok(id)
}

fn check_data_dir(dir: &Path) -> Result<(), ServerError> {
    let io = |context: String| move |source| ServerError::Io { context, source };
    std::fs::create_dir_all(dir)
        .map_err(io(format!("cannot create data dir {}", dir.display())))?;
    let probe = dir.join(".write-test");
    std::fs::write(&probe, b"ok")
        .map_err(io(format!("data dir {} is not writable", dir.display())))?;
    let _ = std::fs::remove_file(probe);
    Ok(())
}

/// Records a clean stop with every committed head.
fn close_journal(journal: &parking_lot::Mutex<AckedHeads>, hub: &Hub) {
    let heads = hub.all_heads().into_iter().map(|(t, h)| (t, h.last_seq));
    if let Err(e) = journal.lock().close_clean(heads) {
        tracing::warn!(error = %e, "cannot record the clean stop in the acknowledged-heads journal");
    }
}

/// Where a started node serves: what the ready line tells a supervisor or
/// a test that started it with `--listen 127.0.0.1:0`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listening {
    /// The bound address.
    pub addr: SocketAddr,
    /// The base URL clients use: `http://` or, with TLS, `https://`.
    pub url: String,
    /// The node id.
    pub node: String,
}

impl Listening {
    /// The ready line: one JSON object, e.g.
    /// `{"listening":"http://127.0.0.1:40123","addr":"127.0.0.1:40123","node":"n1"}`.
    /// It is the same whatever the log filter or format, so programs read
    /// it instead of the logs.
    pub fn ready_line(&self) -> String {
        // A struct, not `json!`: its fields keep this order (`listening`
        // first, as documented), a map's keys would be sorted.
        #[derive(serde::Serialize)]
        struct Line<'a> {
            listening: &'a str,
            addr: String,
            node: &'a str,
        }
        serde_json::to_string(&Line {
            listening: &self.url,
            addr: self.addr.to_string(),
            node: &self.node,
        })
        .expect("strings serialize")
    }
}

/// Runs a node on `listener` until `shutdown` resolves, then drains:
/// readiness turns off, WebSockets close with 1012, streams end, the log is
/// synced.
pub async fn run(
    config: Config,
    listener: TcpListener,
    shutdown: impl Future<Output = ()>,
) -> Result<(), ServerError> {
    run_reporting(config, listener, shutdown, |_| {}).await
}

/// [`run`], calling `on_listening` once the node serves on `listener`
/// (the binary prints the ready line from it).
pub async fn run_reporting(
    config: Config,
    listener: TcpListener,
    shutdown: impl Future<Output = ()>,
    on_listening: impl FnOnce(&Listening),
) -> Result<(), ServerError> {
    let auth =
        Authenticator::new(&config.auth, &config.anonymous_access()).map_err(ServerError::Auth)?;
    check_data_dir(&config.data_dir)?;
    let node_id = resolve_node_id(&config)?;
    let verified = integrity::open_verified(
        &config.data_dir,
        &SledOptions {
            cache_bytes: config.log.cache_bytes,
            flush_every_ms: config.log.flush_interval.as_millis() as u64,
        },
        if config.nats.is_some() {
            Mode::Cluster
        } else {
            Mode::Single
        },
        config.log.accept_damage,
    )?;
    let report = &verified.report;
    tracing::info!(
        topics = report.topics,
        records = report.records,
        bytes = report.bytes,
        damaged = !report.is_clean(),
        "log verified"
    );
    let journal = Arc::new(parking_lot::Mutex::new(verified.journal));
    let log: Arc<dyn MessageLog> = Arc::new(verified.log);
    let metrics = Arc::new(Metrics::default());
    log.damage().attach_metrics(metrics.clone());
    let hub = Arc::new(Hub::with_policies(
        metrics.clone(),
        config.limits.slow_consumer,
        config.slow_consumer_policies(),
    ));
    let heads = log.heads()?;
    tracing::info!(topics = heads.len(), "log opened");
    hub.load_heads(heads);
    let sequencer = Sequencer::start(
        hub.clone(),
        log.clone(),
        SequencerOptions {
            durability: config.log.durability,
            idempotency_window: config.log.idempotency_window,
            journal: Some(journal.clone()),
        },
    )
    .map_err(|source| ServerError::Io {
        context: "cannot start the sequencer".into(),
        source,
    })?;
    let presence = Arc::new(Presence::new(
        node_id.clone(),
        config.presence,
        config.presence_overrides(),
    ));
    let control = Arc::new(Registry::default());
    let collector = Arc::new(stats::Collector::new(node_id.clone(), hub.clone()));
    let (stats_tx, stats_rx) = stats::channel(&collector);
    let engine: Arc<dyn Engine> = match &config.nats {
        None => Arc::new(LocalEngine::new(sequencer)),
        Some(url) => {
            tracing::info!(%url, node = %node_id, "joining the cluster through NATS");
            Arc::new(
                ClusterEngine::start(
                    url,
                    node_id.clone(),
                    config.cluster.clone(),
                    config.log.idempotency_window,
                    LocalParts {
                        hub: hub.clone(),
                        log: log.clone(),
                        sequencer,
                        presence: presence.clone(),
                        control: control.clone(),
                        accept_damage: config.log.accept_damage,
                        stats: stats_rx.clone(),
                    },
                )
                .await?,
            )
        }
    };

    let sampler = tokio::spawn(stats::run(collector, stats_tx));
    // Held until the node stops; exports only with OpenTelemetry configured.
    let _otel_metrics = crate::telemetry::export_metrics(metrics.clone());
    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let trimmer = tokio::spawn(retention::run_trimmer(
        hub.clone(),
        log.clone(),
        Arc::new(config.retention_rules()),
        config.log.retention_interval,
        metrics.clone(),
        shutdown_rx.clone(),
    ));

    let addr = listener.local_addr().map_err(|source| ServerError::Io {
        context: "cannot read the bound address".into(),
        source,
    })?;
    let shutdown_timeout = config.shutdown_timeout;
    let open_files = crate::limits::open_file_limit();
    let cap = crate::limits::connection_cap(config.limits.max_connections, open_files);
    match open_files {
        Some(n) => tracing::info!(
            cap,
            max_connections = config.limits.max_connections,
            open_file_limit = n,
            reserve = crate::limits::fd_reserve(n),
            "connection cap {cap}: max_connections, and the open-file limit less a reserve for the node's own files"
        ),
        None => tracing::info!(cap, "connection cap {cap} (no open-file limit)"),
    }
    let connection_limits = ConnectionLimits::new(cap, config.limits.max_connections_per_ip);
    let client_rates = KeyedRates::new(
        config.limits.publish_rate_per_client,
        config.limits.publish_burst,
    );
    let state = Arc::new(AppState {
        config: Arc::new(config),
        node_id: node_id.clone(),
        hub,
        log: log.clone(),
        engine: engine.clone(),
        metrics,
        auth,
        connection_limits,
        client_rates: Arc::new(client_rates),
        lifecycle: Arc::new(Lifecycle::new(shutdown_rx)),
        presence,
        poll_sessions: Arc::new(PollSessions::new(control.clone())),
        control,
        ws_links: tokio_util::task::TaskTracker::new(),
        stats: stats_rx,
    });
    let server = http::server(state.clone(), listener, shutdown_timeout).map_err(|source| {
        ServerError::Io {
            context: format!("cannot serve on {addr}"),
            source,
        }
    })?;
    let handle = server.handle();
    let scheme = if state.config.tls.is_some() {
        "https"
    } else {
        "http"
    };
    tracing::info!(addr = %addr, node = %node_id, "herald listening on {scheme}://{addr}");
    let mut server = tokio::spawn(server);
    on_listening(&Listening {
        addr,
        url: format!("{scheme}://{addr}"),
        node: node_id.clone(),
    });

    tokio::select! {
        result = &mut server => {
            tracing::error!(?result, "HTTP server stopped unexpectedly");
        }
        _ = shutdown => {
            state
                .lifecycle
                .draining
                .store(true, std::sync::atomic::Ordering::Release);
            let delay = state.config.drain_delay;
            if !delay.is_zero() {
                tracing::info!(?delay, "draining: not ready; closing connections after the drain delay");
                tokio::time::sleep(delay).await;
            }
            tracing::info!("shutting down");
            let _ = shutdown_tx.send(true);
            // Links close with 1012 at once; give their close handshakes
            // the time they take before the workers stop.
            state.ws_links.close();
            let _ = tokio::time::timeout(shutdown_timeout, state.ws_links.wait()).await;
            handle.stop(true).await;
            let _ = server.await;
        }
    }
    let _ = shutdown_tx.send(true);
    engine.shutdown().await;
    trimmer.abort();
    sampler.abort();
    log.sync()?;
    close_journal(&journal, &state.hub);
    tracing::info!("stopped");
    Ok(())
}
