//! [`Stack`]: the whole system in one process — source and local Kafka, the demo producer,
//! the consumer pod on its internal socket, the handlers on HTTP and the client — started
//! in order, waited on until `/ready` says so, and stopped gracefully.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use consumer::config::SourceArgs;
use handlers::config::{CorsArgs, KeyArgs, RateLimitArgs};
use serde::Serialize;
use shared::internal::{ConsumerAddr, ConsumerAddrs};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

use crate::demo::DemoProducer;
use crate::kafka::KafkaCluster;
use crate::lambda_bridge::LambdaBridge;
use crate::pod_process::PodProcess;

/// How long the stack may take to become ready.
const READY_TIMEOUT: Duration = Duration::from_secs(60);

/// What to run: the three components' own configurations, and what the stack adds around
/// them (the clusters, the demo producer, how the handlers run).
#[derive(Debug, Clone)]
pub struct StackConfig {
    /// Source Kafka bootstrap servers; `None` starts a mock cluster.
    pub source_brokers: Option<String>,
    /// Local Kafka bootstrap servers; `None` starts a mock cluster.
    pub local_brokers: Option<String>,
    /// The demo topic, carried by the pod and created on both clusters.
    pub topic: String,
    /// Further source topics the pod carries, created on the source only (with
    /// `partitions`).
    pub extra_topics: Vec<String>,
    pub partitions: i32,
    /// Create the demo topic on the local cluster too; `false` leaves it to the client.
    pub create_local_topic: bool,
    /// How the handlers run: as the container server does, or through the Lambda adapter.
    pub handlers_mode: HandlersMode,
    /// Handler replicas behind the API port; requests go to each in turn, as a load
    /// balancer without sticky sessions would send them.
    pub handler_replicas: usize,
    /// Demo events per second (0: as fast as possible).
    pub rate: u64,
    /// Produce exactly this many demo events, then stop; `None`: forever. `Some(0)`: none.
    pub events: Option<u64>,
    /// Run the client replicating into the local cluster.
    pub run_client: bool,
    /// Run the consumer pod in a process of its own (the `emulator` binary only), so its
    /// memory is measured apart; it listens on a free TCP port.
    pub pod_process: bool,
    /// Consumer pods, each consuming every partition; the handlers spread requests over
    /// them. More than one runs each in a process of its own, which can be killed.
    pub pods: usize,
    /// The `emulator` binary pod processes run; `None`: this process's own (a test binary
    /// gives its `CARGO_BIN_EXE_emulator`).
    pub emulator_exe: Option<std::path::PathBuf>,
    /// The consumer pod, as the `consumer` binary takes it. The stack sets its brokers,
    /// topics and internal token; `127.0.0.1:0` listens on a free port.
    pub pod: consumer::Config,
    /// The handlers, as `handlers-server` takes them. The stack sets where the pod answers,
    /// its token and the host (127.0.0.1); no `API_KEY` generates one, `PORT` 0 picks a
    /// free one.
    pub handlers: handlers::Config,
    /// The client, as the `client` binary takes it. The stack sets the server's URL, key
    /// and prefix, and the local brokers.
    pub client: client::Config,
}

impl Default for StackConfig {
    fn default() -> Self {
        let mut pod = consumer::Config::default();
        pod.source.group_id = "kafka-replicator-emulator".into();
        pod.consumer_addr = ConsumerAddr::Tcp("127.0.0.1:0".into());
        let handlers = handlers::Config {
            port: 0,
            ..handlers::Config::default()
        };
        let client = client::Config {
            client_id: "kafka-replicator-emulator-client".into(),
            ..client::Config::default()
        };
        Self {
            source_brokers: None,
            local_brokers: None,
            topic: "demo-events".into(),
            extra_topics: Vec::new(),
            partitions: 3,
            create_local_topic: true,
            handlers_mode: HandlersMode::Server,
            handler_replicas: 1,
            rate: 10,
            events: None,
            run_client: true,
            pod_process: false,
            pods: 1,
            emulator_exe: None,
            pod,
            handlers,
            client,
        }
    }
}

/// How the emulator runs the handlers.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum HandlersMode {
    /// The router served directly, as `handlers-server` does.
    #[default]
    Server,
    /// Each request as an API Gateway v2 event through the Lambda adapter, as
    /// `handlers-lambda` answers it.
    Lambda,
}

/// Why the stack could not start.
#[derive(Debug, thiserror::Error)]
pub enum StackError {
    #[error("Kafka: {0}")]
    Kafka(#[from] rdkafka::error::KafkaError),
    #[error("consumer pod: {0}")]
    Consumer(#[from] consumer::ConsumerError),
    #[error("handlers: {0}")]
    Handlers(#[from] handlers::HandlersError),
    #[error("client: {0}")]
    Client(#[from] client::ClientError),
    #[error(transparent)]
    Config(#[from] shared::config::ConfigError),
    #[error(
        "the {which} Kafka refused the emulator: {refused}; check the credentials and certificates in its properties"
    )]
    AccessRefused {
        which: &'static str,
        refused: shared::kafka::AccessRefused,
    },
    #[error("API key: {0}")]
    ApiKey(#[from] handlers::api_keys::ApiKeysError),
    #[error("cannot listen on 127.0.0.1:{port}: {source}")]
    Bind { port: u16, source: std::io::Error },
    #[error("I/O: {0}")]
    Io(#[from] std::io::Error),
    #[error("the stack was not ready within {0:?}: {1}")]
    NotReady(Duration, String),
    #[error("consumer pod process: {0}")]
    PodProcess(String),
    #[error("the consumer pod runs in a process of its own here; it is not restarted")]
    PodNotRestartable,
    #[error(
        "the consumer pod runs as a task here; only pods in processes of their own (StackConfig::pods above 1, or pod_process) are killed and started"
    )]
    PodNotAProcess,
}

/// What a ready stack tells the outside (the `--ready-file` JSON).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct ReadyInfo {
    pub api_base: String,
    pub api_key: String,
    pub source_brokers: String,
    pub local_brokers: String,
    pub topic: String,
}

/// A running system.
#[derive(Debug)]
pub struct Stack {
    pub info: ReadyInfo,
    /// The API's scheme://host:port (without the prefix).
    pub server_url: String,
    config: StackConfig,
    /// Where the (first) consumer pod's internal server answers.
    pub pod_addr: ConsumerAddr,
    /// Where each consumer pod answers, in order.
    pub pod_addrs: Vec<ConsumerAddr>,
    pub source: KafkaCluster,
    pub local: KafkaCluster,
    shutdown: CancellationToken,
    tasks: JoinSet<()>,
    pod_config: consumer::Config,
    pod_task: PodRun,
    balancer: RoundRobin,
    handler_metrics: Vec<handlers::HandlerMetrics>,
}

/// The running consumer pods: one task with its own stop token (a child of the stack's), or
/// processes of their own (`None` while killed).
#[derive(Debug)]
enum PodRun {
    Task {
        stop: CancellationToken,
        task: tokio::task::JoinHandle<()>,
    },
    Processes(Vec<Option<PodProcess>>),
}

impl PodRun {
    async fn stop(self) {
        match self {
            Self::Task { stop, task } => {
                stop.cancel();
                let _ = task.await;
            }
            Self::Processes(processes) => {
                futures::future::join_all(processes.into_iter().flatten().map(PodProcess::stop))
                    .await;
            }
        }
    }

    fn first_process(&self) -> Option<&PodProcess> {
        match self {
            Self::Processes(processes) => processes.first()?.as_ref(),
            Self::Task { .. } => None,
        }
    }
}

fn spawn_pod(pod: consumer::ConsumerPod, shutdown: &CancellationToken) -> PodRun {
    let stop = shutdown.child_token();
    let run_stop = stop.clone();
    let task = tokio::spawn(async move {
        if let Err(err) = pod.run(run_stop).await {
            tracing::error!(error = %err, "consumer pod failed");
        }
    });
    PodRun::Task { stop, task }
}

impl Stack {
    /// Starts everything and waits until the API says ready.
    pub async fn start(config: StackConfig) -> Result<Self, StackError> {
        let source = KafkaCluster::mock_or(config.source_brokers.as_deref())?
            .with_properties(config.pod.source.kafka_properties()?);
        let local = KafkaCluster::mock_or(config.local_brokers.as_deref())?
            .with_properties(config.client.kafka_properties()?);
        // Wrong credentials or certificates stop the start at once, as in the pod and the
        // client, before any topic is created.
        for (which, cluster) in [("source", &source), ("local", &local)] {
            let cluster = cluster.cluster();
            tokio::task::spawn_blocking(move || {
                shared::kafka::check_access(&cluster, Duration::from_secs(5))
            })
            .await
            .unwrap_or(Ok(()))
            .map_err(|refused| StackError::AccessRefused { which, refused })?;
        }
        let topics: Vec<String> = std::iter::once(config.topic.clone())
            .chain(config.extra_topics.iter().cloned())
            .collect();
        for topic in &topics {
            source.create_topic(topic, config.partitions).await?;
        }
        if config.create_local_topic {
            local.create_topic(&config.topic, config.partitions).await?;
        }
        let api_key = config
            .handlers
            .keys
            .api_key
            .clone()
            .unwrap_or_else(handlers::api_keys::generate_key);
        handlers::ApiKeys::parse(&api_key)?;
        // The pod's internal socket is guarded as in production: a fresh token per run.
        let internal_token = handlers::api_keys::generate_key();
        let shutdown = CancellationToken::new();
        let mut tasks = JoinSet::new();

        let mut pod_config = consumer::Config {
            source: SourceArgs {
                brokers: Some(source.bootstrap().to_owned()),
                topics,
                fetch_wait_ms: source.fetch_wait_ms(),
                ..config.pod.source.clone()
            },
            internal_token: Some(internal_token.clone()),
            ..config.pod.clone()
        };
        let (pod_addrs, pod_task) = if config.pod_process || config.pods > 1 {
            let processes = futures::future::join_all(
                (0..config.pods.max(1))
                    .map(|_| PodProcess::start(config.emulator_exe.as_deref(), &pod_config)),
            )
            .await
            .into_iter()
            .collect::<Result<Vec<_>, _>>()?;
            (
                processes.iter().map(|p| p.addr.clone()).collect(),
                PodRun::Processes(processes.into_iter().map(Some).collect()),
            )
        } else {
            let pod = consumer::ConsumerPod::bind(pod_config.clone()).await?;
            (vec![pod.local_addr().clone()], spawn_pod(pod, &shutdown))
        };
        let pod_addr = pod_addrs[0].clone();
        let pods = ConsumerAddrs::several(pod_addrs.clone()).expect("at least one pod runs");
        // A restarted pod comes back on the same address.
        pod_config.consumer_addr = pod_addr.clone();
        let handlers_config = handlers::Config {
            keys: KeyArgs {
                api_key: Some(api_key.clone()),
                ..KeyArgs::default()
            },
            consumer_addr: pods,
            internal_token: Some(internal_token.clone()),
            host: "127.0.0.1".into(),
            ..config.handlers.clone()
        };

        let keys = handlers::ApiKeys::parse(&api_key)?;
        let replicas = (0..config.handler_replicas.max(1))
            .map(|_| {
                handlers::AppState::with_keys(
                    &handlers_config,
                    handlers::KeyStore::fixed(keys.clone()),
                )
            })
            .collect::<Result<Vec<_>, _>>()?;
        let handler_metrics = replicas.iter().map(|s| s.metrics.clone()).collect();
        let routers = replicas
            .into_iter()
            .map(|state| match config.handlers_mode {
                HandlersMode::Server => handlers::router(state),
                HandlersMode::Lambda => LambdaBridge::new(state).router(),
            })
            .collect();
        let balancer = RoundRobin::new(routers);
        let port = config.handlers.port;
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
            .await
            .map_err(|source| StackError::Bind { port, source })?;
        let addr = listener.local_addr()?;
        let app = balancer
            .router()
            .into_make_service_with_connect_info::<SocketAddr>();
        let stop = shutdown.clone();
        tasks.spawn(async move {
            if let Err(err) = axum::serve(shared::listen::no_delay(listener), app)
                .with_graceful_shutdown(stop.cancelled_owned())
                .await
            {
                tracing::error!(error = %err, "API server failed");
            }
        });
        let server_url = format!("http://{addr}");
        let info = ReadyInfo {
            api_base: format!("{server_url}{}", config.handlers.api_prefix),
            api_key,
            source_brokers: source.bootstrap().to_owned(),
            local_brokers: local.bootstrap().to_owned(),
            topic: config.topic.clone(),
        };
        wait_ready(&info.api_base).await?;

        if config.events != Some(0) {
            let demo = DemoProducer::to_cluster(
                &source.cluster(),
                &config.topic,
                config.rate,
                config.events,
            )?;
            let stop = shutdown.clone();
            tasks.spawn(async move {
                demo.run(stop).await;
            });
        }

        let mut stack = Self {
            info,
            server_url,
            config: config.clone(),
            pod_addr,
            pod_addrs,
            source,
            local,
            shutdown,
            tasks,
            pod_config,
            pod_task,
            balancer,
            handler_metrics,
        };
        if config.run_client {
            stack.start_client()?;
        }
        Ok(stack)
    }

    /// Starts the client replicating into the local cluster, as configured (the stack starts
    /// it itself when `client` is set).
    pub fn start_client(&mut self) -> Result<(), StackError> {
        let client = client::Replicator::new(&client::Config {
            server_url: Some(self.server_url.clone()),
            api_key: Some(self.info.api_key.clone()),
            api_prefix: self.config.handlers.api_prefix.clone(),
            kafka_brokers: Some(self.local.bootstrap().to_owned()),
            ..self.config.client.clone()
        })?;
        let stop = self.shutdown.clone();
        self.tasks.spawn(async move {
            if let Err(err) = client.run(stop).await {
                tracing::error!(error = %err, "client stopped on an error");
            }
        });
        Ok(())
    }

    /// Serves the API once more, on a free port of its own, with other rate limits: another
    /// deployment of the handlers in front of the same pod and key (the benchmark times a
    /// client against the shipped limits this way). Returns its `SERVER_URL` and its
    /// handlers' metrics.
    pub async fn serve_api(
        &mut self,
        limits: RateLimitArgs,
    ) -> Result<(String, handlers::HandlerMetrics), StackError> {
        let config = handlers::Config {
            keys: KeyArgs {
                api_key: Some(self.info.api_key.clone()),
                ..KeyArgs::default()
            },
            consumer_addr: ConsumerAddrs::several(self.pod_addrs.clone())
                .expect("at least one pod runs"),
            internal_token: self.pod_config.internal_token.clone(),
            port: 0,
            host: "127.0.0.1".into(),
            cors: CorsArgs::default(),
            limits,
            ..self.config.handlers.clone()
        };
        let keys = handlers::ApiKeys::parse(&self.info.api_key)?;
        let state = handlers::AppState::with_keys(&config, handlers::KeyStore::fixed(keys))?;
        let metrics = state.metrics.clone();
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0)).await?;
        let addr = listener.local_addr()?;
        let app = handlers::router(state).into_make_service_with_connect_info::<SocketAddr>();
        let stop = self.shutdown.clone();
        self.tasks.spawn(async move {
            if let Err(err) = axum::serve(shared::listen::no_delay(listener), app)
                .with_graceful_shutdown(stop.cancelled_owned())
                .await
            {
                tracing::error!(error = %err, "second API server failed");
            }
        });
        Ok((format!("http://{addr}"), metrics))
    }

    /// Stops the consumer pod (losing its buffer, as a pod restart does) and starts a new
    /// one on the same address, as Kubernetes would after a crash.
    pub async fn restart_pod(&mut self) -> Result<(), StackError> {
        let PodRun::Task { stop, task } = &mut self.pod_task else {
            return Err(StackError::PodNotRestartable);
        };
        stop.cancel();
        let _ = task.await;
        let pod = consumer::ConsumerPod::bind(self.pod_config.clone()).await?;
        self.pod_task = spawn_pod(pod, &self.shutdown);
        Ok(())
    }

    /// Kills consumer pod `index` (run as a process) at once, as a crash would.
    pub async fn kill_pod(&mut self, index: usize) -> Result<(), StackError> {
        let PodRun::Processes(processes) = &mut self.pod_task else {
            return Err(StackError::PodNotAProcess);
        };
        if let Some(process) = processes.get_mut(index).and_then(Option::take) {
            process.kill().await;
        }
        Ok(())
    }

    /// Starts consumer pod `index` (run as a process) again, on its address, with an
    /// empty buffer, as Kubernetes would after a crash.
    pub async fn start_pod(&mut self, index: usize) -> Result<(), StackError> {
        let config = consumer::Config {
            consumer_addr: self.pod_addrs[index].clone(),
            ..self.pod_config.clone()
        };
        let PodRun::Processes(processes) = &mut self.pod_task else {
            return Err(StackError::PodNotAProcess);
        };
        if processes.get(index).is_some_and(Option::is_none) {
            processes[index] =
                Some(PodProcess::start(self.config.emulator_exe.as_deref(), &config).await?);
        }
        Ok(())
    }

    /// Peak resident memory of the (first) consumer pod in MiB, when it runs in a process
    /// of its own.
    pub fn pod_peak_rss_mb(&self) -> Option<f64> {
        self.pod_task.first_process().map(PodProcess::peak_rss_mb)
    }

    /// The process ids of the consumer pods running in processes of their own.
    pub fn pod_pids(&self) -> Vec<u32> {
        match &self.pod_task {
            PodRun::Processes(processes) => processes
                .iter()
                .flatten()
                .filter_map(PodProcess::pid)
                .collect(),
            PodRun::Task { .. } => Vec::new(),
        }
    }

    /// The (first) consumer pod's process id, when it runs in a process of its own.
    pub fn pod_pid(&self) -> Option<u32> {
        self.pod_task.first_process().and_then(PodProcess::pid)
    }

    /// Requests each handler replica has answered so far.
    pub fn requests_per_replica(&self) -> Vec<u64> {
        self.balancer.served()
    }

    /// The handler replicas' own metrics (Prometheus text, one block per replica), read
    /// without a request, so without spending a rate-limit budget.
    pub fn handler_metrics(&self) -> String {
        self.handler_metrics
            .iter()
            .map(|m| shared::metrics::render(&m.registry))
            .collect()
    }

    /// The consumer pod's `INTERNAL_TOKEN`, for tests that call its socket directly.
    pub fn internal_token(&self) -> Option<&str> {
        self.pod_config.internal_token.as_deref()
    }

    /// A token that stops the stack when cancelled.
    pub fn shutdown_token(&self) -> CancellationToken {
        self.shutdown.clone()
    }

    /// Stops every part and waits for them.
    pub async fn stop(mut self) {
        self.shutdown.cancel();
        self.pod_task.stop().await;
        while self.tasks.join_next().await.is_some() {}
    }
}

/// Handler replicas behind one port, each request to the next replica in turn.
#[derive(Debug, Clone)]
struct RoundRobin {
    replicas: Arc<[Replica]>,
    next: Arc<AtomicUsize>,
}

#[derive(Debug)]
struct Replica {
    router: axum::Router,
    served: AtomicU64,
}

impl RoundRobin {
    fn new(routers: Vec<axum::Router>) -> Self {
        Self {
            replicas: routers
                .into_iter()
                .map(|router| Replica {
                    router,
                    served: AtomicU64::new(0),
                })
                .collect(),
            next: Arc::default(),
        }
    }

    /// One replica alone is served directly; several through the turn-taking fallback.
    fn router(&self) -> axum::Router {
        if let [only] = &*self.replicas {
            return only.router.clone();
        }
        let balancer = self.clone();
        axum::Router::new().fallback(move |request: axum::extract::Request| {
            let turn = balancer.next.fetch_add(1, Ordering::Relaxed) % balancer.replicas.len();
            let replica = &balancer.replicas[turn];
            replica.served.fetch_add(1, Ordering::Relaxed);
            let router = replica.router.clone();
            async move {
                match router.oneshot(request).await {
                    Ok(response) => response,
                    Err(never) => match never {},
                }
            }
        })
    }

    fn served(&self) -> Vec<u64> {
        self.replicas
            .iter()
            .map(|r| r.served.load(Ordering::Relaxed))
            .collect()
    }
}

/// Polls `/ready` until it answers 200.
async fn wait_ready(api_base: &str) -> Result<(), StackError> {
    let http = reqwest::Client::new();
    let deadline = tokio::time::Instant::now() + READY_TIMEOUT;
    let mut last = String::from("no answer yet");
    while tokio::time::Instant::now() < deadline {
        match http.get(format!("{api_base}/ready")).send().await {
            Ok(r) if r.status().is_success() => return Ok(()),
            Ok(r) => last = format!("{} {}", r.status(), r.text().await.unwrap_or_default()),
            Err(err) => last = err.to_string(),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Err(StackError::NotReady(READY_TIMEOUT, last))
}
