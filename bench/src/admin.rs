//! The few admin API calls the lifecycle benchmark makes, each on a fresh HTTP/1.1
//! connection with the benchmarks' admin token.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::{ensure, Context as _};
use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use hyper::header::{AUTHORIZATION, CONTENT_TYPE, HOST};
use hyper::{Method, Request, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};
use tokio::net::TcpStream;

use crate::ADMIN_TOKEN;

/// The admin API of one collector.
#[derive(Debug, Clone, Copy)]
pub struct AdminApi {
    address: SocketAddr,
}

impl AdminApi {
    /// The admin API of the collector at `address`.
    pub fn new(address: SocketAddr) -> Self {
        Self { address }
    }

    /// Creates an environment named `name`; returns its id.
    ///
    /// # Errors
    ///
    /// When the collector does not answer `201`.
    pub async fn create_environment(&self, name: &str) -> anyhow::Result<String> {
        let body = json!({ "name": name });
        let (status, answer) = self
            .call(Method::POST, "/admin/v1/environments", Some(body))
            .await?;
        ensure!(
            status == StatusCode::CREATED,
            "creating an environment: {status} {answer}"
        );
        answer["id"]
            .as_str()
            .map(str::to_owned)
            .context("the new environment has no id")
    }

    /// Deletes the user with user id `id` in `environment`; returns how long the call took
    /// and the receipt.
    ///
    /// # Errors
    ///
    /// When the collector does not answer `200`.
    pub async fn delete_user(
        &self,
        environment: &str,
        id: &str,
    ) -> anyhow::Result<(Duration, Value)> {
        let path = format!("/admin/v1/users/{id}?environment={environment}");
        let started = Instant::now();
        let (status, receipt) = self.call(Method::DELETE, &path, None).await?;
        let took = started.elapsed();
        ensure!(
            status == StatusCode::OK,
            "deleting a user: {status} {receipt}"
        );
        Ok((took, receipt))
    }

    /// Sets the retention rule of `environment` to `days` (`None` turns it off).
    ///
    /// # Errors
    ///
    /// When the collector does not answer `200`.
    pub async fn set_retention(&self, environment: &str, days: Option<u32>) -> anyhow::Result<()> {
        let path = format!("/admin/v1/environments/{environment}/retention");
        let body = json!({ "days": days, "daysWithoutResponse": null });
        let (status, answer) = self.call(Method::PUT, &path, Some(body)).await?;
        ensure!(
            status == StatusCode::OK,
            "setting retention: {status} {answer}"
        );
        Ok(())
    }

    /// Sweeps `environment` now; returns how long the sweep took and what it reported.
    ///
    /// # Errors
    ///
    /// When the collector does not answer `200` (a `409` when its scheduled sweeper got to
    /// the environment first).
    pub async fn sweep(&self, environment: &str) -> anyhow::Result<(Duration, Value)> {
        let path = format!("/admin/v1/environments/{environment}/retention/sweep");
        let started = Instant::now();
        let (status, run) = self.call(Method::POST, &path, None).await?;
        let took = started.elapsed();
        ensure!(status == StatusCode::OK, "sweeping: {status} {run}");
        Ok((took, run))
    }

    async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> anyhow::Result<(StatusCode, Value)> {
        let stream = TcpStream::connect(self.address)
            .await
            .with_context(|| format!("while connecting to {}", self.address))?;
        stream.set_nodelay(true)?;
        let (mut sender, connection) =
            hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
        tokio::spawn(connection);

        let body = body.map(|json| json.to_string()).unwrap_or_default();
        let request = Request::builder()
            .method(method)
            .uri(path)
            .header(HOST, self.address.to_string())
            .header(AUTHORIZATION, format!("Bearer {ADMIN_TOKEN}"))
            .header(CONTENT_TYPE, "application/json")
            .body(Full::new(Bytes::from(body)))?;
        let response = sender.send_request(request).await?;
        let status = response.status();
        let bytes = response.into_body().collect().await?.to_bytes();
        let answer = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        Ok((status, answer))
    }
}
