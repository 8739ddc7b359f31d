//! The commands other than `run`: one module per command group.

pub mod change;
pub mod charge_key;
pub mod charge_once;
pub mod charges;
pub mod check;
pub mod customers;
pub mod import;
pub mod one_time;
pub mod ops;
pub mod present;
pub mod refunds;
pub mod sandbox;
pub mod simulate;
pub mod status;
pub mod store;
pub mod subscriptions;
pub mod tick;
pub mod upcoming;
pub mod webhooks;

/// The one rule for free text an operator gives that billd sends or keeps (`refund --reason`, `--name` of the
/// one-time charges): refused, naming `flag`, when it shows nothing (white space and invisible characters only),
/// holds what could be a card number ([`crate::gateway::card::holds_card_number`]) or holds the configured
/// imp_secret (in any of the forms the redactor knows). The text itself is never quoted.
pub fn check_free_text(cfg: &crate::config::Config, flag: &str, text: &str) -> anyhow::Result<()> {
    if text.chars().all(|c| c.is_whitespace() || crate::text::invisible(c)) {
        anyhow::bail!("{flag} has nothing visible (white space or invisible characters only); nothing was sent");
    }
    if crate::gateway::card::holds_card_number(text) {
        anyhow::bail!(
            "{flag} holds what could be a card number (13 or more digits in a row, whatever separates them); it \
             would be sent to the gateway and kept in billd's book and logs, so it is refused; nothing was sent"
        );
    }
    if let Ok(secret) = cfg.gateway.secret.resolve() {
        let mut red = crate::gateway::redact::Redactor::default();
        red.sent_word(secret.expose());
        if red.holds_sent(text) {
            anyhow::bail!("{flag} holds the configured gateway.imp_secret; it is refused; nothing was sent");
        }
    }
    Ok(())
}

/// A refund's `--reason`: [`check_free_text`], and one the gateway gives back unchanged, since billd tells its refund
/// in a payment's cancel history by its reason, exactly. Refused: a reason the gateway-text cleaner would change (a
/// run of 6 or more digits, an invisible or control character, a %-encoded or \u-escaped sequence).
pub fn check_reason(cfg: &crate::config::Config, flag: &str, text: &str) -> anyhow::Result<()> {
    check_free_text(cfg, flag, text)?;
    if crate::gateway::redact::Redactor::default().clean_to(text, text.chars().count()) != text {
        anyhow::bail!(
            "{flag} would not come back from the gateway unchanged (billd reads gateway text through a cleaner that \
             blanks runs of 6 or more digits, drops invisible and control characters and decodes %XX and \\uXXXX \
             sequences; billd tells its refund from others by its reason, exactly): write it without those; nothing \
             was sent"
        );
    }
    Ok(())
}
