//! Configuration loading as an operator meets it: the example file, layering, error reports,
//! masking, and `waypoint config check`.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use waypoint::config::{Config, ConfigErrors, LogFormat, StartFrom, ValueSource};

const EXAMPLE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/config/waypoint.example.toml");

fn write_toml(text: &str) -> tempfile::NamedTempFile {
    let file = tempfile::Builder::new()
        .suffix(".toml")
        .tempfile()
        .expect("temp file");
    std::fs::write(file.path(), text).expect("write config");
    file
}

fn load(path: Option<&Path>, env: &[(&str, &str)]) -> Result<Config, ConfigErrors> {
    Config::load_from(path, env.iter().copied())
}

fn lines(errors: &ConfigErrors) -> Vec<String> {
    errors.to_string().lines().map(str::to_owned).collect()
}

fn keys(value: &toml::Value, prefix: &str, out: &mut Vec<String>) {
    if let toml::Value::Table(table) = value {
        for (name, inner) in table {
            let key = if prefix.is_empty() {
                name.clone()
            } else {
                format!("{prefix}.{name}")
            };
            out.push(key.clone());
            keys(inner, &key, out);
        }
    }
}

#[test]
fn example_file_loads_and_equals_the_defaults() {
    let config = load(Some(Path::new(EXAMPLE)), &[]).expect("example loads");
    assert_eq!(config, Config::default());

    // It also lists every key (admin_token is absent by default and commented out).
    let text = std::fs::read_to_string(EXAMPLE).expect("read example");
    let example: toml::Value = toml::from_str(&text).expect("example parses");
    let (mut in_example, mut in_defaults) = (Vec::new(), Vec::new());
    keys(&example, "", &mut in_example);
    keys(&Config::default().masked(), "", &mut in_defaults);
    in_example.sort();
    in_defaults.sort();
    assert_eq!(in_example, in_defaults);
    assert!(text.contains("# admin_token = "));
}

#[test]
fn environment_wins_over_the_file_and_the_file_over_defaults() {
    let file = write_toml(
        "[database]\nmax_connections = 7\ntimeout_seconds = 9\n\n[logging]\nformat = \"json\"\n",
    );
    let config = load(
        Some(file.path()),
        &[
            ("WAYPOINT_DATABASE__MAX_CONNECTIONS", "11"),
            ("WAYPOINT_HUB__START_FROM", "latest"),
        ],
    )
    .expect("loads");
    assert_eq!(config.database.max_connections, 11);
    assert_eq!(config.database.timeout_seconds, 9);
    assert_eq!(config.logging.format, LogFormat::Json);
    assert_eq!(config.hub.start_from, StartFrom::Latest);
    assert_eq!(config.redis, Config::default().redis);
}

#[test]
fn config_path_comes_from_waypoint_config_when_not_given() {
    let file = write_toml("[rest]\nport = 9191\n");
    let path = file.path().to_str().expect("utf-8 path");
    let config = load(None, &[("WAYPOINT_CONFIG", path)]).expect("loads");
    assert_eq!(config.rest.port, 9191);
}

#[test]
fn unknown_keys_in_file_and_env_are_reported_together_with_their_sources() {
    let file = write_toml("[database]\nurll = \"x\"\n\n[nosuchsection]\nkey = 1\n");
    let errors = load(
        Some(file.path()),
        &[
            ("WAYPOINT_REDIS__PREFIXX", "a"),
            ("WAYPOINT_HUB__HEADERS__X_API_KEY", "ok"),
        ],
    )
    .expect_err("unknown keys");
    let path = file.path().display();
    assert_eq!(
        lines(&errors),
        vec![
            format!("database.urll: unknown key (from file {path})"),
            format!("nosuchsection: unknown key (from file {path})"),
            "redis.prefixx: unknown key (from env WAYPOINT_REDIS__PREFIXX)".to_owned(),
        ]
    );
}

#[test]
fn wrong_types_name_the_key_and_the_source() {
    let file = write_toml("[rest]\nport = \"http\"\n");
    let errors = load(
        Some(file.path()),
        &[("WAYPOINT_HUB__REQUEST_TIMEOUT_SECONDS", "abc")],
    )
    .expect_err("type errors");
    let lines = lines(&errors);
    assert_eq!(lines.len(), 2, "{lines:?}");
    assert!(
        lines.contains(
            &"hub.request_timeout_seconds: invalid type: found string \"abc\", expected u64 \
          (from env WAYPOINT_HUB__REQUEST_TIMEOUT_SECONDS)"
                .to_owned()
        )
    );
    assert!(lines.contains(&format!(
        "rest.port: invalid type: found string \"http\", expected u16 (from file {})",
        file.path().display()
    )));
    let sources: Vec<_> = errors.errors().iter().map(|e| e.source.clone()).collect();
    assert!(sources.contains(&ValueSource::File(file.path().to_path_buf())));
}

#[test]
fn every_invalid_value_is_reported_at_once() {
    let file = write_toml(
        "[redis]\nurl = \"http://cache\"\nprefix = \"\"\n\n[backfill]\nbatch_size = 0\n",
    );
    let errors = load(
        Some(file.path()),
        &[
            ("WAYPOINT_DATABASE__URL", "mysql://root@db/waypoint"),
            ("WAYPOINT_MCP__PORT", "0"),
            ("WAYPOINT_HUB__URL", "ftp://hub"),
            ("WAYPOINT_HUB__SHARD_INDICES", "0,2"),
            ("WAYPOINT_LOGGING__LEVEL", "info,=="),
            ("WAYPOINT_HUB__RETRY_MAX_MS", "10"),
        ],
    )
    .expect_err("invalid values");
    let text = errors.to_string();
    for expected in [
        "database.url: mysql://root@db/waypoint: expected a postgres:// or postgresql:// URL (from env WAYPOINT_DATABASE__URL)",
        "redis.url: http://cache/: unsupported scheme \"http\", expected redis://",
        "redis.prefix: must not be empty (from file",
        "backfill.batch_size: invalid value 0: must be at least 1 (from file",
        "mcp.port: invalid value 0: a port must be 1-65535 (from env WAYPOINT_MCP__PORT)",
        "hub.url: \"ftp://hub\": unsupported scheme \"ftp\"",
        "hub.shard_indices: invalid shard 0",
        "logging.level: invalid filter",
        "hub.retry_max_ms: 10 is below hub.retry_initial_ms (250) (from env WAYPOINT_HUB__RETRY_MAX_MS)",
    ] {
        assert!(text.contains(expected), "missing {expected:?} in:\n{text}");
    }
    assert_eq!(errors.errors().len(), 9, "{text}");
}

#[test]
fn unreadable_file_and_bad_environment_are_reported_together() {
    let missing = PathBuf::from("/nonexistent/waypoint.toml");
    let errors = load(Some(&missing), &[("WAYPOINT_REST__PORT", "x")]).expect_err("errors");
    let lines = lines(&errors);
    assert!(
        lines[0].starts_with("cannot read configuration file"),
        "{lines:?}"
    );
    assert!(lines[0].ends_with("(from file /nonexistent/waypoint.toml)"));
    assert!(lines[1].starts_with("rest.port: invalid type"), "{lines:?}");

    let broken = write_toml("[database\nurl = 1\n");
    let errors = load(Some(broken.path()), &[]).expect_err("syntax error");
    assert!(errors.to_string().starts_with("invalid TOML: "), "{errors}");
}

#[test]
fn header_variables_become_lowercase_dashed_metadata_names() {
    let config = load(
        None,
        &[
            ("WAYPOINT_HUB__HEADERS__X_API_KEY", "abc"),
            ("WAYPOINT_HUB__HEADERS__AUTHORIZATION", "Bearer t"),
        ],
    )
    .expect("loads");
    let headers: Vec<(&str, &str)> = config
        .hub
        .headers
        .iter()
        .map(|(name, value)| (name.as_str(), value.as_str()))
        .collect();
    assert_eq!(
        headers,
        vec![("authorization", "Bearer t"), ("x-api-key", "abc")]
    );

    let file = write_toml("[hub.headers]\n\"X-Api-Key\" = \"from-file\"\n");
    let config = load(Some(file.path()), &[]).expect("loads");
    assert_eq!(config.hub.headers["x-api-key"], "from-file");
}

#[test]
fn compat_variables_set_their_keys() {
    let config = load(None, &[("PORT", "9090"), ("BACKFILL_CONCURRENCY", "7")]).expect("loads");
    assert_eq!(config.health.port, 9090);
    assert_eq!(config.backfill.concurrency, 7);
    let errors = load(None, &[("PORT", "http")]).expect_err("bad port");
    assert!(errors.to_string().ends_with("(from env PORT)"), "{errors}");
}

#[test]
fn masking_hides_passwords_headers_and_the_admin_token() {
    let config = load(
        None,
        &[
            (
                "WAYPOINT_DATABASE__URL",
                "postgresql://waypoint:pg-secret@db:5432/waypoint",
            ),
            ("WAYPOINT_REDIS__URL", "redis://:redis-secret@cache:6379/1"),
            ("WAYPOINT_HUB__HEADERS__X_API_KEY", "hub-secret"),
            ("WAYPOINT_HEALTH__ADMIN_TOKEN", "admin-secret"),
        ],
    )
    .expect("loads");
    let shown = config.to_string();
    for secret in ["pg-secret", "redis-secret", "hub-secret", "admin-secret"] {
        assert!(!shown.contains(secret), "{secret} leaked:\n{shown}");
        assert!(
            !format!("{config:?}").contains(secret),
            "{secret} leaked in Debug"
        );
    }
    let masked = config.masked();
    assert_eq!(
        masked["database"]["url"].as_str(),
        Some("postgresql://waypoint:****@db:5432/waypoint")
    );
    assert_eq!(
        masked["redis"]["url"].as_str(),
        Some("redis://:****@cache:6379/1")
    );
    assert_eq!(masked["hub"]["headers"]["x-api-key"].as_str(), Some("****"));
    assert_eq!(masked["health"]["admin_token"].as_str(), Some("****"));
    // The real values stay usable.
    assert_eq!(config.health.admin_token.as_deref(), Some("admin-secret"));
}

fn config_check(config_path: Option<&Path>, env: &[(&str, &str)]) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_waypoint"));
    command.env_clear();
    if let Some(path) = config_path {
        command.arg("--config").arg(path);
    }
    command.args(["config", "check"]).envs(env.iter().copied());
    command.output().expect("run waypoint")
}

#[test]
fn config_check_reports_every_problem_and_fails() {
    let file = write_toml("[stream]\nblock_ms = 0\nbogus = true\n");
    let output = config_check(
        Some(file.path()),
        &[
            ("WAYPOINT_HUB__REQUEST_TIMEOUT_SECONDS", "abc"),
            ("PORT", "0"),
        ],
    );
    assert!(!output.status.success());
    assert_eq!(output.status.code(), Some(78));
    assert!(
        output.stdout.is_empty(),
        "nothing on stdout for a bad config"
    );
    let stderr = String::from_utf8_lossy(&output.stderr);
    let path = file.path().display();
    for expected in [
        "invalid configuration, 4 problems:".to_owned(),
        format!("stream.bogus: unknown key (from file {path})"),
        "hub.request_timeout_seconds: invalid type: found string \"abc\", expected u64 (from env WAYPOINT_HUB__REQUEST_TIMEOUT_SECONDS)".to_owned(),
        format!("stream.block_ms: invalid value 0: must be at least 1 (from file {path})"),
        "health.port: invalid value 0: a port must be 1-65535 (from env PORT)".to_owned(),
    ] {
        assert!(stderr.contains(&expected), "missing {expected:?} in:\n{stderr}");
    }
}

#[test]
fn config_check_prints_the_masked_configuration() {
    let file = write_toml("[database]\nurl = \"postgresql://u:pg-secret@db/w\"\n");
    let output = config_check(
        Some(file.path()),
        &[
            ("WAYPOINT_HEALTH__ADMIN_TOKEN", "admin-secret"),
            ("WAYPOINT_REST__PORT", "9999"),
        ],
    );
    assert!(output.status.success(), "{output:?}");
    let stdout = String::from_utf8(output.stdout).expect("utf-8");
    assert!(
        !stdout.contains("pg-secret") && !stdout.contains("admin-secret"),
        "{stdout}"
    );
    let printed: toml::Value = toml::from_str(&stdout).expect("output is TOML");
    assert_eq!(
        printed["database"]["url"].as_str(),
        Some("postgresql://u:****@db/w")
    );
    assert_eq!(printed["rest"]["port"].as_integer(), Some(9999));
    assert_eq!(printed["health"]["admin_token"].as_str(), Some("****"));
}

#[test]
fn bad_arguments_exit_2() {
    let output = Command::new(env!("CARGO_BIN_EXE_waypoint"))
        .env_clear()
        .args(["mcp", "serve", "--bind", "nowhere"])
        .output()
        .expect("run waypoint");
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("invalid value 'nowhere'"));

    let output = Command::new(env!("CARGO_BIN_EXE_waypoint"))
        .env_clear()
        .args(["start", "sideways"])
        .output()
        .expect("run waypoint");
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("invalid value 'sideways'"));
}
