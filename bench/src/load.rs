//! Measurement (b): the collector end to end over HTTP.
//!
//! Each of N connections is one keep-alive HTTP/1.1 connection with a task of its own that
//! POSTs `/v1/batch` bodies with the write key as HTTP Basic user name; with several
//! collectors, connection `i` goes to collector `i mod count`. Two ways to drive them:
//!
//! - **Closed loop** (peak load): every task sends its next request as soon as the last is
//!   answered, so N requests are always in flight and the collector runs as fast as it can.
//! - **Open loop** (a fixed rate): requests are due on a fixed schedule spread over the
//!   connections, and a request's latency counts from when it was *due*, not from when it
//!   went out. A slow answer therefore also charges the requests queued behind it, which a
//!   closed loop would hide (coordinated omission).
//!
//! Only requests started after the warm-up and answered before the end are counted.
//! [`paced_until`] paces like the open loop until told to stop, and returns every request
//! with its due time, so that a caller can count the ones that fell in a window it learns
//! only afterwards (while a sweep ran).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context as _};
use base64::Engine as _;
use bytes::Bytes;
use hdrhistogram::Histogram;
use http_body_util::{BodyExt as _, Full};
use hyper::client::conn::http1::SendRequest;
use hyper::header::{HeaderValue, AUTHORIZATION, CONTENT_TYPE, HOST};
use hyper::{Request, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::traffic::Traffic;

/// Consecutive failed reconnections after which a connection gives up.
const MAX_RECONNECTS: u32 = 5;

/// Where and how to send.
#[derive(Debug, Clone)]
pub struct Target {
    /// The collectors, each with its `Host` header.
    endpoints: Vec<(SocketAddr, HeaderValue)>,
    authorization: HeaderValue,
    /// Messages per request.
    pub batch_size: usize,
    /// Concurrent connections.
    pub connections: usize,
}

impl Target {
    /// Sends to the collectors at `addresses` with `write_key`.
    ///
    /// # Errors
    ///
    /// When no address is given; or, never in practice, when an address or the key cannot
    /// be a header value.
    pub fn new(
        addresses: Vec<SocketAddr>,
        write_key: &str,
        batch_size: usize,
        connections: usize,
    ) -> anyhow::Result<Self> {
        anyhow::ensure!(!addresses.is_empty(), "no collector to send to");
        let credentials = base64::engine::general_purpose::STANDARD.encode(format!("{write_key}:"));
        let endpoints = addresses
            .into_iter()
            .map(|address| Ok((address, HeaderValue::from_str(&address.to_string())?)))
            .collect::<anyhow::Result<_>>()?;
        Ok(Self {
            endpoints,
            authorization: HeaderValue::from_str(&format!("Basic {credentials}"))?,
            batch_size,
            connections: connections.max(1),
        })
    }

    /// The collector connection `index` talks to.
    fn endpoint(&self, index: usize) -> &(SocketAddr, HeaderValue) {
        &self.endpoints[index % self.endpoints.len()]
    }
}

/// What one run of requests measured.
#[derive(Debug)]
pub struct Load {
    /// Requests answered `200` in the window.
    pub requests: u64,
    /// Requests that failed or were answered with another status.
    pub failures: u64,
    /// Failed requests by the status they got; 0 for no answer.
    pub failed_with: BTreeMap<u16, u64>,
    /// Messages in the requests answered `200`.
    pub messages: u64,
    /// The measured window.
    pub window: Duration,
    /// Latency of the successful requests, in microseconds.
    pub latency: Histogram<u64>,
}

impl Load {
    /// Messages stored per second.
    pub fn message_rate(&self) -> f64 {
        self.messages as f64 / self.window.as_secs_f64()
    }

    /// Requests answered per second.
    pub fn request_rate(&self) -> f64 {
        self.requests as f64 / self.window.as_secs_f64()
    }

    /// The latency at `quantile` (0.5 for the median).
    pub fn latency_at(&self, quantile: f64) -> Duration {
        Duration::from_micros(self.latency.value_at_quantile(quantile))
    }

    fn empty(window: Duration) -> anyhow::Result<Self> {
        Ok(Self {
            requests: 0,
            failures: 0,
            failed_with: BTreeMap::new(),
            messages: 0,
            window,
            latency: Histogram::new_with_bounds(1, 60_000_000, 3)?,
        })
    }

    fn record(&mut self, status: Option<StatusCode>, latency: Duration, batch_size: usize) {
        if status == Some(StatusCode::OK) {
            self.requests += 1;
            self.messages += batch_size as u64;
            let micros = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX);
            self.latency.saturating_record(micros.max(1));
        } else {
            self.failures += 1;
            let code = status.map_or(0, |status| status.as_u16());
            *self.failed_with.entry(code).or_default() += 1;
        }
    }

    /// The failures by status, as `503 × 2, no answer × 1`; empty when there were none.
    pub fn failure_summary(&self) -> String {
        let mut summary = String::new();
        for (code, count) in &self.failed_with {
            if !summary.is_empty() {
                summary.push_str(", ");
            }
            // Writing into a String cannot fail.
            let _ = match code {
                0 => write!(summary, "no answer × {count}"),
                code => write!(summary, "{code} × {count}"),
            };
        }
        summary
    }

    fn merge(&mut self, other: &Self) -> anyhow::Result<()> {
        self.requests += other.requests;
        self.failures += other.failures;
        for (code, count) in &other.failed_with {
            *self.failed_with.entry(*code).or_default() += count;
        }
        self.messages += other.messages;
        self.latency.add(&other.latency)?;
        Ok(())
    }
}

/// When the counted window starts and ends.
#[derive(Debug, Clone, Copy)]
struct Window {
    from: Instant,
    until: Instant,
}

/// Keeps every connection busy for `warmup` plus `duration`; counts the last `duration`.
///
/// # Errors
///
/// When a connection cannot be (re)established.
pub async fn closed_loop(
    target: &Target,
    traffic: &Arc<Traffic>,
    warmup: Duration,
    duration: Duration,
) -> anyhow::Result<Load> {
    let from = Instant::now() + warmup;
    let window = Window {
        from,
        until: from + duration,
    };
    let mut tasks = JoinSet::new();
    for index in 0..target.connections {
        let (target, traffic) = (target.clone(), Arc::clone(traffic));
        tasks.spawn(async move { closed_connection(target, traffic, window, index).await });
    }
    gather(tasks, duration).await
}

/// Sends `per_second` requests a second, spread evenly over the connections, for `warmup`
/// plus `duration`; counts the last `duration`.
///
/// # Errors
///
/// When a connection cannot be (re)established.
pub async fn open_loop(
    target: &Target,
    traffic: &Arc<Traffic>,
    per_second: f64,
    warmup: Duration,
    duration: Duration,
) -> anyhow::Result<Load> {
    let start = Instant::now();
    let window = Window {
        from: start + warmup,
        until: start + warmup + duration,
    };
    let mut tasks = JoinSet::new();
    for index in 0..target.connections {
        let (target, traffic) = (target.clone(), Arc::clone(traffic));
        // Connection `index` sends requests index, index + N, index + 2N, … of the schedule.
        let first = start + Duration::from_secs_f64(index as f64 / per_second);
        let every = Duration::from_secs_f64(target.connections as f64 / per_second);
        tasks.spawn(
            async move { paced_connection(target, traffic, window, index, first, every).await },
        );
    }
    gather(tasks, duration).await
}

async fn gather(
    mut tasks: JoinSet<anyhow::Result<Load>>,
    window: Duration,
) -> anyhow::Result<Load> {
    let mut total = Load::empty(window)?;
    while let Some(done) = tasks.join_next().await {
        total.merge(&done??)?;
    }
    Ok(total)
}

async fn closed_connection(
    target: Target,
    traffic: Arc<Traffic>,
    window: Window,
    index: usize,
) -> anyhow::Result<Load> {
    let mut tally = Load::empty(window.until - window.from)?;
    let mut connection = Connection::open(&target, index).await?;

    while Instant::now() < window.until {
        let body = traffic.batch(target.batch_size);
        let sent = Instant::now();
        let status = connection.post(&target, body).await?;
        let done = Instant::now();
        if sent >= window.from && done <= window.until {
            tally.record(status, done - sent, target.batch_size);
        }
    }
    Ok(tally)
}

async fn paced_connection(
    target: Target,
    traffic: Arc<Traffic>,
    window: Window,
    index: usize,
    first: Instant,
    every: Duration,
) -> anyhow::Result<Load> {
    let mut tally = Load::empty(window.until - window.from)?;
    let mut connection = Connection::open(&target, index).await?;

    let mut due = first;
    while due < window.until {
        tokio::time::sleep_until(due).await;
        let body = traffic.batch(target.batch_size);
        let status = connection.post(&target, body).await?;
        let done = Instant::now();
        if due >= window.from && done <= window.until {
            tally.record(status, done - due, target.batch_size);
        }
        due += every;
    }
    Ok(tally)
}

/// One request of a paced run: when it was due, how long until its answer, and the
/// answer's status (`None` when none came).
#[derive(Debug, Clone, Copy)]
pub struct Sent {
    pub due: Instant,
    pub latency: Duration,
    pub status: Option<StatusCode>,
}

/// Sends `per_second` requests a second, spread evenly over the connections, until `stop`
/// turns true; returns every request sent, in no particular order.
///
/// # Errors
///
/// When a connection cannot be (re)established.
pub async fn paced_until(
    target: &Target,
    traffic: &Arc<Traffic>,
    per_second: f64,
    stop: watch::Receiver<bool>,
) -> anyhow::Result<Vec<Sent>> {
    let start = Instant::now();
    let mut tasks = JoinSet::new();
    for index in 0..target.connections {
        let (target, traffic, mut stop) = (target.clone(), Arc::clone(traffic), stop.clone());
        let first = start + Duration::from_secs_f64(index as f64 / per_second);
        let every = Duration::from_secs_f64(target.connections as f64 / per_second);
        tasks.spawn(async move {
            let mut connection = Connection::open(&target, index).await?;
            let mut sent = Vec::new();
            let mut due = first;
            while !*stop.borrow() {
                tokio::select! {
                    () = tokio::time::sleep_until(due) => {}
                    _ = stop.changed() => break,
                }
                let body = traffic.batch(target.batch_size);
                let status = connection.post(&target, body).await?;
                sent.push(Sent {
                    due,
                    latency: Instant::now() - due,
                    status,
                });
                due += every;
            }
            anyhow::Ok(sent)
        });
    }

    let mut all = Vec::new();
    while let Some(done) = tasks.join_next().await {
        all.extend(done??);
    }
    Ok(all)
}

impl Load {
    /// The requests of a paced run that were due in `[from, until)`.
    ///
    /// # Errors
    ///
    /// Never in practice: when the histogram cannot be made.
    pub fn of_window(
        sent: &[Sent],
        from: Instant,
        until: Instant,
        batch_size: usize,
    ) -> anyhow::Result<Self> {
        let mut load = Self::empty(until.saturating_duration_since(from))?;
        for request in sent.iter().filter(|r| r.due >= from && r.due < until) {
            load.record(request.status, request.latency, batch_size);
        }
        Ok(load)
    }
}

/// One keep-alive HTTP/1.1 connection to a collector.
struct Connection {
    sender: SendRequest<Full<Bytes>>,
    /// Which of the target's collectors it talks to.
    index: usize,
}

impl Connection {
    async fn open(target: &Target, index: usize) -> anyhow::Result<Self> {
        let (address, _) = target.endpoint(index);
        let stream = TcpStream::connect(address)
            .await
            .with_context(|| format!("while connecting to {address}"))?;
        stream.set_nodelay(true)?;
        let (sender, connection) =
            hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
        tokio::spawn(connection);
        Ok(Self { sender, index })
    }

    /// Posts one batch; returns the answer's status, or `None` when none came.
    ///
    /// The collector closes a keep-alive connection idle for a few seconds, which a paced
    /// connection at a low rate is; a request that meets such a connection going away is
    /// sent once more on a fresh one (as HTTP clients do), and its latency includes both.
    /// Only a second failure counts, and the connection is opened anew.
    async fn post(&mut self, target: &Target, body: String) -> anyhow::Result<Option<StatusCode>> {
        let body = Bytes::from(body);
        for attempt in 0..2 {
            match self.exchange(target, body.clone()).await {
                Ok(status) => return Ok(Some(status)),
                Err(_) if attempt == 0 => {
                    if let Ok(fresh) = Self::open(target, self.index).await {
                        *self = fresh;
                    }
                }
                Err(_) => {}
            }
        }
        self.reconnect(target).await?;
        Ok(None)
    }

    async fn exchange(&mut self, target: &Target, body: Bytes) -> anyhow::Result<StatusCode> {
        let (_, host) = target.endpoint(self.index);
        let request = Request::post("/v1/batch")
            .header(HOST, host.clone())
            .header(AUTHORIZATION, target.authorization.clone())
            .header(CONTENT_TYPE, "application/json")
            .body(Full::new(body))?;
        self.sender.ready().await?;
        let response = self.sender.send_request(request).await?;
        let status = response.status();
        response.into_body().collect().await?;
        Ok(status)
    }

    async fn reconnect(&mut self, target: &Target) -> anyhow::Result<()> {
        for attempt in 1..=MAX_RECONNECTS {
            tokio::time::sleep(Duration::from_millis(50 * u64::from(attempt))).await;
            if let Ok(fresh) = Self::open(target, self.index).await {
                *self = fresh;
                return Ok(());
            }
        }
        let (address, _) = target.endpoint(self.index);
        bail!("lost the connection to {address} for good")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sent(due: Instant, millis: u64, status: Option<StatusCode>) -> Sent {
        Sent {
            due,
            latency: Duration::from_millis(millis),
            status,
        }
    }

    #[test]
    fn a_window_counts_the_requests_due_inside_it_and_their_failures() {
        let start = Instant::now();
        let at = |ms: u64| start + Duration::from_millis(ms);
        let requests = [
            sent(at(0), 500, Some(StatusCode::OK)),
            sent(at(100), 5, Some(StatusCode::OK)),
            sent(at(150), 7, Some(StatusCode::SERVICE_UNAVAILABLE)),
            sent(at(199), 9, None),
            sent(at(200), 900, Some(StatusCode::OK)),
        ];

        let load = Load::of_window(&requests, at(100), at(200), 20).unwrap();

        assert_eq!(load.requests, 1);
        assert_eq!(load.messages, 20);
        assert_eq!(load.failure_summary(), "no answer × 1, 503 × 1");
        // The histogram keeps three significant digits.
        let p99 = load.latency_at(0.99).as_secs_f64() * 1e3;
        assert!((5.0..5.01).contains(&p99), "p99 {p99} ms");
    }
}
