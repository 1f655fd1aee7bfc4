//! The HTTP side of alert delivery: a [`Batch`] as Alertmanager's `POST /api/v2/alerts` body,
//! sent with ureq.

use super::FiringAlert;
use super::delivery::Batch;
use base64::Engine;
use serde::Serialize;
use std::collections::BTreeMap;
use std::time::{Duration, UNIX_EPOCH};

/// Where alerts go, and what every alert carries.
pub struct AlertReceiver {
    agent: ureq::Agent,
    /// The URL without credentials.
    url: String,
    /// `Authorization` for credentials given in the URL (`http://user:pass@host/...`).
    authorization: Option<String>,
    /// The URL as logged and shown: no credentials, no query.
    pub shown: String,
    /// perfd's own base URL.
    generator: String,
    /// The `instance` label: this host's name.
    instance: String,
    /// A firing alert says it ends this long after it was sent (four resend intervals).
    lapse_ms: i64,
}

/// One alert as Alertmanager's API takes it (`postableAlert`).
#[derive(Serialize)]
struct Postable {
    labels: BTreeMap<&'static str, String>,
    annotations: BTreeMap<&'static str, String>,
    #[serde(rename = "startsAt")]
    starts_at: String,
    #[serde(rename = "endsAt")]
    ends_at: String,
    #[serde(rename = "generatorURL")]
    generator_url: String,
}

impl AlertReceiver {
    /// `url` was checked by the config (http or https, with a host).
    /// `roots`: the certificate authorities to trust instead of the public ones.
    pub fn new(
        url: &str,
        timeout: Duration,
        generator: String,
        resend: Duration,
        roots: Option<Vec<ureq::tls::Certificate<'static>>>,
    ) -> AlertReceiver {
        let (scheme, rest) = url.split_once("://").unwrap_or(("http", url));
        let (authority, path) = rest.find('/').map_or((rest, "/"), |i| (&rest[..i], &rest[i..]));
        let (userinfo, host) = authority.rsplit_once('@').map_or((None, authority), |(u, h)| (Some(u), h));
        let authorization = userinfo.map(|u| {
            let decoded = percent_encoding::percent_decode_str(u).collect::<Vec<u8>>();
            format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(decoded))
        });
        let mut config =
            ureq::Agent::config_builder().timeout_global(Some(timeout)).http_status_as_error(false);
        if let Some(roots) = roots {
            let roots = ureq::tls::RootCerts::Specific(std::sync::Arc::new(roots));
            config = config.tls_config(ureq::tls::TlsConfig::builder().root_certs(roots).build());
        }
        let agent = config.build().into();
        let path_only = path.split('?').next().unwrap_or("/");
        AlertReceiver {
            agent,
            url: format!("{scheme}://{host}{path}"),
            authorization,
            shown: format!("{scheme}://{host}{path_only}"),
            generator,
            instance: sysinfo::System::host_name().unwrap_or_else(|_| "localhost".into()),
            lapse_ms: 4 * resend.as_millis() as i64,
        }
    }

    /// POSTs the batch; any answer but 2xx is an error, with the start of its body.
    pub fn send(&self, batch: &Batch) -> Result<(), String> {
        let body = serde_json::to_vec(&self.payload(batch)).map_err(|e| e.to_string())?;
        let mut request = self.agent.post(&self.url).header("Content-Type", "application/json");
        if let Some(auth) = &self.authorization {
            request = request.header("Authorization", auth);
        }
        let mut answer = request.send(&body[..]).map_err(|e| e.to_string())?;
        let status = answer.status();
        if status.is_success() {
            return Ok(());
        }
        let text = answer.body_mut().with_config().limit(4096).read_to_string().unwrap_or_default();
        let text: String = text.chars().take(200).collect();
        Err(format!("HTTP {status}: {}", text.trim()))
    }

    fn payload(&self, batch: &Batch) -> Vec<Postable> {
        let firing = batch.firing.iter().map(|a| self.postable(a, batch.at_ms + self.lapse_ms));
        let resolved = batch.resolved.iter().map(|a| self.postable(a, batch.at_ms));
        firing.chain(resolved).collect()
    }

    fn postable(&self, a: &FiringAlert, ends_ms: i64) -> Postable {
        let level = a.level.as_str();
        let value = a.value.map_or_else(|| "no data".to_owned(), |v| v.to_string());
        let labels = BTreeMap::from([
            ("alertname", a.name.clone()),
            ("severity", level.to_owned()),
            ("threshold_id", a.threshold_id.to_string()),
            ("instance", self.instance.clone()),
            ("job", "perfd".to_owned()),
        ]);
        let annotations = BTreeMap::from([
            ("summary", format!("{} is {level}: {} = {value}", a.name, a.selector)),
            ("selector", a.selector.clone()),
            ("value", value),
        ]);
        Postable {
            labels,
            annotations,
            starts_at: rfc3339(a.since_ms),
            ends_at: rfc3339(ends_ms),
            generator_url: format!("{}/api/v1/alerts/thresholds/{}", self.generator, a.threshold_id),
        }
    }
}

fn rfc3339(ms: i64) -> String {
    humantime::format_rfc3339_millis(UNIX_EPOCH + Duration::from_millis(ms.max(0) as u64)).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sampler::alerts::Level;

    #[test]
    fn credentials_go_to_a_header_and_never_into_what_is_shown() {
        let r = AlertReceiver::new(
            "https://al%40ice:s3cret@am.example:9093/api/v2/alerts?token=x",
            Duration::from_secs(1),
            "http://127.0.0.1:8470".into(),
            Duration::from_secs(60),
            None,
        );
        assert_eq!(r.shown, "https://am.example:9093/api/v2/alerts");
        assert_eq!(r.url, "https://am.example:9093/api/v2/alerts?token=x");
        let basic = base64::engine::general_purpose::STANDARD.encode("al@ice:s3cret");
        assert_eq!(r.authorization, Some(format!("Basic {basic}")));
    }

    #[test]
    fn the_payload_is_alertmanagers() {
        let r = AlertReceiver::new(
            "http://127.0.0.1:9093",
            Duration::from_secs(1),
            "http://p".into(),
            Duration::from_secs(60),
            None,
        );
        assert_eq!((r.url.as_str(), r.authorization.as_deref()), ("http://127.0.0.1:9093/", None));
        let a = FiringAlert {
            threshold_id: 7,
            name: "disk filling".into(),
            selector: "perfd_disk_used_percent".into(),
            level: Level::Critical,
            value: Some(97.5),
            since_ms: 1_700_000_000_000,
            silenced: false,
        };
        let batch = Batch { firing: vec![a.clone()], resolved: vec![a], at_ms: 1_700_000_001_000 };
        let got = serde_json::to_value(r.payload(&batch)).unwrap();
        assert_eq!(got[0]["labels"]["alertname"], "disk filling");
        assert_eq!(got[0]["labels"]["severity"], "critical");
        assert_eq!(got[0]["labels"]["threshold_id"], "7");
        assert_eq!(got[0]["annotations"]["value"], "97.5");
        assert_eq!(got[0]["startsAt"], "2023-11-14T22:13:20.000Z");
        assert_eq!(got[0]["endsAt"], "2023-11-14T22:17:21.000Z", "four minutes after sending");
        assert_eq!(got[1]["endsAt"], "2023-11-14T22:13:21.000Z", "resolved: ends when sent");
        assert_eq!(got[0]["generatorURL"], "http://p/api/v1/alerts/thresholds/7");
    }
}
