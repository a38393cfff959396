//! Measurement (b): the collector end to end over HTTP.
//!
//! Each of N connections is one keep-alive HTTP/1.1 connection with a task of its own that
//! POSTs `/v1/batch` bodies with the write key as HTTP Basic user name. Two ways to drive
//! them:
//!
//! - **Closed loop** (peak load): every task sends its next request as soon as the last is
//!   answered, so N requests are always in flight and the collector runs as fast as it can.
//! - **Open loop** (a fixed rate): requests are due on a fixed schedule spread over the
//!   connections, and a request's latency counts from when it was *due*, not from when it
//!   went out. A slow answer therefore also charges the requests queued behind it, which a
//!   closed loop would hide (coordinated omission).
//!
//! Only requests started after the warm-up and answered before the end are counted.

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
use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::traffic::Traffic;

/// Consecutive failed reconnections after which a connection gives up.
const MAX_RECONNECTS: u32 = 5;

/// Where and how to send.
#[derive(Debug, Clone)]
pub struct Target {
    address: SocketAddr,
    host: HeaderValue,
    authorization: HeaderValue,
    /// Messages per request.
    pub batch_size: usize,
    /// Concurrent connections.
    pub connections: usize,
}

impl Target {
    /// Sends to the collector at `address` with `write_key`.
    ///
    /// # Errors
    ///
    /// Never in practice: when the address or key cannot be a header value.
    pub fn new(
        address: SocketAddr,
        write_key: &str,
        batch_size: usize,
        connections: usize,
    ) -> anyhow::Result<Self> {
        let credentials = base64::engine::general_purpose::STANDARD.encode(format!("{write_key}:"));
        Ok(Self {
            address,
            host: HeaderValue::from_str(&address.to_string())?,
            authorization: HeaderValue::from_str(&format!("Basic {credentials}"))?,
            batch_size,
            connections: connections.max(1),
        })
    }
}

/// What one run of requests measured.
#[derive(Debug)]
pub struct Load {
    /// Requests answered `200` in the window.
    pub requests: u64,
    /// Requests that failed or were answered with another status.
    pub failures: u64,
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
            messages: 0,
            window,
            latency: Histogram::new_with_bounds(1, 60_000_000, 3)?,
        })
    }

    fn record(&mut self, answered: bool, latency: Duration, batch_size: usize) {
        if answered {
            self.requests += 1;
            self.messages += batch_size as u64;
            let micros = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX);
            self.latency.saturating_record(micros.max(1));
        } else {
            self.failures += 1;
        }
    }

    fn merge(&mut self, other: &Self) -> anyhow::Result<()> {
        self.requests += other.requests;
        self.failures += other.failures;
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
    for _ in 0..target.connections {
        let (target, traffic) = (target.clone(), Arc::clone(traffic));
        tasks.spawn(async move { closed_connection(target, traffic, window).await });
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
        tasks.spawn(async move { paced_connection(target, traffic, window, first, every).await });
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
) -> anyhow::Result<Load> {
    let mut tally = Load::empty(window.until - window.from)?;
    let mut connection = Connection::open(&target).await?;

    while Instant::now() < window.until {
        let body = traffic.batch(target.batch_size);
        let sent = Instant::now();
        let answered = connection.post(&target, body).await?;
        let done = Instant::now();
        if sent >= window.from && done <= window.until {
            tally.record(answered, done - sent, target.batch_size);
        }
    }
    Ok(tally)
}

async fn paced_connection(
    target: Target,
    traffic: Arc<Traffic>,
    window: Window,
    first: Instant,
    every: Duration,
) -> anyhow::Result<Load> {
    let mut tally = Load::empty(window.until - window.from)?;
    let mut connection = Connection::open(&target).await?;

    let mut due = first;
    while due < window.until {
        tokio::time::sleep_until(due).await;
        let body = traffic.batch(target.batch_size);
        let answered = connection.post(&target, body).await?;
        let done = Instant::now();
        if due >= window.from && done <= window.until {
            tally.record(answered, done - due, target.batch_size);
        }
        due += every;
    }
    Ok(tally)
}

/// One keep-alive HTTP/1.1 connection to the collector.
struct Connection {
    sender: SendRequest<Full<Bytes>>,
}

impl Connection {
    async fn open(target: &Target) -> anyhow::Result<Self> {
        let stream = TcpStream::connect(target.address)
            .await
            .with_context(|| format!("while connecting to {}", target.address))?;
        stream.set_nodelay(true)?;
        let (sender, connection) =
            hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
        tokio::spawn(connection);
        Ok(Self { sender })
    }

    /// Posts one batch; true when it was answered `200`. A request that fails on the wire
    /// counts as not answered, and the connection is opened anew.
    async fn post(&mut self, target: &Target, body: String) -> anyhow::Result<bool> {
        let request = Request::post("/v1/batch")
            .header(HOST, target.host.clone())
            .header(AUTHORIZATION, target.authorization.clone())
            .header(CONTENT_TYPE, "application/json")
            .body(Full::new(Bytes::from(body)))?;

        match self.exchange(request).await {
            Ok(status) => Ok(status == StatusCode::OK),
            Err(_) => {
                self.reconnect(target).await?;
                Ok(false)
            }
        }
    }

    async fn exchange(&mut self, request: Request<Full<Bytes>>) -> anyhow::Result<StatusCode> {
        self.sender.ready().await?;
        let response = self.sender.send_request(request).await?;
        let status = response.status();
        response.into_body().collect().await?;
        Ok(status)
    }

    async fn reconnect(&mut self, target: &Target) -> anyhow::Result<()> {
        for attempt in 1..=MAX_RECONNECTS {
            tokio::time::sleep(Duration::from_millis(50 * u64::from(attempt))).await;
            if let Ok(fresh) = Self::open(target).await {
                *self = fresh;
                return Ok(());
            }
        }
        bail!("lost the connection to {} for good", target.address)
    }
}
