//! Plain HTTP/1.1 against a process's health port, without a client library: enough for
//! `/health`, `/ready`, `/metrics` and `/admin`.

use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// One HTTP/1.1 request; `None` when nothing listens on the port.
pub async fn http(
    method: &str,
    port: u16,
    path: &str,
    token: Option<&str>,
) -> Option<(u16, String)> {
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .ok()?;
    let authorization = token
        .map(|token| format!("Authorization: Bearer {token}\r\n"))
        .unwrap_or_default();
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n{authorization}Content-Length: 0\r\nConnection: close\r\n\r\n"
    );
    stream.write_all(request.as_bytes()).await.ok()?;
    let mut response = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut response))
        .await
        .ok()?
        .ok()?;
    let response = String::from_utf8_lossy(&response).into_owned();
    let status = response.split(' ').nth(1)?.parse().ok()?;
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, body)| body.to_owned())
        .unwrap_or_default();
    Some((status, dechunk(&body)))
}

/// Undoes chunked transfer encoding when the body uses it (axum streams some responses).
fn dechunk(body: &str) -> String {
    let mut rest = body;
    let mut out = String::new();
    loop {
        let Some((size, after)) = rest.split_once("\r\n") else {
            return body.to_owned();
        };
        let Ok(size) = usize::from_str_radix(size.trim(), 16) else {
            return body.to_owned();
        };
        if size == 0 {
            return out;
        }
        if after.len() < size {
            return body.to_owned();
        }
        out.push_str(&after[..size]);
        rest = after[size..].trim_start_matches("\r\n");
    }
}

/// Waits until `GET path` answers `status`; returns the body.
pub async fn wait_for(port: u16, path: &str, status: u16) -> String {
    let started = Instant::now();
    loop {
        if let Some((got, body)) = http("GET", port, path, None).await
            && got == status
        {
            return body;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "GET {path} on {port} never answered {status}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

pub fn port_of(env: &[(String, String)]) -> u16 {
    env.iter()
        .find(|(name, _)| name == "WAYPOINT_HEALTH__PORT")
        .and_then(|(_, value)| value.parse().ok())
        .expect("health port")
}
