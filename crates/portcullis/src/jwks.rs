//! JWKS URLs: keys fetched when portcullis starts, refreshed in the
//! background, and refetched early (at most once per `min_gap`) when a token
//! names a `kid` no key has, which is how a rotation shows up first.
//!
//! A failed fetch keeps the keys in force; a fetch that returns the same
//! documents changes nothing (so the verified-token cache stays warm).

use std::sync::Arc;
use std::time::Duration;

use http::{Request, StatusCode, Uri};
use http_body_util::{BodyExt, Empty, Limited};
use hyper::body::Bytes;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use portcullis_core::authn::keys::keys_from_jwks;
use portcullis_core::authn::{JwtVerifier, KeySet};
use tokio::sync::Notify;
use tokio::time::Instant;

/// The largest JWKS document accepted.
const MAX_JWKS_BYTES: usize = 1 << 20;

/// Where keys come from: the configured static keys plus the URLs.
pub struct JwksSource {
    urls: Vec<Uri>,
    static_keys: KeySet,
    client: Client<HttpsConnector<HttpConnector>, Empty<Bytes>>,
    timeout: Duration,
    last_documents: tokio::sync::Mutex<Vec<String>>,
}

impl JwksSource {
    /// A source for these URLs (validated by the loader).
    pub fn new(urls: &[String], static_keys: KeySet, timeout: Duration) -> Result<Self, String> {
        let urls = urls
            .iter()
            .map(|u| u.parse::<Uri>().map_err(|e| format!("{u}: {e}")))
            .collect::<Result<Vec<_>, _>>()?;
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_native_roots()
            .map_err(|e| format!("cannot load the system's root certificates: {e}"))?
            .https_or_http()
            .enable_http1()
            .build();
        let client = Client::builder(TokioExecutor::new()).build(https);
        Ok(JwksSource {
            urls,
            static_keys,
            client,
            timeout,
            last_documents: tokio::sync::Mutex::new(Vec::new()),
        })
    }

    /// Fetch every URL and install static + fetched keys in `verifier`.
    /// Returns whether the keys changed. On any error nothing changes.
    pub async fn refresh(&self, verifier: &JwtVerifier) -> Result<bool, String> {
        let mut documents = Vec::with_capacity(self.urls.len());
        for url in &self.urls {
            documents.push(
                self.fetch(url)
                    .await
                    .map_err(|e| format!("JWKS {url}: {e}"))?,
            );
        }
        let mut last = self.last_documents.lock().await;
        if *last == documents {
            return Ok(false);
        }
        let mut keys = self.static_keys.clone();
        for (url, doc) in self.urls.iter().zip(&documents) {
            let set = keys_from_jwks(doc).map_err(|e| format!("JWKS {url}: {e}"))?;
            keys.keys.extend(set.keys);
        }
        verifier.replace_keys(keys);
        *last = documents;
        Ok(true)
    }

    async fn fetch(&self, url: &Uri) -> Result<String, String> {
        let req = Request::get(url.clone())
            .header(http::header::ACCEPT, "application/json")
            .body(Empty::<Bytes>::new())
            .map_err(|e| e.to_string())?;
        let response = tokio::time::timeout(self.timeout, self.client.request(req))
            .await
            .map_err(|_| format!("no answer within {:?}", self.timeout))?
            .map_err(|e| format!("request failed: {e}"))?;
        if response.status() != StatusCode::OK {
            return Err(format!("answered {}", response.status()));
        }
        let body = tokio::time::timeout(
            self.timeout,
            Limited::new(response.into_body(), MAX_JWKS_BYTES).collect(),
        )
        .await
        .map_err(|_| "the body did not arrive in time".to_owned())?
        .map_err(|e| format!("reading the body failed: {e}"))?
        .to_bytes();
        String::from_utf8(body.to_vec()).map_err(|_| "the body is not UTF-8".to_owned())
    }
}

/// Keeps a verifier's JWKS keys fresh. Run by `serve`; the offline
/// commands fetch once with [`fetch_once`].
pub struct Refresher {
    source: Arc<JwksSource>,
    every: Duration,
    min_gap: Duration,
    wake: Arc<Notify>,
}

impl Refresher {
    /// Refresh every `every`, and on `wake` no sooner than `min_gap` after
    /// the previous fetch.
    pub fn new(source: Arc<JwksSource>, every: Duration, min_gap: Duration) -> Self {
        Refresher {
            source,
            every,
            min_gap,
            wake: Arc::new(Notify::new()),
        }
    }

    /// Call `notify_one` on this when a decision reports an unknown `kid`.
    pub fn wake_handle(&self) -> Arc<Notify> {
        Arc::clone(&self.wake)
    }

    /// Run until the task is dropped. Errors are reported through `report`
    /// and leave the keys in force.
    pub async fn run(self, verifier: &JwtVerifier, report: impl Fn(&str)) {
        let mut last = Instant::now();
        loop {
            self.wait(last).await;
            last = Instant::now();
            if let Err(e) = self.source.refresh(verifier).await {
                report(&e);
            }
        }
    }

    /// Until the next fetch is due: the period, or a wake-up but no sooner
    /// than `min_gap` after `last`.
    async fn wait(&self, last: Instant) {
        tokio::select! {
            () = tokio::time::sleep(self.every) => {}
            () = self.wake.notified() => {
                let since = last.elapsed();
                if since < self.min_gap {
                    tokio::time::sleep(self.min_gap - since).await;
                }
            }
        }
    }
}

/// Fetch JWKS URLs once, for the offline commands. `Ok(())` when there are none.
pub fn fetch_once(loaded: &portcullis_config::Loaded) -> Result<(), String> {
    let Some(verifier) = loaded.engine.authenticator().jwt() else {
        return Ok(());
    };
    if loaded.jwks_urls.is_empty() {
        return Ok(());
    }
    let urls: Vec<String> = loaded.jwks_urls.iter().map(|u| u.url.clone()).collect();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the runtime: {e}"))?;
    runtime.block_on(async {
        let source = JwksSource::new(&urls, loaded.static_keys.clone(), Duration::from_secs(10))?;
        source.refresh(verifier).await.map(|_| ())
    })
}

#[cfg(test)]
#[path = "../tests/support/loopback.rs"]
mod loopback;

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use portcullis_core::authn::JwtSettings;
    use portcullis_core::authn::TokenError;
    use portcullis_core::jsonwebtoken::{Algorithm, EncodingKey, Header, encode};
    use serde_json::json;

    use super::*;

    const NOW: i64 = 1_800_000_000;

    fn fixture(name: &str) -> String {
        std::fs::read_to_string(format!(
            "{}/../../testdata/keys/{name}",
            env!("CARGO_MANIFEST_DIR")
        ))
        .unwrap()
    }

    fn serve(state: Arc<Mutex<(u16, String)>>) -> String {
        format!("http://{}/jwks.json", super::loopback::serve(state))
    }

    fn token(private: &str, kid: &str) -> String {
        let key = EncodingKey::from_rsa_pem(fixture(private).as_bytes()).unwrap();
        let mut header = Header::new(Algorithm::RS256);
        header.kid = Some(kid.to_owned());
        encode(
            &header,
            &json!({"sub": "alice", "aud": "api", "exp": NOW + 600}),
            &key,
        )
        .unwrap()
    }

    fn verifier() -> JwtVerifier {
        let settings = JwtSettings {
            algorithms: vec![Algorithm::RS256],
            audiences: vec!["api".into()],
            ..JwtSettings::default()
        };
        JwtVerifier::new(settings, KeySet::default())
    }

    #[tokio::test]
    async fn keys_are_fetched_rotated_and_kept_when_a_fetch_fails() {
        let state = Arc::new(Mutex::new((200, fixture("rsa.jwks.json"))));
        let url = serve(Arc::clone(&state));
        let source = JwksSource::new(&[url], KeySet::default(), Duration::from_secs(5)).unwrap();
        let v = verifier();
        let (t1, t2) = (token("rsa.key", "rsa-1"), token("rsa2.key", "rsa-2"));
        assert_eq!(
            v.verify(&t1, NOW).unwrap_err(),
            TokenError::UnknownKeyId("rsa-1".into())
        );

        assert_eq!(source.refresh(&v).await, Ok(true));
        assert!(v.verify(&t1, NOW).is_ok());
        // The same document again changes nothing (the token cache stays warm).
        assert_eq!(source.refresh(&v).await, Ok(false));

        // Rotation: rsa-1 is removed and stops working at once; rsa-2 works.
        state.lock().unwrap().1 = fixture("rsa2.jwks.json");
        assert_eq!(source.refresh(&v).await, Ok(true));
        assert!(v.verify(&t2, NOW).is_ok());
        assert_eq!(
            v.verify(&t1, NOW).unwrap_err(),
            TokenError::UnknownKeyId("rsa-1".into())
        );

        // The IdP fails: the keys in force stay.
        *state.lock().unwrap() = (500, "oops".into());
        let err = source.refresh(&v).await.unwrap_err();
        assert!(err.contains("answered 500"), "{err}");
        assert!(v.verify(&t2, NOW).is_ok());
        *state.lock().unwrap() = (200, "{\"keys\": 7}".into());
        assert!(source.refresh(&v).await.is_err());
        assert!(v.verify(&t2, NOW).is_ok());
    }

    #[tokio::test]
    async fn an_unknown_kid_wakes_a_rate_limited_refetch() {
        let state = Arc::new(Mutex::new((200, fixture("rsa.jwks.json"))));
        let url = serve(Arc::clone(&state));
        let source =
            Arc::new(JwksSource::new(&[url], KeySet::default(), Duration::from_secs(5)).unwrap());
        let refresher = Refresher::new(
            Arc::clone(&source),
            Duration::from_secs(3600),
            Duration::from_secs(1),
        );
        let wake = refresher.wake_handle();
        let v = Arc::new(verifier());
        source.refresh(&v).await.unwrap();
        state.lock().unwrap().1 = fixture("rsa2.jwks.json");
        let v2 = Arc::clone(&v);
        let task = tokio::spawn(async move { refresher.run(&v2, |_| {}).await });
        wake.notify_one();
        // Not before the minimum gap (1 s) has passed...
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert!(v.verify(&token("rsa2.key", "rsa-2"), NOW).is_err());
        // ...and soon after it.
        for _ in 0..100 {
            tokio::time::sleep(Duration::from_millis(100)).await;
            if v.verify(&token("rsa2.key", "rsa-2"), NOW).is_ok() {
                break;
            }
        }
        assert!(v.verify(&token("rsa2.key", "rsa-2"), NOW).is_ok());
        task.abort();
    }
}
