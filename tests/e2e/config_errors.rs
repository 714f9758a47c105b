//! A bad config stops start-up with one line naming the file and the key.

use std::process::Command;

use crate::common::BIN;

fn start_with(config: &str, env: &[(&str, &str)]) -> (i32, String) {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("bad.toml");
    std::fs::write(&path, config).expect("write");
    let mut cmd = Command::new(BIN);
    cmd.arg("serve")
        .arg("--config")
        .arg(&path)
        .current_dir(dir.path());
    for key in [
        "GATEWAY_CONFIG",
        "GATEWAY_BIND",
        "GATEWAY_DATA_DIR",
        "DATABASE_URL",
        "GATEWAY_RATE_LIMITS",
    ] {
        cmd.env_remove(key);
    }
    cmd.envs(env.iter().copied());
    let out = cmd.output().expect("run");
    let stderr =
        String::from_utf8_lossy(&out.stderr).replace(&path.display().to_string(), "bad.toml");
    (out.status.code().unwrap_or(-1), stderr)
}

#[test]
fn config_errors_are_one_clear_line() {
    let cases = [
        (
            "[server]\nbnd = \"127.0.0.1:1\"\n",
            "error: bad.toml:2:1: server.bnd: unknown key, expected one of `bind`, `trusted_proxies`, `cors_origins`, `request_timeout_secs`, `shutdown_timeout_secs`, `max_body_bytes`, `header_read_timeout_secs`, `max_connections`, `max_connections_per_address`, `idle_timeout_secs`, `max_sockets_per_user`, `upload_budget_bytes`\n",
        ),
        (
            "[server]\nrequest_timeout_secs = \"soon\"\n",
            "error: bad.toml:2:24: server.request_timeout_secs: invalid type: string \"soon\", expected u64\n",
        ),
        (
            "[server]\nbind = \"everywhere\"\n",
            "error: bad.toml: server.bind: expected an address and port such as 127.0.0.1:8080, got \"everywhere\"\n",
        ),
        (
            "[rate_limits]\nenabled = \"yes\"\n",
            "error: bad.toml:2:11: rate_limits.enabled: invalid type: string \"yes\", expected a boolean\n",
        ),
    ];
    for (config, expected) in cases {
        let (code, stderr) = start_with(config, &[]);
        assert_eq!(code, 2, "{config}");
        assert_eq!(stderr, expected, "{config}");
    }

    let (code, stderr) = start_with("", &[("GATEWAY_RATE_LIMITS", "sometimes")]);
    assert_eq!(code, 2);
    assert_eq!(
        stderr,
        "error: environment: GATEWAY_RATE_LIMITS: expected `on` or `off`, got \"sometimes\"\n"
    );

    let (code, stderr) = start_with("[server\n", &[]);
    assert_eq!(code, 2);
    assert!(
        stderr.starts_with("error: bad.toml:1:") && stderr.lines().count() == 1,
        "{stderr}"
    );

    let out = Command::new(BIN)
        .args(["serve", "--config", "/no/such/gateway.toml"])
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.starts_with("error: /no/such/gateway.toml: cannot read the config file"),
        "{stderr}"
    );
    assert!(!stderr.contains("panicked"), "{stderr}");
}
