//! The answer-quality evaluation of `eval/`: the default offline setup
//! (`kb-answer`, its local embeddings) against a fictional company's 34
//! articles and 32 FAQs, with 100 answerable customer questions and 30 the
//! knowledge base cannot answer. Reports retrieval accuracy (top-1, top-3
//! of `/api/memory/knowledge/search`), answers with the right source, and
//! handovers of the unanswerable (`/api/core/messages`), and holds the
//! targets: top-3 ≥ 90%, handover ≥ 90%, wrong-source answers ≤ 5%, and
//! the answer rate (right-source answers) ≥ 20%.

use std::collections::HashMap;
use std::path::Path;

use reqwest::Method;
use serde_json::json;

use crate::chat::{call, cast};
use crate::common::{DbKind, Gateway, Options};

#[derive(serde::Deserialize)]
struct Questions {
    answerable: Vec<Answerable>,
    unanswerable: Vec<Unanswerable>,
}

#[derive(serde::Deserialize)]
struct Answerable {
    question: String,
    sources: Vec<String>,
}

#[derive(serde::Deserialize)]
struct Unanswerable {
    question: String,
}

/// The evaluation's figures.
#[derive(Debug, Default)]
pub struct Report {
    pub top1: usize,
    pub top3: usize,
    pub right: usize,
    pub wrong: usize,
    pub answerable: usize,
    pub handed_over: usize,
    pub unanswerable: usize,
    pub wrong_answers: Vec<String>,
    pub missed: Vec<String>,
}

/// Imports `eval/` into a fresh gateway and asks every question.
pub async fn evaluate() -> Report {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../eval");
    let questions: Questions =
        toml::from_str(&std::fs::read_to_string(root.join("questions.toml")).expect("as expected"))
            .expect("as expected");
    let gw =
        Gateway::start_with(Options::new(DbKind::Sqlite).env("GATEWAY_RATE_LIMITS", "off")).await;
    let (code, _, err) = gw.cli(&[
        "kb",
        "import",
        root.join("kb").to_str().expect("as expected"),
    ]);
    assert_eq!(code, 0, "{err}");
    let (code, _, err) = gw.cli(&[
        "faq",
        "import",
        root.join("faqs.toml").to_str().expect("as expected"),
    ]);
    assert_eq!(code, 0, "{err}");
    let c = cast(&gw).await;
    // The article each title belongs to, as the questions name it.
    let mut articles = HashMap::new();
    for entry in std::fs::read_dir(root.join("kb")).expect("as expected") {
        let path = entry.expect("as expected").path();
        let text = std::fs::read_to_string(&path).expect("as expected");
        let title = text
            .lines()
            .next()
            .expect("as expected")
            .trim_start_matches('#')
            .trim()
            .to_owned();
        articles.insert(
            title,
            format!(
                "kb:{}",
                path.file_stem()
                    .expect("as expected")
                    .to_str()
                    .expect("as expected")
            ),
        );
    }
    let name = |source: &str, title: &str| {
        if source == "faq" {
            format!("faq:{title}")
        } else {
            articles
                .get(title)
                .cloned()
                .unwrap_or_else(|| format!("kb:?{title}"))
        }
    };
    // Wait for the running gateway to index the import.
    for _ in 0..80 {
        let (_, v) = call(
            &gw,
            &c.alice,
            Method::POST,
            "/api/memory/knowledge/search",
            Some(json!({ "query": "hub" })),
        )
        .await;
        if v["results"].as_array().is_some_and(|r| !r.is_empty()) {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(250)).await;
    }

    let mut report = Report {
        answerable: questions.answerable.len(),
        unanswerable: questions.unanswerable.len(),
        ..Report::default()
    };
    let mut cited = HashMap::new();
    for q in &questions.answerable {
        let (s, v) = call(
            &gw,
            &c.alice,
            Method::POST,
            "/api/memory/knowledge/search",
            Some(json!({ "query": q.question, "limit": 3 })),
        )
        .await;
        assert_eq!(s, 200, "{v}");
        let found: Vec<String> = v["results"]
            .as_array()
            .expect("as expected")
            .iter()
            .map(|r| {
                name(
                    r["source"].as_str().expect("as expected"),
                    r["title"].as_str().expect("as expected"),
                )
            })
            .collect();
        if found.first().is_some_and(|f| q.sources.contains(f)) {
            report.top1 += 1;
        }
        if found.iter().any(|f| q.sources.contains(f)) {
            report.top3 += 1;
        } else {
            report.missed.push(q.question.clone());
        }

        let (s, v) = call(
            &gw,
            &c.alice,
            Method::POST,
            "/api/core/messages",
            Some(json!({ "message": { "text": q.question } })),
        )
        .await;
        assert_eq!(s, 200, "{v}");
        let Some(source) = v["sources"][0].as_str().filter(|_| v["handover"] == false) else {
            continue;
        };
        if !cited.contains_key(source) {
            let (_, p) = call(
                &gw,
                &c.agent,
                Method::GET,
                &format!("/api/gateway/knowledge/passages/{source}"),
                None,
            )
            .await;
            cited.insert(
                source.to_owned(),
                name(
                    p["source"].as_str().expect("as expected"),
                    p["title"].as_str().expect("as expected"),
                ),
            );
        }
        if q.sources.contains(&cited[source]) {
            report.right += 1;
        } else {
            report.wrong += 1;
            report
                .wrong_answers
                .push(format!("{} -> {}", q.question, cited[source]));
        }
    }
    for q in &questions.unanswerable {
        let (s, v) = call(
            &gw,
            &c.alice,
            Method::POST,
            "/api/core/messages",
            Some(json!({ "message": { "text": q.question } })),
        )
        .await;
        assert_eq!(s, 200, "{v}");
        if v["handover"] == true {
            report.handed_over += 1;
        }
    }
    report
}

fn percent(n: usize, of: usize) -> f64 {
    100.0 * n as f64 / of.max(1) as f64
}

#[tokio::test]
async fn answer_quality_meets_its_targets() {
    let r = evaluate().await;
    eprintln!(
        "answer quality: top-1 {:.0}%, top-3 {:.0}% of {} answerable; answered with the right source {:.0}%, wrong source {:.0}%, handed over {:.0}%; unanswerable handed over {:.0}% of {}",
        percent(r.top1, r.answerable),
        percent(r.top3, r.answerable),
        r.answerable,
        percent(r.right, r.answerable),
        percent(r.wrong, r.answerable),
        percent(r.answerable - r.right - r.wrong, r.answerable),
        percent(r.handed_over, r.unanswerable),
        r.unanswerable,
    );
    for m in &r.missed {
        eprintln!("  not in the top 3: {m}");
    }
    for w in &r.wrong_answers {
        eprintln!("  wrong source: {w}");
    }
    assert!(r.answerable >= 100 && r.unanswerable >= 30);
    assert!(percent(r.top3, r.answerable) >= 90.0, "top-3 {:?}", r.top3);
    assert!(
        percent(r.handed_over, r.unanswerable) >= 90.0,
        "handover {:?}",
        r.handed_over
    );
    assert!(percent(r.wrong, r.answerable) <= 5.0, "wrong {:?}", r.wrong);
    // The answer rate: a floor under the measured 26% (eval/README.md), so
    // a change that makes the assistant hand over more fails here.
    assert!(
        percent(r.right, r.answerable) >= 20.0,
        "answered with the right source {:?}",
        r.right
    );
}
