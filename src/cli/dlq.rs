//! `waypoint dlq list|replay <type>`: inspect dead-lettered entries and move them back to
//! their stream once the cause is fixed.

use std::process::ExitCode;

use crate::cli::DlqArgs;
use crate::config::Config;
use crate::hub;
use crate::streams::{DeadLetter, Redis, StreamType, UNKNOWN_BUCKET};

/// Prints the oldest dead letters of a stream type (or `unknown`), one per line.
pub async fn list(args: DlqArgs, config: &Config) -> anyhow::Result<ExitCode> {
    let bucket = bucket(&args.stream)?;
    let redis = Redis::connect(&config.redis).await?;
    let total = redis.dlq_len(bucket).await?;
    let letters = redis.dlq_list(bucket, args.count).await?;
    println!(
        "{total} dead letter(s) in {bucket}; showing {}",
        letters.len()
    );
    for letter in &letters {
        println!("{}", describe(letter));
    }
    Ok(ExitCode::SUCCESS)
}

/// Moves dead letters back to their stream (all, or `--id`s).
pub async fn replay(args: DlqArgs, config: &Config) -> anyhow::Result<ExitCode> {
    let kind = StreamType::parse(&args.stream).map_err(|error| {
        if args.stream == UNKNOWN_BUCKET {
            anyhow::anyhow!(
                "events in the unknown bucket could not be decoded and have no stream to go back to; inspect them with `waypoint dlq list unknown`"
            )
        } else {
            anyhow::anyhow!(error)
        }
    })?;
    let redis = Redis::connect(&config.redis).await?;
    let ids = (!args.ids.is_empty()).then_some(args.ids.as_slice());
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|elapsed| elapsed.as_millis() as u64)
        .unwrap_or(0);
    let moved = redis.dlq_replay(kind, ids, now_ms).await?;
    println!("replayed {moved} dead letter(s) to the {kind} stream");
    Ok(ExitCode::SUCCESS)
}

fn bucket(name: &str) -> anyhow::Result<&'static str> {
    if name == UNKNOWN_BUCKET {
        return Ok(UNKNOWN_BUCKET);
    }
    StreamType::parse(name)
        .map(StreamType::as_str)
        .map_err(|error| anyhow::anyhow!("{error}, or {UNKNOWN_BUCKET}"))
}

fn describe(letter: &DeadLetter) -> String {
    let event = letter
        .raw
        .as_deref()
        .map(|raw| match hub::decode_event(raw) {
            Ok(event) => format!(
                "hub event {} type {} shard {}",
                event.id, event.r#type, event.shard_index
            ),
            Err(_) => format!("{} undecodable bytes", raw.len()),
        })
        .unwrap_or_else(|| "no event bytes".to_owned());
    let source = if letter.source_id.is_empty() {
        "rejected before publishing".to_owned()
    } else {
        format!(
            "from entry {} after {} deliveries",
            letter.source_id, letter.deliveries
        )
    };
    format!(
        "{}  {}  {source}  {event}  reason: {}",
        letter.id, letter.at_ms, letter.reason
    )
}
