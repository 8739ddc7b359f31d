//! Secrets need not be typed on the command line, where every user of the machine can read them (`ps`, `/proc`):
//! `billd sandbox` takes its imp_secret from `BILLD_SANDBOX_IMP_SECRET`, `--imp-secret-file` or `--sandbox-config`
//! (and does not print it), `customers register` its channel key from `BILLD_CHANNEL_KEY` or `--channel-key-file`
//! (see tests/echo.rs), and `--help` says why.

use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Command, Stdio};

const SECRET: &str = "argv-free-sandbox-secret-Kp";

fn billd() -> Command {
    let mut c = Command::new(assert_cmd::cargo::cargo_bin("billd"));
    c.env_remove("BILLD_SANDBOX_IMP_SECRET").env_remove("BILLD_CHANNEL_KEY").env_remove("BILLD_CONFIG");
    c
}

/// `POST /users/getToken` with these credentials: the envelope's code.
fn get_token(addr: &str, secret: &str) -> String {
    let body = format!(r#"{{"imp_key": "imp_sandbox_key", "imp_secret": "{secret}"}}"#);
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    write!(
        s,
        "POST /users/getToken HTTP/1.0\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out
}

/// Starts `billd sandbox` with `setup` applied, checks that only `SECRET` is accepted and that its output does not
/// show it.
fn sandbox_accepts_only(setup: impl FnOnce(&mut Command)) {
    let mut c = billd();
    c.args(["sandbox", "--listen", "127.0.0.1:0"]);
    setup(&mut c);
    let mut child = c.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut banner = String::new();
    let addr = loop {
        let mut line = String::new();
        assert!(out.read_line(&mut line).unwrap() > 0, "the sandbox stopped: {banner}");
        banner += &line;
        if let Some(a) = line.split("API at http://").nth(1) {
            break a.trim().to_string();
        }
    };
    for _ in 0..3 {
        let mut line = String::new();
        out.read_line(&mut line).unwrap();
        banner += &line;
    }
    let ok = get_token(&addr, SECRET);
    let wrong = get_token(&addr, "imp_sandbox_secret");
    let _ = child.kill();
    let _ = child.wait();
    // Everything it printed, on either stream, over its whole life.
    out.read_to_string(&mut banner).unwrap();
    child.stderr.take().unwrap().read_to_string(&mut banner).unwrap();
    assert!(ok.contains("\"code\":0"), "the secret was not taken: {ok}");
    assert!(wrong.starts_with("HTTP/1.0 401") || wrong.starts_with("HTTP/1.1 401"), "the default still works: {wrong}");
    assert!(!banner.contains(SECRET), "the sandbox printed the secret: {banner}");
}

#[test]
fn the_sandbox_takes_its_secret_from_the_environment() {
    sandbox_accepts_only(|c| {
        c.env("BILLD_SANDBOX_IMP_SECRET", SECRET);
    });
}

#[test]
fn the_sandbox_takes_its_secret_from_a_file() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("imp_secret");
    std::fs::write(&file, format!("{SECRET}\n")).unwrap();
    sandbox_accepts_only(|c| {
        c.arg("--imp-secret-file").arg(&file);
    });
}

/// Issue 22, point 13: `--sandbox-config FILE` printed the file's imp_secret in the banner.
#[test]
fn the_sandbox_does_not_print_the_secret_of_its_config_file() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("sandbox.toml");
    std::fs::write(&file, format!("imp_secret = \"{SECRET}\"\n")).unwrap();
    sandbox_accepts_only(|c| {
        c.arg("--sandbox-config").arg(&file);
    });
    // The same secret given twice (file and environment) is not shown either.
    sandbox_accepts_only(|c| {
        c.arg("--sandbox-config").arg(&file).env("BILLD_SANDBOX_IMP_SECRET", SECRET);
    });
}

#[test]
fn help_says_argv_is_visible_to_every_user() {
    for args in [&["sandbox", "--help"][..], &["customers", "register", "--help"][..]] {
        let out = billd().args(args).output().unwrap();
        let help = String::from_utf8_lossy(&out.stdout);
        assert!(help.contains("visible to every user"), "{args:?}: {help}");
        assert!(help.contains("BILLD_SANDBOX_IMP_SECRET") || help.contains("BILLD_CHANNEL_KEY"), "{args:?}: {help}");
        assert!(help.contains("-file"), "{args:?}: {help}");
    }
}
