//! `kill -9` under mixed load, then a restart on the same data: every
//! write the gateway acknowledged (chat messages, tickets, knowledge
//! documents) is there exactly once, on SQLite and PostgreSQL.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Value, json};

use crate::common::{Gateway, Options, databases};

/// What one writer saw acknowledged.
type Acked = Arc<Mutex<Vec<String>>>;

/// Posts with `send` until the gateway goes away, recording the names it
/// acknowledged with a 2xx.
fn writer<F, Fut>(name: &'static str, send: F) -> (Acked, tokio::task::JoinHandle<()>)
where
    F: Fn(String) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = Result<reqwest::Response, reqwest::Error>> + Send,
{
    let acked: Acked = Arc::default();
    let record = acked.clone();
    let task = tokio::spawn(async move {
        for i in 0.. {
            let label = format!("{name}-{i}");
            match send(label.clone()).await {
                Ok(r) if r.status().is_success() => {
                    record.lock().expect("lock").push(label);
                }
                Ok(_) => {}
                Err(_) => return,
            }
        }
    });
    (acked, task)
}

/// How many times each label occurs in `texts`.
fn counts(texts: impl IntoIterator<Item = String>) -> HashMap<String, usize> {
    let mut seen = HashMap::new();
    for t in texts {
        *seen.entry(t).or_insert(0) += 1;
    }
    seen
}

#[tokio::test]
async fn kill_9_under_mixed_load_loses_no_acknowledged_write() {
    for kind in databases() {
        let options = Options::new(kind).env("GATEWAY_RATE_LIMITS", "off");
        let gw = Gateway::start_with(Options::new(kind).env("GATEWAY_RATE_LIMITS", "off")).await;
        let customer = gw.register_and_login("crash-customer").await;
        let (code, key, err) = gw.cli(&["apikey", "create", "--name", "crash"]);
        assert_eq!(code, 0, "{err}");
        let key = key.trim().to_owned();
        let session: Value = gw
            .http
            .post(gw.url("/api/chat/sessions"))
            .bearer_auth(&customer)
            .json(&json!({}))
            .send()
            .await
            .expect("session")
            .json()
            .await
            .expect("json");
        let session = session["id"].as_str().expect("id").to_owned();

        let http = reqwest::Client::new();
        let (messages, m_task) = {
            let (http, url, token, session) = (
                http.clone(),
                gw.url("/api/chat/messages"),
                customer.clone(),
                session.clone(),
            );
            writer("message", move |label| {
                http.post(&url)
                    .bearer_auth(&token)
                    .json(&json!({ "sessionId": session, "content": label }))
                    .send()
            })
        };
        let (tickets, t_task) = {
            let (http, url, token) = (http.clone(), gw.url("/v1/tickets"), customer.clone());
            writer("ticket", move |label| {
                http.post(&url)
                    .bearer_auth(&token)
                    .json(&json!({ "title": label }))
                    .send()
            })
        };
        let (documents, d_task) = {
            let (http, url, key) = (
                http.clone(),
                gw.url("/api/gateway/knowledge/documents"),
                key.clone(),
            );
            writer("document", move |label| {
                http.post(&url)
                    .header("X-API-Key", &key)
                    .json(&json!({ "title": label, "body": format!("What {label} says about returns.") }))
                    .send()
            })
        };
        tokio::time::sleep(Duration::from_millis(2500)).await;
        let (dir, db) = gw.crash();
        for task in [m_task, t_task, d_task] {
            let _ = tokio::time::timeout(Duration::from_secs(10), task).await;
        }
        let acked = |a: &Acked| a.lock().expect("lock").clone();
        let (messages, tickets, documents) = (acked(&messages), acked(&tickets), acked(&documents));
        assert!(
            !messages.is_empty() && !tickets.is_empty() && !documents.is_empty(),
            "{kind:?}: the load did not run ({} {} {})",
            messages.len(),
            tickets.len(),
            documents.len()
        );

        let gw = Gateway::restart(dir, db, &options);
        let get = |path: String, auth: (&'static str, String)| {
            let req = gw.http.get(gw.url(&path)).header(auth.0, auth.1);
            async move {
                req.send()
                    .await
                    .expect("get")
                    .json::<Value>()
                    .await
                    .expect("json")
            }
        };
        let bearer = ("authorization", format!("Bearer {customer}"));
        let mut contents = Vec::new();
        let mut before = String::new();
        loop {
            let page = get(
                format!("/api/chat/sessions/{session}/messages?limit=100{before}"),
                bearer.clone(),
            )
            .await;
            let items = page["messages"].as_array().cloned().unwrap_or_default();
            contents.extend(
                items
                    .iter()
                    .filter_map(|m| m["content"].as_str().map(str::to_owned)),
            );
            match (page["hasMore"].as_bool(), items.first()) {
                (Some(true), Some(oldest)) => {
                    before = format!("&before={}", oldest["id"].as_str().expect("id"));
                }
                _ => break,
            }
        }
        let stored = counts(contents);
        for label in &messages {
            assert_eq!(stored.get(label), Some(&1), "{kind:?}: message {label}");
        }

        let mut titles = Vec::new();
        for page in 1.. {
            let p = get(format!("/v1/tickets?page={page}&limit=100"), bearer.clone()).await;
            let items = p["items"].as_array().cloned().unwrap_or_default();
            titles.extend(
                items
                    .iter()
                    .filter_map(|t| t["title"].as_str().map(str::to_owned)),
            );
            if items.len() < 100 {
                break;
            }
        }
        let stored = counts(titles);
        for label in &tickets {
            assert_eq!(stored.get(label), Some(&1), "{kind:?}: ticket {label}");
        }

        let mut titles = Vec::new();
        for page in 1.. {
            let p = get(
                format!("/api/gateway/knowledge/documents?page={page}&limit=100"),
                ("x-api-key", key.clone()),
            )
            .await;
            let items = p["items"].as_array().cloned().unwrap_or_default();
            titles.extend(
                items
                    .iter()
                    .filter_map(|d| d["title"].as_str().map(str::to_owned)),
            );
            if items.len() < 100 {
                break;
            }
        }
        let stored = counts(titles);
        for label in &documents {
            assert_eq!(stored.get(label), Some(&1), "{kind:?}: document {label}");
        }
    }
}
