//! [`PodClient`]: the handlers' side of the internal socket to the consumer pods (TCP or
//! Unix socket). Requests are spread over the pods of `CONSUMER_ADDR`; a pod that fails is
//! passed over for a while and the request is tried on the next, so one pod's death is
//! invisible to clients. No pod answering is a `503` with `Retry-After`, never a `500`.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use shared::ApiError;
use shared::api::FetchRequest;
use shared::error::ErrorBody;
use shared::internal::{ConsumerAddr, ConsumerAddrs};
use shared::internal::{
    FETCH_PATH, METRICS_PATH, PodStatus, RATE_PATH, RateCheck, RateDecision, STATUS_PATH,
};

/// The pod's answer to a fetch, already in its public form — the JSON of
/// [`shared::api::EventsResponse`] or the binary batch of [`shared::wire`] — so the handlers
/// pass it on without decoding and encoding the events again. The body streams through as
/// it arrives: the caller receives the start of a large batch while the pod sends the rest.
/// Should the pod's connection break midway, the caller gets a body cut short, which the
/// client retries like any other failed fetch.
#[derive(Debug)]
pub struct EventsBody {
    pub content_type: axum::http::HeaderValue,
    pub body: axum::body::Body,
}

impl axum::response::IntoResponse for EventsBody {
    fn into_response(self) -> axum::response::Response {
        (
            [
                (axum::http::header::CONTENT_TYPE, self.content_type),
                (
                    axum::http::header::VARY,
                    axum::http::HeaderValue::from_static("accept"),
                ),
            ],
            self.body,
        )
            .into_response()
    }
}

/// Seconds a client is told to wait when no pod answers.
const RETRY_AFTER_SECS: u64 = 2;
/// Time to open a connection to a pod.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// Time for a pod answer beyond the long-poll wait itself.
const ANSWER_SLACK: Duration = Duration::from_secs(15);
/// How long a pod that could not be reached is passed over (tried only when no other
/// pod answers).
const DOWN_FOR: Duration = Duration::from_secs(5);
/// How often a host name of `CONSUMER_ADDR` is resolved again, so pods that come and go
/// behind a headless Service are followed.
const RESOLVE_EVERY: Duration = Duration::from_secs(10);

/// A client of the consumer pods of `CONSUMER_ADDR`.
#[derive(Debug, Clone)]
pub struct PodClient {
    pods: Arc<PodSet>,
}

/// The pods, as listed and as last resolved.
#[derive(Debug)]
struct PodSet {
    listed: Vec<Arc<Pod>>,
    /// Whether any listed address is a host name, to be resolved into its pods.
    resolves: bool,
    token: Option<String>,
    members: RwLock<Members>,
    /// Held by the one request that resolves again; the others use the members as they are.
    resolving: tokio::sync::Mutex<()>,
    /// The turn of the next spread request.
    next: AtomicUsize,
}

#[derive(Debug)]
struct Members {
    pods: Vec<Arc<Pod>>,
    resolved_at: Option<Instant>,
}

/// One pod, reached at one address.
#[derive(Debug)]
struct Pod {
    http: reqwest::Client,
    base: String,
    addr: ConsumerAddr,
    /// Whether the last call got through: an outage is logged once, not per request.
    reachable: AtomicBool,
    /// Until when it is passed over.
    down_until: Mutex<Option<Instant>>,
    /// The `Host` it is asked for, when reached at an address resolved from a name.
    host: Option<reqwest::header::HeaderValue>,
}

/// Why the pod client could not be built.
#[derive(Debug, thiserror::Error)]
pub enum PodClientError {
    #[error("cannot build the HTTP client for {addr}: {source}")]
    Build {
        addr: ConsumerAddr,
        source: reqwest::Error,
    },
    #[error("Unix sockets are not supported on this platform: {0}")]
    UnixUnsupported(ConsumerAddr),
    #[error(
        "INTERNAL_TOKEN cannot be sent in an HTTP header: use printable ASCII, e.g. $(handlers-server generate-api-key)"
    )]
    BadToken,
}

/// How one pod's attempt at a request went wrong.
#[derive(Debug)]
enum Failure {
    /// Not reached, or it refused this service: passed over for [`DOWN_FOR`], and the
    /// request goes to the next pod.
    Down(ApiError),
    /// Reached, but it cannot serve now (not consuming yet, too busy): the next pod is
    /// asked.
    Busy(ApiError),
    /// The request itself is wrong; every pod would say the same.
    Final(ApiError),
}

/// Which pod a request goes to first.
#[derive(Debug, Clone, Copy)]
enum Order {
    /// Each request to the next pod in turn: fetches, which any pod serves.
    Spread,
    /// The first pod listed that is up: rate counts, which are exact only in one place.
    Listed,
}

fn unavailable() -> ApiError {
    ApiError::unavailable(
        "the event source is not reachable now; retry later",
        RETRY_AFTER_SECS,
    )
}

impl PodClient {
    /// A client of the pods at `addrs`, sending `token` (their `INTERNAL_TOKEN`) with every
    /// request.
    pub fn new(addrs: &ConsumerAddrs, token: Option<&str>) -> Result<Self, PodClientError> {
        let listed = addrs
            .iter()
            .map(|addr| Pod::new(addr.clone(), token).map(Arc::new))
            .collect::<Result<Vec<_>, _>>()?;
        let resolves = addrs.iter().any(|addr| host_name(addr).is_some());
        Ok(Self {
            pods: Arc::new(PodSet {
                members: RwLock::new(Members {
                    pods: listed.clone(),
                    resolved_at: None,
                }),
                listed,
                resolves,
                token: token.map(str::to_owned),
                resolving: tokio::sync::Mutex::new(()),
                next: AtomicUsize::new(0),
            }),
        })
    }

    /// Events for a validated request, from the first pod that serves it.
    pub async fn fetch(&self, req: &FetchRequest) -> Result<EventsBody, ApiError> {
        self.pods
            .on_pods(Order::Spread, |pod| async move {
                let response = pod.fetch_response(req).await?;
                let content_type = response
                    .headers()
                    .get(reqwest::header::CONTENT_TYPE)
                    .and_then(|v| axum::http::HeaderValue::from_bytes(v.as_bytes()).ok())
                    .unwrap_or_else(|| axum::http::HeaderValue::from_static("application/json"));
                let body = http::Response::<reqwest::Body>::from(response).into_body();
                Ok(EventsBody {
                    content_type,
                    body: axum::body::Body::new(body),
                })
            })
            .await
    }

    /// A whole answer of a pod to `req` (the stream reads each before it sends it on), so
    /// a pod that breaks off midway is retried on the next.
    pub async fn fetch_bytes(&self, req: &FetchRequest) -> Result<bytes::Bytes, ApiError> {
        self.pods
            .on_pods(Order::Spread, |pod| async move {
                let response = pod.fetch_response(req).await?;
                response
                    .bytes()
                    .await
                    .map_err(|e| Failure::Down(pod.unreachable(&e)))
            })
            .await
    }

    /// Counts a request against a shared rate-limit budget, in the first listed pod that
    /// answers; `None` when none can be asked now (the caller then counts locally).
    pub async fn rate(&self, check: &RateCheck) -> Option<RateDecision> {
        self.pods
            .on_pods(Order::Listed, |pod| async move {
                let answer = pod
                    .request(reqwest::Method::POST, RATE_PATH)
                    .timeout(CONNECT_TIMEOUT)
                    .json(check)
                    .send()
                    .await;
                let failed = |err: reqwest::Error| {
                    tracing::debug!(pod = %pod.addr, error = %err, "rate check not counted there");
                    Failure::Down(unavailable())
                };
                let response = answer
                    .and_then(reqwest::Response::error_for_status)
                    .map_err(failed)?;
                response.json::<RateDecision>().await.map_err(failed)
            })
            .await
            .ok()
    }

    /// Whether some pod is consuming: the first that says so, else what one that answered
    /// said.
    pub async fn status(&self) -> Result<PodStatus, ApiError> {
        let mut answer = Err(unavailable());
        for pod in self.pods.members().await {
            let status = async {
                let response = pod.get(STATUS_PATH).await?;
                response
                    .json::<PodStatus>()
                    .await
                    .map_err(|e| Failure::Down(pod.unreachable(&e)))
            };
            match status.await {
                Ok(status) if status.consuming => return Ok(status),
                Ok(status) => answer = Ok(status),
                Err(failure) => {
                    if let Failure::Down(_) = failure {
                        pod.mark_down();
                    }
                    if answer.is_err() {
                        answer = Err(failure.into_error());
                    }
                }
            }
        }
        answer
    }

    /// Every reachable pod's metrics as one Prometheus text; with several pods, each
    /// sample is labelled with its `pod`.
    pub async fn metrics(&self) -> Result<String, ApiError> {
        let pods = self.pods.members().await;
        let answers = futures::future::join_all(pods.iter().map(|pod| async move {
            let text = async {
                let response = pod.get(METRICS_PATH).await.map_err(Failure::into_error)?;
                response.text().await.map_err(|e| pod.unreachable(&e))
            };
            (pod.addr.to_string(), text.await)
        }))
        .await;
        if let [(_, only)] = answers.as_slice() {
            return only.clone();
        }
        let mut reached = Vec::new();
        let mut last_error = None;
        for (pod, text) in answers {
            match text {
                Ok(text) => reached.push((pod, text)),
                Err(err) => {
                    tracing::warn!(%pod, error = %err, "a consumer pod's metrics are missing from /metrics");
                    last_error = Some(err);
                }
            }
        }
        if reached.is_empty() {
            return Err(last_error.unwrap_or_else(unavailable));
        }
        Ok(label_by_pod(&reached))
    }
}

impl PodSet {
    /// Runs `call` on one pod after another, in `order`, until one succeeds or fails
    /// for good; pods passed over come last.
    async fn on_pods<'a, T, F, Fut>(&'a self, order: Order, call: F) -> Result<T, ApiError>
    where
        F: Fn(Arc<Pod>) -> Fut,
        Fut: Future<Output = Result<T, Failure>> + 'a,
    {
        let mut pods = self.members().await;
        if let Order::Spread = order
            && !pods.is_empty()
        {
            let turn = self.next.fetch_add(1, Ordering::Relaxed) % pods.len();
            pods.rotate_left(turn);
        }
        // Stable: within the pods that are up, and within those that are not, the order
        // stays.
        let now = Instant::now();
        pods.sort_by_key(|pod| pod.is_down(now));
        let mut last = None;
        for pod in pods {
            match call(Arc::clone(&pod)).await {
                Ok(answer) => return Ok(answer),
                Err(Failure::Final(err)) => return Err(err),
                Err(Failure::Down(err)) => {
                    pod.mark_down();
                    last = Some(err);
                }
                Err(Failure::Busy(err)) => last = Some(err),
            }
        }
        // However the pods said it, no pod serving now tells the client when to come back.
        Err(match last {
            Some(err) if err.code == shared::ErrorCode::Unavailable => ApiError {
                retry_after_secs: err.retry_after_secs.or(Some(RETRY_AFTER_SECS)),
                ..err
            },
            Some(err) => err,
            None => unavailable(),
        })
    }

    /// The pods now: the listed ones, with each host name that resolves to several
    /// addresses standing for a pod at each (resolved again every [`RESOLVE_EVERY`]).
    async fn members(&self) -> Vec<Arc<Pod>> {
        let current = || {
            let members = self.members.read().unwrap_or_else(PoisonError::into_inner);
            let fresh = members
                .resolved_at
                .is_some_and(|at| at.elapsed() < RESOLVE_EVERY);
            (members.pods.clone(), fresh)
        };
        let (pods, fresh) = current();
        if !self.resolves || fresh {
            return pods;
        }
        // One request resolves; the others go on with the pods as they are.
        let Ok(_resolving) = self.resolving.try_lock() else {
            return pods;
        };
        let pods = self.resolve().await;
        *self.members.write().unwrap_or_else(PoisonError::into_inner) = Members {
            pods: pods.clone(),
            resolved_at: Some(Instant::now()),
        };
        pods
    }

    /// Resolves the listed host names. Pods already known keep their connections and
    /// their down marks.
    async fn resolve(&self) -> Vec<Arc<Pod>> {
        let known = self
            .members
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .pods
            .clone();
        let mut pods = Vec::new();
        for listed in &self.listed {
            let Some(host_port) = host_name(&listed.addr) else {
                pods.push(Arc::clone(listed));
                continue;
            };
            let mut addrs: Vec<SocketAddr> = match tokio::net::lookup_host(host_port).await {
                Ok(addrs) => addrs.collect(),
                Err(err) => {
                    tracing::debug!(pod = %listed.addr, error = %err, "CONSUMER_ADDR not resolved; trying it as it is");
                    Vec::new()
                }
            };
            addrs.sort_unstable();
            addrs.dedup();
            // A pod per address of the family with more of them. One address per family (a
            // Service, `localhost` with 127.0.0.1 and ::1) is one host: reached by name, as
            // listed, letting the connector pick the family.
            let (v4, v6): (Vec<SocketAddr>, Vec<SocketAddr>) =
                addrs.into_iter().partition(SocketAddr::is_ipv4);
            let addrs = if v4.len() >= v6.len() { v4 } else { v6 };
            if addrs.len() < 2 {
                pods.push(Arc::clone(listed));
                continue;
            }
            for addr in addrs {
                let addr = ConsumerAddr::Tcp(addr.to_string());
                if let Some(pod) = known.iter().find(|p| p.addr == addr) {
                    pods.push(Arc::clone(pod));
                } else if let Ok(pod) = Pod::new(addr, self.token.as_deref()) {
                    pods.push(Arc::new(pod.host(host_port)));
                }
            }
        }
        if pods.len() != known.len() {
            tracing::info!(pods = pods.len(), "consumer pods found");
        }
        pods
    }
}

/// The `host:port` of a TCP address whose host is a name, not an IP address.
fn host_name(addr: &ConsumerAddr) -> Option<&str> {
    match addr {
        ConsumerAddr::Tcp(host_port) if host_port.parse::<SocketAddr>().is_err() => {
            Some(host_port.as_str())
        }
        _ => None,
    }
}

impl Failure {
    fn into_error(self) -> ApiError {
        match self {
            Self::Down(err) | Self::Busy(err) | Self::Final(err) => err,
        }
    }
}

impl Pod {
    fn new(addr: ConsumerAddr, token: Option<&str>) -> Result<Self, PodClientError> {
        let mut headers = reqwest::header::HeaderMap::new();
        if let Some(token) = token {
            let mut value = reqwest::header::HeaderValue::from_str(&format!("Bearer {token}"))
                .map_err(|_| PodClientError::BadToken)?;
            value.set_sensitive(true);
            headers.insert(reqwest::header::AUTHORIZATION, value);
        }
        let builder = reqwest::Client::builder()
            .default_headers(headers)
            .connect_timeout(CONNECT_TIMEOUT)
            .pool_idle_timeout(Duration::from_secs(30));
        let (builder, base) = match &addr {
            ConsumerAddr::Tcp(host_port) => (builder, format!("http://{host_port}")),
            #[cfg(unix)]
            ConsumerAddr::Unix(path) => (
                builder.unix_socket(path.as_path()),
                "http://consumer-pod".to_owned(),
            ),
            #[cfg(not(unix))]
            ConsumerAddr::Unix(_) => return Err(PodClientError::UnixUnsupported(addr)),
        };
        let http = builder.build().map_err(|source| PodClientError::Build {
            addr: addr.clone(),
            source,
        })?;
        Ok(Self {
            http,
            base,
            addr,
            reachable: AtomicBool::new(true),
            down_until: Mutex::new(None),
            host: None,
        })
    }

    /// The same pod, reached at its address but asking for `host_port` (the name it was
    /// resolved from), so a service mesh routes the request by the Service's name.
    fn host(mut self, host_port: &str) -> Self {
        if let Ok(value) = reqwest::header::HeaderValue::from_str(host_port) {
            self.host = Some(value);
        }
        self
    }

    fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        let request = self.http.request(method, format!("{}{path}", self.base));
        match &self.host {
            Some(host) => request.header(reqwest::header::HOST, host.clone()),
            None => request,
        }
    }

    fn is_down(&self, now: Instant) -> bool {
        self.down_until
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .is_some_and(|until| now < until)
    }

    fn mark_down(&self) {
        *self
            .down_until
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some(Instant::now() + DOWN_FOR);
    }

    fn unreachable(&self, err: &reqwest::Error) -> ApiError {
        if self.reachable.swap(false, Ordering::Relaxed) {
            tracing::warn!(pod = %self.addr, error = %err, "consumer pod unreachable; requests go to the other pods, or answer 503 if there are none");
        } else {
            tracing::debug!(pod = %self.addr, error = %err, "consumer pod still unreachable");
        }
        unavailable()
    }

    fn reached(&self) {
        if !self.reachable.swap(true, Ordering::Relaxed) {
            tracing::info!(pod = %self.addr, "consumer pod reachable again");
        }
    }

    /// This pod's successful answer to `req`.
    async fn fetch_response(&self, req: &FetchRequest) -> Result<reqwest::Response, Failure> {
        let timeout = Duration::from_millis(u64::from(req.wait_ms)) + ANSWER_SLACK;
        let response = self
            .request(reqwest::Method::POST, FETCH_PATH)
            .timeout(timeout)
            .json(req)
            .send()
            .await
            .map_err(|e| Failure::Down(self.unreachable(&e)))?;
        self.answered(response).await
    }

    /// A short `GET` of an internal route.
    async fn get(&self, path: &str) -> Result<reqwest::Response, Failure> {
        let response = self
            .request(reqwest::Method::GET, path)
            .timeout(CONNECT_TIMEOUT * 2)
            .send()
            .await
            .map_err(|e| Failure::Down(self.unreachable(&e)))?;
        self.answered(response).await
    }

    /// A success as it is; an error answer as the same error for the client, and whether
    /// another pod should be asked.
    async fn answered(&self, response: reqwest::Response) -> Result<reqwest::Response, Failure> {
        let status = response.status();
        if status == StatusCode::UNAUTHORIZED {
            // The pod refused this service, not the caller: never a 401 to the client,
            // whose key is fine.
            if self.reachable.swap(false, Ordering::Relaxed) {
                tracing::error!(pod = %self.addr, "the consumer pod refused this service: set the same INTERNAL_TOKEN on both; passing it over until then");
            }
            return Err(Failure::Down(unavailable()));
        }
        self.reached();
        if status.is_success() {
            return Ok(response);
        }
        let retry_after = shared::api::retry_after(response.headers()).map(|d| d.as_secs());
        let error = match response.json::<ErrorBody>().await {
            Ok(body) => ApiError {
                retry_after_secs: retry_after,
                ..ApiError::from(body)
            },
            Err(_) if status == StatusCode::SERVICE_UNAVAILABLE => unavailable(),
            Err(err) => {
                tracing::error!(pod = %self.addr, %status, error = %err, "consumer pod answered without an error body");
                ApiError::new(shared::ErrorCode::Internal, "internal error")
            }
        };
        if status == StatusCode::SERVICE_UNAVAILABLE {
            Err(Failure::Busy(error))
        } else {
            Err(Failure::Final(error))
        }
    }
}

/// Several pods' Prometheus texts as one: each family once, with every sample labelled
/// `pod`, so the same metric of two pods stays two series.
fn label_by_pod(texts: &[(String, String)]) -> String {
    // Family name → its HELP and TYPE lines and its samples, in first-seen order.
    let mut families: Vec<(String, Vec<String>, Vec<String>)> = Vec::new();
    for (pod, text) in texts {
        let pod_label = format!("pod=\"{}\"", pod.replace('\\', "\\\\").replace('"', "\\\""));
        let mut current: Option<usize> = None;
        for line in text.lines() {
            if let Some(meta) = line
                .strip_prefix("# HELP ")
                .or_else(|| line.strip_prefix("# TYPE "))
            {
                let name = meta.split_whitespace().next().unwrap_or_default();
                let at = match families.iter().position(|(n, _, _)| n == name) {
                    Some(at) => at,
                    None => {
                        families.push((name.to_owned(), Vec::new(), Vec::new()));
                        families.len() - 1
                    }
                };
                if !families[at].1.iter().any(|l| l == line) {
                    families[at].1.push(line.to_owned());
                }
                current = Some(at);
            } else if line.is_empty() || line.starts_with('#') {
                continue;
            } else {
                let labelled = match line.find(['{', ' ']) {
                    Some(i) if line.as_bytes()[i] == b'{' => {
                        let rest = &line[i + 1..];
                        let sep = if rest.starts_with('}') { "" } else { "," };
                        format!("{}{{{pod_label}{sep}{rest}", &line[..i])
                    }
                    Some(i) => format!("{}{{{pod_label}}}{}", &line[..i], &line[i..]),
                    None => continue,
                };
                let at = current.unwrap_or_else(|| {
                    families.push((String::new(), Vec::new(), Vec::new()));
                    families.len() - 1
                });
                current = Some(at);
                families[at].2.push(labelled);
            }
        }
    }
    let mut out = String::new();
    for (_, meta, samples) in families {
        for line in meta.iter().chain(&samples) {
            out.push_str(line);
            out.push('\n');
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn several_pods_metrics_keep_each_family_once_with_a_pod_label() {
        let a = "# HELP kafka_events_consumed_total Events\n# TYPE kafka_events_consumed_total counter\nkafka_events_consumed_total{topic=\"t\"} 5\n# HELP up Up\n# TYPE up gauge\nup 1\n";
        let b = "# HELP kafka_events_consumed_total Events\n# TYPE kafka_events_consumed_total counter\nkafka_events_consumed_total{topic=\"t\"} 7\n# HELP up Up\n# TYPE up gauge\nup{} 0\n";
        let merged = label_by_pod(&[
            ("10.0.0.1:7070".into(), a.into()),
            ("10.0.0.2:7070".into(), b.into()),
        ]);
        assert_eq!(
            merged,
            "# HELP kafka_events_consumed_total Events\n# TYPE kafka_events_consumed_total counter\n\
             kafka_events_consumed_total{pod=\"10.0.0.1:7070\",topic=\"t\"} 5\n\
             kafka_events_consumed_total{pod=\"10.0.0.2:7070\",topic=\"t\"} 7\n\
             # HELP up Up\n# TYPE up gauge\nup{pod=\"10.0.0.1:7070\"} 1\nup{pod=\"10.0.0.2:7070\"} 0\n"
        );
    }

    #[test]
    fn host_names_are_resolved_and_addresses_kept() {
        assert_eq!(
            host_name(&ConsumerAddr::Tcp("consumer-pods:7070".into())),
            Some("consumer-pods:7070")
        );
        assert_eq!(host_name(&ConsumerAddr::Tcp("10.0.0.1:7070".into())), None);
        assert_eq!(host_name(&ConsumerAddr::Tcp("[::1]:7070".into())), None);
        assert_eq!(host_name(&ConsumerAddr::Unix("/run/pod.sock".into())), None);
    }

    #[tokio::test]
    async fn a_name_with_one_address_per_family_stays_one_pod() {
        let (pod, asked) = fake_pod(StatusCode::OK).await;
        let ConsumerAddr::Tcp(addr) = pod else {
            unreachable!("a TCP fake")
        };
        let port = addr.rsplit_once(':').unwrap().1;
        let addrs: ConsumerAddrs = format!("localhost:{port}").parse().unwrap();
        let pods = PodClient::new(&addrs, None).unwrap();
        let members = pods.pods.members().await;
        assert_eq!(members.len(), 1);
        assert_eq!(members[0].addr.to_string(), format!("localhost:{port}"));
        pods.fetch_bytes(&request()).await.expect("served by name");
        assert_eq!(asked.load(Ordering::Relaxed), 1);
    }

    /// A pod that answers every fetch with `status` and counts what it was asked.
    async fn fake_pod(status: StatusCode) -> (ConsumerAddr, Arc<AtomicUsize>) {
        let asked = Arc::new(AtomicUsize::new(0));
        let counted = Arc::clone(&asked);
        let app = axum::Router::new().route(
            FETCH_PATH,
            axum::routing::post(move || {
                counted.fetch_add(1, Ordering::Relaxed);
                async move {
                    if status.is_success() {
                        (status, r#"{"events":[],"next_cursor":"c","gaps":[]}"#)
                            .into_response_parts()
                    } else {
                        (
                            status,
                            if status == StatusCode::BAD_REQUEST {
                                r#"{"error":{"code":"invalid_cursor","message":"not a cursor"}}"#
                            } else {
                                r#"{"error":{"code":"unavailable","message":"not yet"}}"#
                            },
                        )
                            .into_response_parts()
                    }
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        (ConsumerAddr::Tcp(addr.to_string()), asked)
    }

    trait IntoParts {
        fn into_response_parts(self) -> axum::response::Response;
    }
    impl IntoParts for (StatusCode, &'static str) {
        fn into_response_parts(self) -> axum::response::Response {
            use axum::response::IntoResponse;
            (
                self.0,
                [(axum::http::header::CONTENT_TYPE, "application/json")],
                self.1,
            )
                .into_response()
        }
    }

    /// An address nothing listens on.
    fn dead_pod() -> ConsumerAddr {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        ConsumerAddr::Tcp(listener.local_addr().unwrap().to_string())
    }

    fn request() -> FetchRequest {
        shared::api::EventsQuery::default().validate().unwrap()
    }

    #[tokio::test]
    async fn fetches_are_spread_and_a_dead_or_busy_pod_is_passed_over() {
        let (a, asked_a) = fake_pod(StatusCode::OK).await;
        let (b, asked_b) = fake_pod(StatusCode::OK).await;
        let (busy, asked_busy) = fake_pod(StatusCode::SERVICE_UNAVAILABLE).await;
        let dead = dead_pod();
        let addrs: ConsumerAddrs = format!("{a},{dead},{busy},{b}").parse().unwrap();
        let pods = PodClient::new(&addrs, None).unwrap();
        for _ in 0..8 {
            pods.fetch_bytes(&request())
                .await
                .expect("one of the pods answers");
        }
        let (a, b) = (
            asked_a.load(Ordering::Relaxed),
            asked_b.load(Ordering::Relaxed),
        );
        assert_eq!(a + b, 8, "every fetch served once, by a live pod");
        assert!(a >= 2 && b >= 2, "spread over both live pods: {a} and {b}");
        assert!(
            asked_busy.load(Ordering::Relaxed) >= 1,
            "the busy pod was asked and passed over"
        );
        // The dead pod was marked down after its first failure and is tried last now.
        let members = pods.pods.members().await;
        let marked = members
            .iter()
            .find(|p| p.addr.to_string() == dead.to_string())
            .unwrap();
        assert!(marked.is_down(Instant::now()));
    }

    #[tokio::test]
    async fn no_pod_answering_is_a_503_with_retry_after() {
        let (busy, _) = fake_pod(StatusCode::SERVICE_UNAVAILABLE).await;
        let dead = dead_pod();
        let addrs: ConsumerAddrs = format!("{dead},{busy}").parse().unwrap();
        let pods = PodClient::new(&addrs, None).unwrap();
        let err = pods.fetch_bytes(&request()).await.unwrap_err();
        assert_eq!(err.code.status(), 503);
        assert!(err.retry_after_secs.is_some());
    }

    #[tokio::test]
    async fn a_bad_request_is_not_tried_on_every_pod() {
        let (a, asked_a) = fake_pod(StatusCode::BAD_REQUEST).await;
        let (b, asked_b) = fake_pod(StatusCode::BAD_REQUEST).await;
        let addrs: ConsumerAddrs = format!("{a},{b}").parse().unwrap();
        let pods = PodClient::new(&addrs, None).unwrap();
        let err = pods.fetch_bytes(&request()).await.unwrap_err();
        assert_eq!(err.code.status(), 400);
        assert_eq!(
            asked_a.load(Ordering::Relaxed) + asked_b.load(Ordering::Relaxed),
            1
        );
    }
}
