//! The one MQTT client stack of the crate: the bridge ([`super::MqttBridge`]) and links over
//! MQTT (`link::mqtt`) both read their broker URL with [`broker_uri`], build their connect
//! options (credentials, TLS, session) with [`connect_options`] and stay connected with
//! [`keep_connected`].
//!
//! Reconnecting is ours, not the client library's: paho's automatic reconnect re-queues the
//! first connect command with its completion context, and when that first attempt failed at the
//! socket level (broker down, TLS handshake refused) its context had already been handed back to
//! the Rust wrapper and freed, so the retry's completion freed it again (heap corruption that
//! aborted test processes now and then; see `MQTTAsyncUtils.c`, the `Calling command failure`
//! branch, and `MQTTAsync_checkTimeouts`; the vendored library clears them too,
//! `third_party/paho-mqtt-sys/PATCHES.md`). Every attempt of [`keep_connected`] is a new
//! connect with a context of its own, completed exactly once.

use std::time::Duration;

use paho_mqtt as paho;
use tokio::sync::{Notify, watch};

use super::config::TlsConfig;
use super::error::MqttError;

/// A broker URL as the client library wants it (`mqtt://` → `tcp://`, `mqtts://` and `tls://`
/// → `ssl://`), and whether it uses TLS.
pub(crate) fn broker_uri(url: &str) -> Result<(String, bool), MqttError> {
    let (scheme, rest) = url
        .split_once("://")
        .ok_or_else(|| MqttError::config(format!("broker '{url}' has no scheme")))?;
    let (scheme, tls) = match scheme.to_ascii_lowercase().as_str() {
        "tcp" | "mqtt" => ("tcp", false),
        "ssl" | "mqtts" | "tls" => ("ssl", true),
        "ws" => ("ws", false),
        "wss" => ("wss", true),
        other => {
            return Err(MqttError::config(format!(
                "broker scheme '{other}' is not supported (tcp, mqtt, ssl, mqtts, ws, wss)"
            )));
        }
    };
    if rest.is_empty() {
        return Err(MqttError::config("broker URL has no host"));
    }
    Ok((format!("{scheme}://{rest}"), tls))
}

/// How one client connects: who it is to the broker, how it checks the broker, its session.
pub(crate) struct Connect<'a> {
    /// The broker URL as configured (`mqtt://`, `mqtts://`, …).
    pub(crate) url: &'a str,
    /// User name for the broker.
    pub(crate) username: Option<&'a str>,
    /// Password for `username`.
    pub(crate) password: Option<&'a str>,
    /// CA, client certificate and key; used when `url` is TLS.
    pub(crate) tls: &'a TlsConfig,
    /// MQTT 5 clean start.
    pub(crate) clean_start: bool,
    /// How long the broker keeps the session after a disconnect.
    pub(crate) session_expiry: Duration,
    /// MQTT keep-alive interval.
    pub(crate) keep_alive: Duration,
    /// Timeout of one connection attempt.
    pub(crate) connect_timeout: Duration,
    /// The MQTT 5 Maximum Packet Size sent to the broker, if any.
    pub(crate) max_packet: Option<u32>,
    /// The last will, if any.
    pub(crate) will: Option<paho::Message>,
}

impl TlsConfig {
    /// Whether any file or the key password is set.
    pub(crate) fn is_set(&self) -> bool {
        self.ca_file.is_some()
            || self.cert_file.is_some()
            || self.key_file.is_some()
            || self.key_password.is_some()
    }

    /// Checks the combination without touching the files: a client key needs its certificate
    /// (`cert_file` may hold both), and TLS settings with a plain URL are a mistake (the
    /// password would cross the network in clear).
    pub(crate) fn validate(&self, tls_url: bool) -> Result<(), MqttError> {
        if !tls_url && (self.is_set() || self.insecure) {
            return Err(MqttError::config(
                "tls is configured but the broker URL is not TLS (use mqtts:// or ssl://)",
            ));
        }
        if self.key_file.is_some() && self.cert_file.is_none() {
            return Err(MqttError::config(
                "tls.key_file is set without tls.cert_file (the client certificate)",
            ));
        }
        Ok(())
    }
}

/// The connect options of `c`: MQTT 5, its session, credentials and, for a TLS URL, the CA
/// that must have signed the broker's certificate and the client certificate (mutual TLS).
pub(crate) fn connect_options(c: &Connect<'_>) -> Result<paho::ConnectOptions, MqttError> {
    let (_, tls) = broker_uri(c.url)?;
    c.tls.validate(tls)?;
    let mut props = paho::Properties::new();
    let expiry = u32::try_from(c.session_expiry.as_secs()).unwrap_or(u32::MAX);
    props
        .push_u32(paho::PropertyCode::SessionExpiryInterval, expiry)
        .map_err(MqttError::client)?;
    if let Some(max_packet) = c.max_packet {
        props
            .push_u32(paho::PropertyCode::MaximumPacketSize, max_packet)
            .map_err(MqttError::client)?;
    }
    let mut b = paho::ConnectOptionsBuilder::new_v5();
    b.clean_start(c.clean_start)
        .properties(props)
        .keep_alive_interval(c.keep_alive)
        .connect_timeout(c.connect_timeout);
    if let Some(will) = &c.will {
        b.will_message(will.clone());
    }
    if let Some(u) = c.username {
        b.user_name(u);
    }
    if let Some(p) = c.password {
        b.password(p);
    }
    if tls {
        let t = c.tls;
        let mut s = paho::SslOptionsBuilder::new();
        if let Some(ca) = &t.ca_file {
            s.trust_store(ca).map_err(MqttError::client)?;
        }
        if let Some(cert) = &t.cert_file {
            s.key_store(cert).map_err(MqttError::client)?;
        }
        if let Some(key) = &t.key_file {
            s.private_key(key).map_err(MqttError::client)?;
        }
        if let Some(pw) = &t.key_password {
            s.private_key_password(pw.as_str());
        }
        s.enable_server_cert_auth(!t.insecure).verify(!t.insecure);
        b.ssl_options(s.finalize());
    }
    Ok(b.finalize())
}

/// Connects `client` with `options` and connects it again whenever the connection is lost, until
/// `stop` turns true. A failed attempt is retried after `backoff.0`, doubling up to `backoff.1`;
/// a lost connection is retried at once. `lost` must be notified by the client's
/// connection-lost and disconnected callbacks. `on_attempt` sees each attempt's outcome.
///
/// Paho's own automatic reconnect must stay off on `client` (see the module's documentation).
pub async fn keep_connected(
    client: &paho::AsyncClient,
    options: paho::ConnectOptions,
    backoff: (Duration, Duration),
    lost: &Notify,
    mut stop: watch::Receiver<bool>,
    mut on_attempt: impl FnMut(Result<&paho::ServerResponse, &paho::Error>),
) {
    let first = backoff.0.max(Duration::from_millis(10));
    loop {
        let mut delay = first;
        loop {
            tokio::select! {
                r = client.connect(options.clone()) => match r {
                    Ok(rsp) => {
                        on_attempt(Ok(&rsp));
                        break;
                    }
                    Err(e) => on_attempt(Err(&e)),
                },
                _ = stop.wait_for(|s| *s) => return,
            }
            tokio::select! {
                () = tokio::time::sleep(delay) => {}
                _ = stop.wait_for(|s| *s) => return,
            }
            delay = (delay * 2).min(backoff.1.max(first));
        }
        // Connected: wait for the loss (a notification left from an earlier connection is
        // recognised by the client still being connected).
        loop {
            tokio::select! {
                () = lost.notified() => {}
                _ = stop.wait_for(|s| *s) => return,
            }
            if !client.is_connected() {
                break;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schemes() {
        assert_eq!(
            broker_uri("mqtt://h:1883").unwrap(),
            ("tcp://h:1883".into(), false)
        );
        assert_eq!(
            broker_uri("MQTTS://h:8883").unwrap(),
            ("ssl://h:8883".into(), true)
        );
        assert_eq!(broker_uri("tls://h:1").unwrap(), ("ssl://h:1".into(), true));
        assert!(broker_uri("http://h").is_err());
        assert!(broker_uri("h:1883").is_err());
        assert!(broker_uri("mqtt://").is_err());
    }

    #[test]
    fn tls_settings_are_checked() {
        let ca = TlsConfig {
            ca_file: Some("/etc/ca.crt".into()),
            ..TlsConfig::default()
        };
        ca.validate(true).unwrap();
        assert!(ca.validate(false).is_err(), "TLS files with a plain URL");
        TlsConfig::default().validate(false).unwrap();
        let key_only = TlsConfig {
            key_file: Some("/c.key".into()),
            ..ca.clone()
        };
        assert!(
            key_only.validate(true).is_err(),
            "a key without its certificate"
        );
        let pair = TlsConfig {
            cert_file: Some("/c.crt".into()),
            key_password: Some("s".into()),
            ..key_only
        };
        pair.validate(true).unwrap();
        assert!(pair.validate(false).is_err());
    }
}
