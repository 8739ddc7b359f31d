//! `[webhooks]` and its secret end to end with the real binary (issue 26): the secret comes from
//! `BILLD_WEBHOOKS__SECRET`, `webhooks.secret_file` or `$CREDENTIALS_DIRECTORY/webhook_secret`, in that order, each
//! trusted as the gateway's secret is; a malformed one is refused by `billd check` naming where it came from; and
//! the secret never reaches output, logs or the database. (The broken files of `tests/bad_configs/webhooks_*` cover
//! each key's own errors.)

mod common;

use common::{MONTHLY, Setup, World, cards, sub};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const GOOD: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
const FRESH: &str = "whsec_q83Zb6QJ9kbZl9d7Wf8u0o0u1mG0Wq9pJ4fS1Fv8gJk=";

fn skeleton() -> String {
    std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/bad_configs/_good.toml")).unwrap()
}

/// A folder with a config whose `[webhooks]` section is `webhooks`, and an empty `creds` folder for the credential.
struct Case {
    dir: tempfile::TempDir,
}

impl Case {
    fn new(webhooks: &str) -> Case {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("schedules.toml"), format!("{}\n{webhooks}\n", skeleton())).unwrap();
        std::fs::create_dir(dir.path().join("creds")).unwrap();
        Case { dir }
    }

    fn config(&self) -> PathBuf {
        self.dir.path().join("schedules.toml")
    }

    /// Writes `text` to `name` in the folder (or in `creds`), mode 0600.
    fn secret_file(&self, name: &str, text: &str) -> PathBuf {
        let path = self.dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        path
    }

    /// `billd check`, the secret from the environment when `env` is given, with the credentials folder when
    /// `creds`.
    fn check(&self, env: Option<&str>, creds: bool) -> (Option<i32>, String) {
        let mut c = Command::new(assert_cmd::cargo::cargo_bin("billd"));
        c.arg("--config").arg(self.config()).arg("check");
        c.env("BILLD_GATEWAY__IMP_SECRET", "s").env_remove("BILLD_CONFIG").env_remove("BILLD_WEBHOOKS__SECRET");
        c.env_remove("CREDENTIALS_DIRECTORY");
        if let Some(v) = env {
            c.env("BILLD_WEBHOOKS__SECRET", v);
        }
        if creds {
            c.env("CREDENTIALS_DIRECTORY", self.dir.path().join("creds"));
        }
        let out = c.output().unwrap();
        (out.status.code(), text(&out))
    }
}

fn text(out: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}

const URL: &str = "[webhooks]\nurl = \"https://app.example/billd\"";

#[test]
fn a_good_secret_from_each_of_the_three_places_passes_check() {
    let c = Case::new(URL);
    let (code, out) = c.check(Some(GOOD), false);
    assert_eq!(code, Some(0), "from the environment: {out}");

    let c = Case::new(&format!("{URL}\nsecret_file = \"webhook.secret\""));
    c.secret_file("webhook.secret", &format!("{FRESH}\n"));
    let (code, out) = c.check(None, false);
    assert_eq!(code, Some(0), "from webhooks.secret_file (relative to the config, a trailing newline): {out}");

    let c = Case::new(URL);
    c.secret_file("creds/webhook_secret", FRESH);
    let (code, out) = c.check(None, true);
    assert_eq!(code, Some(0), "from the systemd credential: {out}");
    assert!(!out.contains(FRESH), "{out}");
}

#[test]
fn the_env_var_wins_over_the_file_which_wins_over_the_credential() {
    // Each place that loses holds a malformed secret: it is never read.
    let c = Case::new(&format!("{URL}\nsecret_file = \"webhook.secret\""));
    c.secret_file("webhook.secret", "not a secret");
    c.secret_file("creds/webhook_secret", "not a secret either");
    let (code, out) = c.check(Some(GOOD), true);
    assert_eq!(code, Some(0), "{out}");
    c.secret_file("webhook.secret", GOOD);
    let (code, out) = c.check(None, true);
    assert_eq!(code, Some(0), "{out}");
    c.secret_file("creds/webhook_secret", GOOD);
    std::fs::remove_file(c.dir.path().join("webhook.secret")).unwrap();
    let (code, out) = c.check(None, true);
    assert_eq!(code, Some(1), "a secret_file that is missing is not replaced by the credential: {out}");
    assert!(out.contains("webhooks.secret_file") && out.contains("webhook.secret"), "{out}");
}

#[test]
fn a_malformed_secret_is_refused_naming_where_it_came_from_but_never_shown() {
    let b64 = |n: usize| {
        use base64::Engine as _;
        base64::engine::general_purpose::STANDARD.encode((0..n).map(|i| (i * 37 + 11) as u8).collect::<Vec<_>>())
    };
    let bad: Vec<(String, &str)> = vec![
        ("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw".into(), "does not start with whsec_"),
        ("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2La_aSw".into(), "standard base64"),
        ("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSwé".into(), "standard base64"),
        (format!("whsec_{}", b64(16)), "holds 16 bytes"),
        (format!("whsec_{}", b64(65)), "holds 65 bytes"),
    ];
    for (secret, says) in &bad {
        let body = secret.trim_start_matches("whsec_");
        let never_shown = |out: &str| {
            // Not the secret, nor any 10 characters of it.
            let chars: Vec<char> = body.chars().collect();
            chars.windows(10).map(|w| w.iter().collect::<String>()).find(|w| out.contains(w.as_str()))
        };
        // From the environment.
        let c = Case::new(URL);
        let (code, out) = c.check(Some(secret), false);
        assert_eq!(code, Some(1), "{out}");
        assert!(out.contains("BILLD_WEBHOOKS__SECRET: ") && out.contains(says), "{secret}: {out}");
        assert!(out.contains(&c.config().display().to_string()), "the config file is named: {out}");
        assert_eq!(never_shown(&out), None, "{out}");
        // From webhooks.secret_file.
        let c = Case::new(&format!("{URL}\nsecret_file = \"webhook.secret\""));
        let path = c.secret_file("webhook.secret", &format!("{secret}\n"));
        let (code, out) = c.check(None, false);
        assert_eq!(code, Some(1), "{out}");
        let named = format!("webhooks.secret_file {}: ", path.display());
        assert!(out.contains(&named) && out.contains(says), "{secret}: {out}");
        assert_eq!(never_shown(&out), None, "{out}");
        // From the systemd credential.
        let c = Case::new(URL);
        let path = c.secret_file("creds/webhook_secret", secret);
        let (code, out) = c.check(None, true);
        assert_eq!(code, Some(1), "{out}");
        let named = format!("the systemd credential {} ($CREDENTIALS_DIRECTORY/webhook_secret): ", path.display());
        assert!(out.contains(&named) && out.contains(says), "{secret}: {out}");
        assert_eq!(never_shown(&out), None, "{out}");
    }
    // An empty file, and one that is not there.
    let c = Case::new(&format!("{URL}\nsecret_file = \"webhook.secret\""));
    c.secret_file("webhook.secret", "\n");
    let (code, out) = c.check(None, false);
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("webhooks.secret_file: the secret file") && out.contains("is empty"), "{out}");
    std::fs::remove_file(c.dir.path().join("webhook.secret")).unwrap();
    let (code, out) = c.check(None, false);
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("webhooks.secret_file: cannot read the secret file"), "{out}");
}

/// As the gateway's secret (`crate::trust`): a file another user could have written is refused, naming it.
#[test]
fn a_secret_file_or_credential_others_can_write_is_refused() {
    let c = Case::new(&format!("{URL}\nsecret_file = \"webhook.secret\""));
    let path = c.secret_file("webhook.secret", GOOD);
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o620)).unwrap();
    let (code, out) = c.check(None, false);
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("webhooks.secret_file: refusing the secret file") && out.contains("0620"), "{out}");
    let c = Case::new(URL);
    let path = c.secret_file("creds/webhook_secret", GOOD);
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o602)).unwrap();
    let (code, out) = c.check(None, true);
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("refusing the secret file") && out.contains("every other user"), "{out}");
    assert!(!out.contains(GOOD), "{out}");
}

#[test]
fn a_secret_without_a_url_is_refused_wherever_it_comes_from() {
    let c = Case::new("");
    let (code, out) = c.check(Some(GOOD), false);
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("BILLD_WEBHOOKS__SECRET: a webhook secret is given but webhooks.url is not set"), "{out}");
    assert!(!out.contains(GOOD), "{out}");
    c.secret_file("creds/webhook_secret", GOOD);
    let (code, out) = c.check(None, true);
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("$CREDENTIALS_DIRECTORY/webhook_secret") && out.contains("webhooks.url is not set"), "{out}");
    // A credentials folder without webhook_secret (the gateway's imp_secret only) is no webhook secret.
    std::fs::remove_file(c.dir.path().join("creds/webhook_secret")).unwrap();
    c.secret_file("creds/imp_secret", "s");
    let (code, out) = c.check(None, true);
    assert_eq!(code, Some(0), "{out}");
    // Settings without a url: webhooks are off, and that is said.
    let c = Case::new("[webhooks]\ntimeout = \"5s\"");
    let (code, out) = c.check(None, false);
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("[webhooks] has no url, so webhooks are off"), "{out}");
}

#[test]
fn the_url_is_never_shown_and_http_to_another_machine_is_warned_of() {
    let c = Case::new("[webhooks]\nurl = \"https://billd:hunter2@app.example/billd?token=tok-5ecret\"");
    let (code, out) = c.check(Some(GOOD), false);
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("webhooks.url: holds a user name or password"), "{out}");
    assert!(!out.contains("hunter2") && !out.contains("tok-5ecret"), "{out}");
    let c = Case::new("[webhooks]\nurl = \"http://app.example/billd?token=tok-5ecret\"");
    let (code, out) = c.check(Some(GOOD), false);
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("webhooks.url is http:// to another machine"), "{out}");
    assert!(!out.contains("tok-5ecret"), "{out}");
    let c = Case::new("[webhooks]\nurl = \"http://127.0.0.1:8080/billd\"");
    let (code, out) = c.check(Some(GOOD), false);
    assert_eq!(code, Some(0), "{out}");
    assert!(!out.contains("webhooks.url is http://"), "http:// on this machine is fine: {out}");
}

/// The secret, from each place, through `check` (console and JSON logs), a `tick` that charges, and the listings:
/// never in their output, never in the database or its side files.
#[test]
fn the_secret_never_reaches_output_logs_or_the_database() {
    let body = format!(
        "{MONTHLY}{}{}\n[webhooks]\nurl = \"http://127.0.0.1:9/billd\"\n",
        sub("s1", "c1", "monthly", "2025-01-01"),
        sub("s2", "c2", "monthly", "2025-01-01")
    );
    let w = World::new(Setup { body: &body, ..Default::default() });
    for c in ["c1", "c2"] {
        w.sandbox.register_customer(c, cards::APPROVE).unwrap();
    }
    let creds = w.dir.path().join("creds");
    std::fs::create_dir(&creds).unwrap();
    let key = billd::config::WebhookSecret::parse(FRESH).unwrap().key().to_vec();
    let b64 = FRESH.trim_start_matches("whsec_").trim_end_matches('=');
    let mut seen = String::new();
    let mut run = |args: &[&str], how: &str| {
        let mut cmd = w.billd();
        cmd.args(args);
        match how {
            "env" => {
                cmd.env("BILLD_WEBHOOKS__SECRET", FRESH);
            }
            _ => {
                std::fs::write(creds.join("webhook_secret"), FRESH).unwrap();
                std::fs::set_permissions(creds.join("webhook_secret"), std::fs::Permissions::from_mode(0o600)).unwrap();
                cmd.env("CREDENTIALS_DIRECTORY", &creds);
            }
        }
        let out = cmd.output().unwrap();
        assert!(out.status.success(), "{args:?}: {}", text(&out));
        seen += &text(&out);
    };
    for how in ["env", "credential"] {
        run(&["check"], how);
        run(&["--log-format", "json", "check"], how);
    }
    run(&["tick", "--as-of", "2025-01-01T10:00:00+09:00"], "env");
    run(&["--log-format", "json", "tick", "--as-of", "2025-02-01T10:00:00+09:00"], "credential");
    run(&["subscriptions", "--json"], "env");
    run(&["charges", "--json"], "env");
    run(&["subscriptions", "show", "s1", "--json"], "credential");
    assert_eq!(w.paid_by_merchant_uid().len(), 4, "the ticks charged: {seen}");
    assert!(!seen.contains(b64), "the secret was printed:\n{seen}");
    // The book and its side files, as bytes: neither the text nor the key.
    let mut files = 0;
    for e in std::fs::read_dir(w.dir.path()).unwrap() {
        let p = e.unwrap().path();
        if !p.file_name().unwrap().to_string_lossy().starts_with("billd.sqlite3") {
            continue;
        }
        files += 1;
        let bytes = std::fs::read(&p).unwrap();
        for needle in [b64.as_bytes(), &key[..]] {
            assert!(!bytes.windows(needle.len()).any(|w| w == needle), "the secret is in {}", p.display());
        }
    }
    assert!(files >= 1, "no database was written");
}

/// Issue 26 review: a secret file other users can read (mode 0644) was taken without a word. It is still taken (a
/// deployment that works keeps working), and `billd check` warns, naming the key, the file and the fix; the same
/// for the gateway's imp_secret_file. A 0600 file gets no warning.
#[test]
fn a_secret_file_others_can_read_is_warned_of() {
    let c = Case::new(&format!("{URL}\nsecret_file = \"webhook.secret\""));
    let path = c.secret_file("webhook.secret", FRESH);
    let (code, out) = c.check(None, false);
    assert!(code == Some(0) && !out.contains("secret_file"), "{out}");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
    let (code, out) = c.check(None, false);
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("warning: webhooks.secret_file") && out.contains("chmod 600"), "{out}");
    assert!(out.contains("every other user") && !out.contains(FRESH), "{out}");
}
