//! The spam filter: FIDs labelled spam in JSONL label files in the format of the public
//! Farcaster spam label lists, from file paths or http(s) URLs (`spam.sources`). Plain code:
//! the live path drops these FIDs' messages at the subscriber, backfill skips them; the
//! `spam` actor (`pipeline::spam`) loads and refreshes the lists.
//!
//! Each line is a label such as
//! `{"provider":1,"type":{"target":"fid","fid":123},"label_type":"spam","label_value":0,"timestamp":1700000000}`.
//! A FID's newest label wins (by timestamp, then by position); `label_value` 0 means spam.
//! With no source configured the filter is off and nothing touches the network. A refresh that
//! fails keeps the list in use.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use serde::Deserialize;

use crate::metrics::SPAM_LABELLED_FIDS;

/// Longest a label list download may take.
const FETCH_TIMEOUT: Duration = Duration::from_secs(120);

/// Errors of loading label lists.
#[derive(Debug, thiserror::Error)]
pub enum SpamError {
    #[error("spam source {source_name}: {message}")]
    Source {
        source_name: String,
        message: String,
    },
}

impl SpamError {
    /// Downloads and file reads may work later.
    pub fn is_retryable(&self) -> bool {
        true
    }
}

/// The set of FIDs to drop; cheap to share.
#[derive(Default)]
pub struct SpamFilter {
    fids: RwLock<Arc<HashSet<u64>>>,
}

#[derive(Deserialize)]
struct Label {
    #[serde(rename = "type")]
    target: LabelTarget,
    label_type: String,
    label_value: i64,
    #[serde(default)]
    timestamp: u64,
}

#[derive(Deserialize)]
struct LabelTarget {
    #[serde(default)]
    target: Option<String>,
    fid: u64,
}

impl SpamFilter {
    /// Whether `fid` is labelled spam.
    pub fn is_spam(&self, fid: u64) -> bool {
        let fids = self
            .fids
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        !fids.is_empty() && fids.contains(&fid)
    }

    /// Number of FIDs labelled spam.
    pub fn len(&self) -> usize {
        self.fids
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Reads every source and replaces the set. With no sources the filter is cleared (off).
    /// If any source fails, the set in use is kept and the error returned.
    pub async fn reload(&self, sources: &[String]) -> Result<usize, SpamError> {
        let mut labels: HashMap<u64, (u64, bool)> = HashMap::new();
        for source in sources {
            let text = read_source(source).await?;
            let skipped = parse_labels(&text, &mut labels);
            if skipped > 0 {
                tracing::warn!(source = %source, skipped, "spam labels: lines skipped (not a label)");
            }
        }
        let fids: HashSet<u64> = labels
            .into_iter()
            .filter_map(|(fid, (_, spam))| spam.then_some(fid))
            .collect();
        let count = fids.len();
        *self
            .fids
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = Arc::new(fids);
        metrics::gauge!(SPAM_LABELLED_FIDS).set(count as f64);
        Ok(count)
    }
}

/// Folds the labels of `text` into `labels` (fid → (timestamp, is spam)); returns how many
/// non-empty lines were not labels.
fn parse_labels(text: &str, labels: &mut HashMap<u64, (u64, bool)>) -> usize {
    let mut skipped = 0;
    for line in text.lines().map(str::trim).filter(|line| !line.is_empty()) {
        let Ok(label) = serde_json::from_str::<Label>(line) else {
            skipped += 1;
            continue;
        };
        if label.label_type != "spam" || label.target.target.as_deref().is_some_and(|t| t != "fid")
        {
            continue;
        }
        let spam = label.label_value == 0;
        match labels.get(&label.target.fid) {
            Some((timestamp, _)) if *timestamp > label.timestamp => {}
            _ => {
                labels.insert(label.target.fid, (label.timestamp, spam));
            }
        }
    }
    skipped
}

async fn read_source(source: &str) -> Result<String, SpamError> {
    let fail = |message: String| SpamError::Source {
        source_name: source.to_owned(),
        message,
    };
    if source.starts_with("http://") || source.starts_with("https://") {
        // reqwest is built without a crypto provider of its own: use ring, as tonic does.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let client = reqwest::Client::builder()
            .timeout(FETCH_TIMEOUT)
            .build()
            .map_err(|error| fail(error.to_string()))?;
        let response = client
            .get(source)
            .send()
            .await
            .map_err(|error| fail(error.to_string()))?;
        if !response.status().is_success() {
            return Err(fail(format!("HTTP {}", response.status())));
        }
        response
            .text()
            .await
            .map_err(|error| fail(error.to_string()))
    } else {
        tokio::fs::read_to_string(source)
            .await
            .map_err(|error| fail(error.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_newest_label_of_a_fid_wins() {
        let text = r#"
{"provider":1,"type":{"target":"fid","fid":10},"label_type":"spam","label_value":0,"timestamp":100}
{"provider":1,"type":{"target":"fid","fid":10},"label_type":"spam","label_value":2,"timestamp":200}
{"provider":1,"type":{"target":"fid","fid":11},"label_type":"spam","label_value":2,"timestamp":100}
{"provider":1,"type":{"target":"fid","fid":11},"label_type":"spam","label_value":0,"timestamp":300}
{"provider":1,"type":{"target":"fid","fid":12},"label_type":"spam","label_value":0,"timestamp":50}
{"provider":1,"type":{"target":"fid","fid":13},"label_type":"other","label_value":0,"timestamp":50}
not json
"#;
        let mut labels = HashMap::new();
        assert_eq!(parse_labels(text, &mut labels), 1);
        let spam: HashSet<u64> = labels
            .into_iter()
            .filter_map(|(fid, (_, spam))| spam.then_some(fid))
            .collect();
        assert_eq!(spam, HashSet::from([11, 12]));
    }

    #[tokio::test]
    async fn reload_reads_files_and_keeps_the_list_when_a_source_fails() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("spam.jsonl");
        std::fs::write(
            &path,
            r#"{"provider":1,"type":{"target":"fid","fid":7},"label_type":"spam","label_value":0,"timestamp":1}"#,
        )
        .unwrap();
        let filter = SpamFilter::default();
        assert!(!filter.is_spam(7));
        let sources = vec![path.display().to_string()];
        assert_eq!(filter.reload(&sources).await.unwrap(), 1);
        assert!(filter.is_spam(7));
        assert!(!filter.is_spam(8));

        let missing = vec![dir.path().join("missing.jsonl").display().to_string()];
        let error = filter.reload(&missing).await.unwrap_err().to_string();
        assert!(error.contains("missing.jsonl"), "{error}");
        assert!(filter.is_spam(7), "a failed refresh keeps the list");

        assert_eq!(filter.reload(&[]).await.unwrap(), 0);
        assert!(!filter.is_spam(7), "no sources: filter off");
    }

    #[tokio::test]
    async fn reload_fetches_http_sources() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let body = r#"{"provider":1,"type":{"target":"fid","fid":9},"label_type":"spam","label_value":0,"timestamp":1}"#;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/labels.jsonl", listener.local_addr().unwrap());
        let server = tokio::spawn(async move {
            while let Ok((mut socket, _)) = listener.accept().await {
                let mut request = [0u8; 4096];
                let _ = socket.read(&mut request).await;
                let response = format!(
                    "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = socket.write_all(response.as_bytes()).await;
                let _ = socket.shutdown().await;
            }
        });
        let filter = SpamFilter::default();
        assert_eq!(filter.reload(&[url]).await.unwrap(), 1);
        assert!(filter.is_spam(9));
        server.abort();
    }
}
