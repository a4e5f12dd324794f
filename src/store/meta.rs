//! `waypoint_meta`: facts about this database that the service records for itself, such as
//! "every FID was queued for backfill once".

/// Records `key` = `value` unless the key is already there; true when this call recorded it
/// (so exactly one of several concurrent callers goes ahead).
pub async fn claim(
    client: &impl tokio_postgres::GenericClient,
    key: &str,
    value: &str,
) -> Result<bool, tokio_postgres::Error> {
    let inserted = client
        .execute(
            "INSERT INTO waypoint_meta (key, value) VALUES ($1, $2) ON CONFLICT (key) DO NOTHING",
            &[&key, &value],
        )
        .await?;
    Ok(inserted == 1)
}

/// Forgets `key` (a claim whose work did not finish, so the next start does it again).
pub async fn release(
    client: &impl tokio_postgres::GenericClient,
    key: &str,
) -> Result<(), tokio_postgres::Error> {
    client
        .execute("DELETE FROM waypoint_meta WHERE key = $1", &[&key])
        .await?;
    Ok(())
}

/// The value of `key`, if recorded.
pub async fn get(
    client: &impl tokio_postgres::GenericClient,
    key: &str,
) -> Result<Option<String>, tokio_postgres::Error> {
    Ok(client
        .query_opt("SELECT value FROM waypoint_meta WHERE key = $1", &[&key])
        .await?
        .map(|row| row.get(0)))
}
